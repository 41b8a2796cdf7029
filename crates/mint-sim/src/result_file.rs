//! Result files: real, valid ZIP archives generated on the fly, deterministic from
//! (seed, instance id, size), so they are never stored and a test can compute their SHA-256.
//!
//! Layout: `report.json`, then evidence entries (`evidence/*.jpg`, `evidence/liveness-video-NN.mp4`),
//! all stored (no compression), CRC-32 precomputed, then the central directory (ZIP64 records when
//! the archive reaches 4 GiB). Evidence bytes come from one pseudo-random 1 MiB block per instance:
//! chunk `k` of an entry is that block rotated by a per-chunk offset (a multiple of 4 KiB). Serving
//! is therefore zero-copy (`Bytes::slice`), and each chunk's CRC is two precomputed CRCs combined,
//! so a 2 GiB file costs microseconds to lay out and nothing per byte but the socket write.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use crc32fast::Hasher;
use sha2::{Digest, Sha256};

use crate::model;

/// Bytes in the per-instance pseudo-random block, and the largest chunk the stream yields.
pub const CHUNK_BYTES: usize = 1 << 20;
const GRAIN_BYTES: usize = 4096;
const GRAINS: usize = CHUNK_BYTES / GRAIN_BYTES;
const ZIP32_LIMIT: u64 = 0xFFFF_0000;
/// 1 January 2025, 00:00, in MS-DOS format: every entry has this timestamp, for determinism.
const DOS_DATE: u16 = ((2025 - 1980) << 9) | (1 << 5) | 1;
const DOS_TIME: u16 = 0;

/// SplitMix64: a tiny generator whose output never changes between versions, so result files
/// and ids stay reproducible from the seed forever.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a string, mixed with the seed: the key of everything derived from an instance id.
fn instance_key(seed: u64, instance_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h ^ mix64(seed))
}

/// The per-instance block and the CRCs of its 4 KiB prefixes and suffixes.
struct Block {
    data: Bytes,
    prefix: Vec<Hasher>,
    suffix: Vec<Hasher>,
}

impl Block {
    fn new(key: u64) -> Self {
        let mut rng = SplitMix::new(key);
        let mut data = BytesMut::with_capacity(CHUNK_BYTES);
        for _ in 0..CHUNK_BYTES / 8 {
            data.put_u64_le(rng.next_u64());
        }
        let data = data.freeze();
        let grains: Vec<Hasher> = data
            .chunks(GRAIN_BYTES)
            .map(|g| {
                let mut h = Hasher::new();
                h.update(g);
                h
            })
            .collect();
        let mut prefix = Vec::with_capacity(GRAINS + 1);
        prefix.push(Hasher::new());
        for g in &grains {
            let mut h = prefix[prefix.len() - 1].clone();
            h.combine(g);
            prefix.push(h);
        }
        let mut suffix = vec![Hasher::new(); GRAINS + 1];
        for i in (0..GRAINS).rev() {
            let mut h = grains[i].clone();
            h.combine(&suffix[i + 1]);
            suffix[i] = h;
        }
        Self {
            data,
            prefix,
            suffix,
        }
    }

    /// Rotation (in bytes) of chunk `k` of the evidence entry with `salt`.
    fn rotation(salt: u64, k: u64) -> usize {
        (mix64(salt ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % GRAINS as u64) as usize * GRAIN_BYTES
    }

    /// CRC state of a whole rotated chunk.
    fn chunk_crc(&self, rotation: usize) -> Hasher {
        let grain = rotation / GRAIN_BYTES;
        let mut h = self.suffix[grain].clone();
        h.combine(&self.prefix[grain]);
        h
    }

    /// Appends to `out` the bytes `[from, to)` of a chunk rotated by `rotation` (one or two
    /// zero-copy slices).
    fn slices(&self, rotation: usize, from: usize, to: usize, out: &mut Vec<Bytes>) {
        let start = (rotation + from) % CHUNK_BYTES;
        let count = to - from;
        if start + count <= CHUNK_BYTES {
            out.push(self.data.slice(start..start + count));
        } else {
            out.push(self.data.slice(start..));
            out.push(self.data.slice(..count - (CHUNK_BYTES - start)));
        }
    }
}

#[derive(Debug, Clone)]
enum Part {
    Fixed(Bytes),
    Evidence { salt: u64, len: u64 },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Fixed(b) => b.len() as u64,
            Part::Evidence { len, .. } => *len,
        }
    }
}

/// One result file: its layout and its evidence block. Cheap to clone (shared).
#[derive(Clone)]
pub struct ResultFile {
    inner: Arc<Inner>,
}

struct Inner {
    block: Block,
    parts: Vec<Part>,
    len: u64,
}

impl std::fmt::Debug for ResultFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultFile")
            .field("len", &self.inner.len)
            .finish()
    }
}

struct Entry {
    name: String,
    data: Part,
}

impl ResultFile {
    /// Lays out the result file of `instance_id` with (about) `requested_bytes` bytes: exactly that
    /// many unless it is below the size of an archive with empty evidence, which is then the size.
    pub fn new(seed: u64, instance_id: &str, requested_bytes: u64) -> Self {
        let requested_bytes = requested_bytes.min(model::RESULT_FILE_BYTES_MAX);
        let key = instance_key(seed, instance_id);
        let block = Block::new(key);
        let zip64 = requested_bytes >= ZIP32_LIMIT;

        let video_estimate = video_share(requested_bytes);
        let video_parts = video_estimate
            .div_ceil(model::EVIDENCE_ENTRY_BYTES_MAX)
            .max(1);
        let mut names = vec![
            "evidence/document-front.jpg".to_owned(),
            "evidence/document-back.jpg".to_owned(),
            "evidence/selfie.jpg".to_owned(),
        ];
        for i in 0..video_parts {
            names.push(format!("evidence/liveness-video-{:02}.mp4", i + 1));
        }
        let report = report_json(key, instance_id, &names);

        // Everything but the evidence bytes: headers, names, the report, the directory.
        let mut overhead = 30 + "report.json".len() as u64 + report.len() as u64;
        overhead += 46 + "report.json".len() as u64 + if zip64 { 12 } else { 0 };
        for name in &names {
            overhead += 30 + name.len() as u64;
            overhead += 46 + name.len() as u64 + if zip64 { 12 } else { 0 };
        }
        overhead += 22 + if zip64 { 56 + 20 } else { 0 };
        let evidence_total = requested_bytes.saturating_sub(overhead);

        let photo = evidence_total / 10;
        let video = evidence_total - 3 * photo;
        let mut sizes = vec![photo, photo, photo];
        let per_part = video / video_parts;
        for i in 0..video_parts {
            let extra = if i + 1 == video_parts {
                video - per_part * video_parts
            } else {
                0
            };
            sizes.push(per_part + extra);
        }

        let mut entries = vec![Entry {
            name: "report.json".to_owned(),
            data: Part::Fixed(Bytes::from(report)),
        }];
        for (i, (name, len)) in names.into_iter().zip(sizes).enumerate() {
            entries.push(Entry {
                name,
                data: Part::Evidence {
                    salt: key ^ mix64(i as u64 + 1),
                    len,
                },
            });
        }

        let mut parts: Vec<Part> = Vec::new();
        let mut central = BytesMut::new();
        let mut offset: u64 = 0;
        for entry in &entries {
            let (crc, len) = match &entry.data {
                Part::Fixed(b) => (crc32fast::hash(b), b.len() as u64),
                Part::Evidence { salt, len } => (evidence_crc(&block, *salt, *len), *len),
            };
            let local = local_header(&entry.name, crc, len);
            central_header(&mut central, &entry.name, crc, len, offset, zip64);
            offset += local.len() as u64 + len;
            push_fixed(&mut parts, local);
            match &entry.data {
                Part::Fixed(b) => push_fixed(&mut parts, b.clone()),
                evidence => parts.push(evidence.clone()),
            }
        }
        let directory_offset = offset;
        let directory_len = central.len() as u64;
        end_records(
            &mut central,
            entries.len() as u64,
            directory_len,
            directory_offset,
            zip64,
        );
        push_fixed(&mut parts, central.freeze());
        let len = parts.iter().map(Part::len).sum();
        debug_assert!(len == requested_bytes || requested_bytes < overhead);

        Self {
            inner: Arc::new(Inner { block, parts, len }),
        }
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Whether the file is empty (never: a ZIP has at least its end record).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The file's bytes from `start` on, as a lazy sequence of zero-copy pieces of at most
    /// 1 MiB each.
    pub fn pieces_from(&self, start: u64) -> Pieces {
        Pieces {
            file: self.clone(),
            part: 0,
            part_start: 0,
            position: start.min(self.inner.len),
            pending: Vec::new(),
        }
    }

    /// SHA-256 (hex) of the whole file.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for piece in self.pieces_from(0) {
            hasher.update(&piece);
        }
        hex::encode(hasher.finalize())
    }
}

/// The evidence share of a file of `bytes` bytes that goes to the video parts.
fn video_share(bytes: u64) -> u64 {
    bytes - 3 * (bytes / 10)
}

fn report_json(key: u64, instance_id: &str, names: &[String]) -> Vec<u8> {
    let mut rng = SplitMix::new(key ^ 0x5245_504F_5254);
    let score = 0.9 + (rng.next_u64() % 1000) as f64 / 10_000.0;
    let report = serde_json::json!({
        "generator": "mint-sim",
        "instanceId": instance_id,
        "outcome": "approved",
        "score": score,
        "documentNumber": format!("SIM{:09}", rng.next_u64() % 1_000_000_000),
        "evidence": names,
    });
    serde_json::to_vec_pretty(&report).unwrap_or_default()
}

fn evidence_crc(block: &Block, salt: u64, len: u64) -> u32 {
    let full = len / CHUNK_BYTES as u64;
    let mut crc = Hasher::new();
    for k in 0..full {
        crc.combine(&block.chunk_crc(Block::rotation(salt, k)));
    }
    let rest = (len % CHUNK_BYTES as u64) as usize;
    if rest > 0 {
        let mut slices = Vec::new();
        block.slices(Block::rotation(salt, full), 0, rest, &mut slices);
        for s in slices {
            crc.update(&s);
        }
    }
    crc.finalize()
}

fn push_fixed(parts: &mut Vec<Part>, bytes: Bytes) {
    if let Some(Part::Fixed(last)) = parts.last_mut() {
        let mut joined = BytesMut::with_capacity(last.len() + bytes.len());
        joined.extend_from_slice(last);
        joined.extend_from_slice(&bytes);
        *last = joined.freeze();
    } else {
        parts.push(Part::Fixed(bytes));
    }
}

fn local_header(name: &str, crc: u32, len: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(30 + name.len());
    b.put_u32_le(0x0403_4b50);
    b.put_u16_le(20); // version needed: 2.0 (sizes always fit 32 bits)
    b.put_u16_le(0x0800); // flags: UTF-8 names
    b.put_u16_le(0); // stored
    b.put_u16_le(DOS_TIME);
    b.put_u16_le(DOS_DATE);
    b.put_u32_le(crc);
    b.put_u32_le(len as u32);
    b.put_u32_le(len as u32);
    b.put_u16_le(name.len() as u16);
    b.put_u16_le(0);
    b.put_slice(name.as_bytes());
    b.freeze()
}

fn central_header(b: &mut BytesMut, name: &str, crc: u32, len: u64, offset: u64, zip64: bool) {
    let version = if zip64 { 45 } else { 20 };
    b.put_u32_le(0x0201_4b50);
    b.put_u16_le(version); // made by: MS-DOS, this version
    b.put_u16_le(version); // needed
    b.put_u16_le(0x0800);
    b.put_u16_le(0);
    b.put_u16_le(DOS_TIME);
    b.put_u16_le(DOS_DATE);
    b.put_u32_le(crc);
    b.put_u32_le(len as u32);
    b.put_u32_le(len as u32);
    b.put_u16_le(name.len() as u16);
    b.put_u16_le(if zip64 { 12 } else { 0 });
    b.put_u16_le(0); // comment
    b.put_u16_le(0); // disk
    b.put_u16_le(0); // internal attributes
    b.put_u32_le(0); // external attributes
    b.put_u32_le(if zip64 { u32::MAX } else { offset as u32 });
    b.put_slice(name.as_bytes());
    if zip64 {
        b.put_u16_le(0x0001);
        b.put_u16_le(8);
        b.put_u64_le(offset);
    }
}

fn end_records(
    b: &mut BytesMut,
    entries: u64,
    directory_len: u64,
    directory_offset: u64,
    zip64: bool,
) {
    if zip64 {
        let record_offset = directory_offset + directory_len;
        b.put_u32_le(0x0606_4b50);
        b.put_u64_le(44);
        b.put_u16_le(45);
        b.put_u16_le(45);
        b.put_u32_le(0);
        b.put_u32_le(0);
        b.put_u64_le(entries);
        b.put_u64_le(entries);
        b.put_u64_le(directory_len);
        b.put_u64_le(directory_offset);
        b.put_u32_le(0x0706_4b50);
        b.put_u32_le(0);
        b.put_u64_le(record_offset);
        b.put_u32_le(1);
    }
    b.put_u32_le(0x0605_4b50);
    b.put_u16_le(0);
    b.put_u16_le(0);
    b.put_u16_le(entries as u16);
    b.put_u16_le(entries as u16);
    b.put_u32_le(directory_len as u32);
    b.put_u32_le(if zip64 {
        u32::MAX
    } else {
        directory_offset as u32
    });
    b.put_u16_le(0);
}

/// The bytes of a result file from some position on, as zero-copy pieces (see
/// [`ResultFile::pieces_from`]).
pub struct Pieces {
    file: ResultFile,
    part: usize,
    part_start: u64,
    position: u64,
    pending: Vec<Bytes>,
}

impl Iterator for Pieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(piece) = self.pending.pop() {
            return Some(piece);
        }
        let inner = &self.file.inner;
        loop {
            let part = inner.parts.get(self.part)?;
            let part_len = part.len();
            let part_end = self.part_start + part_len;
            if self.position >= part_end {
                self.part += 1;
                self.part_start = part_end;
                continue;
            }
            let within = self.position - self.part_start;
            match part {
                Part::Fixed(bytes) => {
                    self.position = part_end;
                    return Some(bytes.slice(within as usize..));
                }
                Part::Evidence { salt, len } => {
                    let chunk = within / CHUNK_BYTES as u64;
                    let from = (within % CHUNK_BYTES as u64) as usize;
                    let to = (*len - chunk * CHUNK_BYTES as u64).min(CHUNK_BYTES as u64) as usize;
                    let mut slices = Vec::with_capacity(2);
                    inner
                        .block
                        .slices(Block::rotation(*salt, chunk), from, to, &mut slices);
                    self.position += (to - from) as u64;
                    slices.reverse();
                    self.pending = slices;
                    return self.pending.pop();
                }
            }
        }
    }
}

/// SHA-256 (hex) and length of the result file of `instance_id`, as the simulator seeded with
/// `seed` serves it for a flow whose files have `size_bytes` bytes. Nothing is stored: the file is
/// generated again (about 1 s per GB).
pub fn result_file_sha256(seed: u64, instance_id: &str, size_bytes: u64) -> (String, u64) {
    let file = ResultFile::new(seed, instance_id, size_bytes);
    (file.sha256(), file.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(file: &ResultFile, from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in file.pieces_from(from) {
            assert!(p.len() <= CHUNK_BYTES);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn length_is_exact_and_content_deterministic() {
        for size in [3_000, 1 << 20, 5 * (1 << 20) + 12_345] {
            let a = ResultFile::new(7, "inst-1", size);
            assert_eq!(a.len(), size);
            let bytes = collect(&a, 0);
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(bytes, collect(&ResultFile::new(7, "inst-1", size), 0));
            assert_ne!(bytes, collect(&ResultFile::new(8, "inst-1", size), 0));
            assert_eq!(&bytes[..4], b"PK\x03\x04");
            let from = size / 3;
            assert_eq!(collect(&a, from), bytes[from as usize..]);
        }
    }

    #[test]
    fn tiny_requests_get_the_smallest_archive() {
        let file = ResultFile::new(0, "x", 10);
        assert!(file.len() > 10);
        assert_eq!(collect(&file, 0).len() as u64, file.len());
    }

    #[test]
    fn evidence_crc_matches_the_bytes() {
        let block = Block::new(42);
        for len in [0, 17, CHUNK_BYTES as u64, 3 * CHUNK_BYTES as u64 + 4097] {
            let mut slices = Vec::new();
            let mut h = Hasher::new();
            let mut k = 0;
            let mut done = 0;
            while done < len {
                let to = (len - done).min(CHUNK_BYTES as u64) as usize;
                block.slices(Block::rotation(9, k), 0, to, &mut slices);
                done += to as u64;
                k += 1;
            }
            for s in slices {
                h.update(&s);
            }
            assert_eq!(h.finalize(), evidence_crc(&block, 9, len), "len {len}");
        }
    }

    #[test]
    fn files_past_four_gib_use_zip64_records() {
        let size = 5 * 1024 * 1024 * 1024 + 77;
        let file = ResultFile::new(1, "big", size);
        assert_eq!(file.len(), size);
        // The tail holds the ZIP64 end record, its locator and the classic end record.
        let tail_start = size - 98;
        let tail: Vec<u8> = collect(&file, tail_start);
        assert_eq!(&tail[..4], &0x0606_4b50u32.to_le_bytes());
        assert_eq!(&tail[56..60], &0x0706_4b50u32.to_le_bytes());
        assert_eq!(&tail[76..80], &0x0605_4b50u32.to_le_bytes());
    }
}
