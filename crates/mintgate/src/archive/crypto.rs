//! Client-side envelope encryption of archived results, so that a leaked bucket leaks nothing.
//!
//! Each object gets its own random 256-bit data key, wrapped (XChaCha20-Poly1305) by the master
//! key named in the header; the result is then sealed as a STREAM (Hoang, Reyhanitabar, Rogaway,
//! Vizár; RustCrypto's `aead-stream`, big-endian 32-bit counter) of 64 KiB XChaCha20-Poly1305
//! segments, the last one flagged, so truncation, reordering and splicing are all detected while
//! both sides stream in constant memory. The object is self-describing (the header carries the key
//! id and the wrapped key): it can be opened with the master key alone, without the database or the
//! manifest.
//!
//! Object layout: `MGE1 | key id length (1) | key id | wrap nonce (24) | wrapped key (48) |
//! stream nonce (19) | segments…`. The header is the associated data of every segment.

use std::collections::BTreeMap;
use std::path::Path;

use aead_stream::{DecryptorBE32, EncryptorBE32};
use anyhow::{Context as _, bail};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::TryRngCore as _;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};

use super::settings::ClientEncryption;

/// The scheme's name, as recorded in manifests.
pub const SCHEME: &str = "mge1-xchacha20poly1305-stream-64KiB";
/// Plaintext bytes per sealed segment.
pub const SEGMENT_BYTES: usize = 64 * 1024;
const TAG_BYTES: usize = 16;
const MAGIC: &[u8; 4] = b"MGE1";
const WRAP_NONCE_BYTES: usize = 24;
const WRAPPED_KEY_BYTES: usize = 32 + TAG_BYTES;
/// XChaCha20's 24-byte nonce less STREAM-BE32's 5 bytes of counter and last-segment flag.
const STREAM_NONCE_BYTES: usize = 19;

/// Why an object could not be opened: the caller tells the operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the object is encrypted with master key {0:?}, which is not configured (`archive.encryption.key_id` or `archive.encryption.previous_keys`)"
    )]
    UnknownKey(String),
    #[error(
        "master key {0:?} does not open this object: the configured key is not the one it was encrypted with (wrong `archive.encryption.key` / `key_file`)"
    )]
    WrongKey(String),
    #[error("the object is not an encrypted mintgate archive object (bad header)")]
    NotEncrypted,
    #[error("the encrypted object is damaged or truncated (segment {0} does not authenticate)")]
    Damaged(u64),
}

/// One master key.
pub struct MasterKey {
    id: String,
    key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A key from 64 hex digits or base64 of 32 bytes. `source` names where it came from; the
    /// error never shows the text.
    pub fn parse(id: &str, text: &str, source: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        let Some(bytes) = bytes.filter(|b| b.len() == 32) else {
            bail!("{source}: a master key must be 32 bytes, as 64 hex digits or base64");
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self {
            id: id.to_owned(),
            key: SecretBox::new(Box::new(key)),
        })
    }

    /// A fresh random key (tests, benchmarks, `mintgate archive keygen`-style set-up).
    pub fn generate(id: &str) -> Self {
        let mut key = [0u8; 32];
        fill_random(&mut key);
        Self {
            id: id.to_owned(),
            key: SecretBox::new(Box::new(key)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.key.expose_secret()))
    }
}

fn fill_random(buffer: &mut [u8]) {
    rand::rngs::OsRng
        .try_fill_bytes(buffer)
        .expect("the operating system's random number generator is available");
}

/// The master keys: the current one (new objects) and older ones (reading only).
#[derive(Debug, Default)]
pub struct Keyring {
    current: Option<String>,
    keys: BTreeMap<String, MasterKey>,
}

impl Keyring {
    /// From the settings: keys inline or in files. Errors name the key, never its value.
    pub fn load(settings: Option<&ClientEncryption>) -> anyhow::Result<Self> {
        let Some(settings) = settings else {
            return Ok(Self::default());
        };
        let mut ring = Self::default();
        let current = read_key(
            &settings.key_id,
            settings.key.as_ref(),
            settings.key_file.as_deref(),
            "archive.encryption",
        )?;
        ring.current = Some(settings.key_id.clone());
        ring.keys.insert(settings.key_id.clone(), current);
        for (i, old) in settings.previous_keys.iter().enumerate() {
            let key = read_key(
                &old.key_id,
                old.key.as_ref(),
                old.key_file.as_deref(),
                &format!("archive.encryption.previous_keys[{i}]"),
            )?;
            ring.keys.insert(old.key_id.clone(), key);
        }
        Ok(ring)
    }

    /// A keyring of one key (tests and benchmarks).
    pub fn single(key: MasterKey) -> Self {
        let id = key.id.clone();
        Self {
            current: Some(id.clone()),
            keys: BTreeMap::from([(id, key)]),
        }
    }

    /// The key new objects are sealed with; `None`: client-side encryption is off.
    pub fn current(&self) -> Option<&MasterKey> {
        self.current.as_ref().and_then(|id| self.keys.get(id))
    }

    fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.get(id)
    }
}

fn read_key(
    id: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
    key: &str,
) -> anyhow::Result<MasterKey> {
    match (inline, file) {
        (Some(text), _) => MasterKey::parse(id, text.expose_secret(), &format!("`{key}.key`")),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading `{key}.key_file` ({})", path.display()))?;
            MasterKey::parse(id, &text, &format!("`{key}.key_file` ({})", path.display()))
        }
        (None, None) => bail!("invalid configuration: `{key}` has neither `key` nor `key_file`"),
    }
}

/// Seals a stream of plaintext: feed it with [`Sealer::push`], end it with [`Sealer::finish`].
pub struct Sealer {
    header: Vec<u8>,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    segment: Vec<u8>,
}

impl Sealer {
    /// A new data key and header for one object.
    pub fn new(master: &MasterKey) -> Self {
        let mut data_key = [0u8; 32];
        fill_random(&mut data_key);
        let mut wrap_nonce = [0u8; WRAP_NONCE_BYTES];
        fill_random(&mut wrap_nonce);
        let mut stream_nonce = [0u8; STREAM_NONCE_BYTES];
        fill_random(&mut stream_nonce);
        let wrapped = master
            .cipher()
            .encrypt(
                &XNonce::from(wrap_nonce),
                Payload {
                    msg: &data_key,
                    aad: master.id.as_bytes(),
                },
            )
            .expect("wrapping 32 bytes cannot fail");
        debug_assert_eq!(wrapped.len(), WRAPPED_KEY_BYTES);
        let mut header = Vec::with_capacity(header_bytes(&master.id));
        header.extend_from_slice(MAGIC);
        header.push(u8::try_from(master.id.len()).expect("key ids are at most 64 bytes"));
        header.extend_from_slice(master.id.as_bytes());
        header.extend_from_slice(&wrap_nonce);
        header.extend_from_slice(&wrapped);
        header.extend_from_slice(&stream_nonce);
        let encryptor = EncryptorBE32::<XChaCha20Poly1305>::from_aead(
            XChaCha20Poly1305::new(&Key::from(data_key)),
            &stream_nonce.into(),
        );
        Self {
            header,
            encryptor: Some(encryptor),
            segment: Vec::with_capacity(SEGMENT_BYTES + TAG_BYTES),
        }
    }

    /// The object's header: write it first.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Takes plaintext; hands every completed sealed segment to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(&[u8])) {
        while !data.is_empty() {
            if self.segment.len() == SEGMENT_BYTES {
                // More data follows: this segment is not the last.
                let encryptor = self.encryptor.as_mut().expect("not finished");
                encryptor
                    .encrypt_next_in_place(&self.header, &mut self.segment)
                    .expect("a 64 KiB segment always seals");
                out(&self.segment);
                self.segment.clear();
            }
            let take = (SEGMENT_BYTES - self.segment.len()).min(data.len());
            self.segment.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    /// Seals the last segment (possibly empty) and hands it to `out`.
    pub fn finish(mut self, out: &mut dyn FnMut(&[u8])) {
        let encryptor = self.encryptor.take().expect("not finished");
        encryptor
            .encrypt_last_in_place(&self.header, &mut self.segment)
            .expect("the last segment always seals");
        out(&self.segment);
    }
}

/// The header length for a key id.
fn header_bytes(key_id: &str) -> usize {
    MAGIC.len() + 1 + key_id.len() + WRAP_NONCE_BYTES + WRAPPED_KEY_BYTES + STREAM_NONCE_BYTES
}

/// The stored size of `plain` bytes sealed with a key id of `key_id` (what `HEAD` must show).
pub fn sealed_bytes(key_id: &str, plain: u64) -> u64 {
    let segment = SEGMENT_BYTES as u64;
    let next_segments = if plain == 0 { 0 } else { (plain - 1) / segment };
    header_bytes(key_id) as u64 + plain + TAG_BYTES as u64 * (next_segments + 1)
}

/// Opens a sealed stream: feed it with [`Opener::push`], end it with [`Opener::finish`].
pub struct Opener<'k> {
    keys: &'k Keyring,
    header: Vec<u8>,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
    segments: u64,
    key_id: Option<String>,
}

impl<'k> Opener<'k> {
    pub fn new(keys: &'k Keyring) -> Self {
        Self {
            keys,
            header: Vec::new(),
            decryptor: None,
            pending: Vec::new(),
            segments: 0,
            key_id: None,
        }
    }

    /// The master key id of the object, once its header was read.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Takes sealed bytes; hands every opened plaintext segment to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), OpenError> {
        self.pending.extend_from_slice(data);
        if self.decryptor.is_none() && !self.read_header()? {
            return Ok(());
        }
        // A full segment is opened only when more bytes follow it: the last one is flagged.
        let sealed = SEGMENT_BYTES + TAG_BYTES;
        let mut start = 0;
        while self.pending.len() - start > sealed {
            let mut segment = self.pending[start..start + sealed].to_vec();
            let decryptor = self.decryptor.as_mut().expect("header read");
            decryptor
                .decrypt_next_in_place(&self.header, &mut segment)
                .map_err(|_| self.failure())?;
            self.segments += 1;
            out(&segment);
            start += sealed;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn failure(&self) -> OpenError {
        if self.segments == 0 {
            // The first segment fails only if the data key is wrong: the wrapped key opened, so
            // this is damage, not a wrong key.
            OpenError::Damaged(0)
        } else {
            OpenError::Damaged(self.segments)
        }
    }

    /// Opens the last segment; fails if the stream was cut.
    pub fn finish(mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), OpenError> {
        if self.decryptor.is_none() && !self.read_header()? {
            return Err(OpenError::NotEncrypted);
        }
        let decryptor = self.decryptor.take().expect("header read");
        let mut segment = std::mem::take(&mut self.pending);
        decryptor
            .decrypt_last_in_place(&self.header, &mut segment)
            .map_err(|_| OpenError::Damaged(self.segments))?;
        out(&segment);
        Ok(())
    }

    /// Reads the header once enough bytes arrived. Answers whether it is read.
    fn read_header(&mut self) -> Result<bool, OpenError> {
        if self.pending.len() < MAGIC.len() + 1 {
            return Ok(false);
        }
        if &self.pending[..4] != MAGIC {
            return Err(OpenError::NotEncrypted);
        }
        let id_len = usize::from(self.pending[4]);
        let total =
            MAGIC.len() + 1 + id_len + WRAP_NONCE_BYTES + WRAPPED_KEY_BYTES + STREAM_NONCE_BYTES;
        if self.pending.len() < total {
            return Ok(false);
        }
        let id = std::str::from_utf8(&self.pending[5..5 + id_len])
            .map_err(|_| OpenError::NotEncrypted)?
            .to_owned();
        let master = self
            .keys
            .get(&id)
            .ok_or_else(|| OpenError::UnknownKey(id.clone()))?;
        let mut at = 5 + id_len;
        let wrap_nonce = XNonce::try_from(&self.pending[at..at + WRAP_NONCE_BYTES])
            .map_err(|_| OpenError::NotEncrypted)?;
        at += WRAP_NONCE_BYTES;
        let data_key = master
            .cipher()
            .decrypt(
                &wrap_nonce,
                Payload {
                    msg: &self.pending[at..at + WRAPPED_KEY_BYTES],
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| OpenError::WrongKey(id.clone()))?;
        at += WRAPPED_KEY_BYTES;
        let mut stream_nonce = [0u8; STREAM_NONCE_BYTES];
        stream_nonce.copy_from_slice(&self.pending[at..at + STREAM_NONCE_BYTES]);
        let key =
            Key::try_from(data_key.as_slice()).map_err(|_| OpenError::WrongKey(id.clone()))?;
        self.decryptor = Some(DecryptorBE32::<XChaCha20Poly1305>::from_aead(
            XChaCha20Poly1305::new(&key),
            &stream_nonce.into(),
        ));
        self.header = self.pending[..total].to_vec();
        self.pending.drain(..total);
        self.key_id = Some(id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &MasterKey, plain: &[u8], chunk: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(key);
        let mut out = sealer.header().to_vec();
        for piece in plain.chunks(chunk.max(1)) {
            sealer.push(piece, &mut |c| out.extend_from_slice(c));
        }
        sealer.finish(&mut |c| out.extend_from_slice(c));
        out
    }

    fn open(keys: &Keyring, sealed: &[u8], chunk: usize) -> Result<Vec<u8>, OpenError> {
        let mut opener = Opener::new(keys);
        let mut out = Vec::new();
        for piece in sealed.chunks(chunk.max(1)) {
            opener.push(piece, &mut |p| out.extend_from_slice(p))?;
        }
        opener.finish(&mut |p| out.extend_from_slice(p))?;
        Ok(out)
    }

    #[test]
    fn sealed_data_opens_to_the_same_bytes_at_every_boundary() {
        let keys = Keyring::single(MasterKey::generate("k1"));
        let key = keys.current().unwrap();
        for len in [
            0,
            1,
            SEGMENT_BYTES - 1,
            SEGMENT_BYTES,
            SEGMENT_BYTES + 1,
            3 * SEGMENT_BYTES,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for chunk in [1000, 65536, 100_000] {
                let sealed = seal(key, &plain, chunk);
                assert_eq!(sealed.len() as u64, sealed_bytes("k1", len as u64), "{len}");
                assert_eq!(open(&keys, &sealed, 777).unwrap(), plain, "{len}/{chunk}");
            }
        }
    }

    #[test]
    fn a_wrong_key_an_unknown_key_truncation_and_a_flipped_bit_are_all_refused() {
        let keys = Keyring::single(MasterKey::generate("k1"));
        let plain = vec![42u8; 2 * SEGMENT_BYTES + 5];
        let sealed = seal(keys.current().unwrap(), &plain, 4096);

        let other = Keyring::single(MasterKey::generate("k1"));
        assert!(matches!(open(&other, &sealed, 4096), Err(OpenError::WrongKey(id)) if id == "k1"));
        let unknown = Keyring::single(MasterKey::generate("k2"));
        assert!(
            matches!(open(&unknown, &sealed, 4096), Err(OpenError::UnknownKey(id)) if id == "k1")
        );
        // Cut at a segment boundary: the last remaining segment is not flagged last.
        let header = header_bytes("k1");
        let cut = &sealed[..header + SEGMENT_BYTES + TAG_BYTES];
        assert!(matches!(open(&keys, cut, 4096), Err(OpenError::Damaged(_))));
        let mut flipped = sealed.clone();
        flipped[header + 10] ^= 1;
        assert!(matches!(
            open(&keys, &flipped, 4096),
            Err(OpenError::Damaged(0))
        ));
        assert!(matches!(
            open(&keys, b"PK\x03\x04 a plain zip", 4096),
            Err(OpenError::NotEncrypted)
        ));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_errors_hide_the_value() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        MasterKey::parse("k", hex_key, "test").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        MasterKey::parse("k", &b64, "test").unwrap();
        let error = MasterKey::parse("k", "not-a-key-but-secret", "`archive.encryption.key`")
            .unwrap_err()
            .to_string();
        assert!(error.contains("archive.encryption.key"), "{error}");
        assert!(!error.contains("not-a-key-but-secret"), "{error}");
    }
}
