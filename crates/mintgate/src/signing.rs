//! Signatures of the events mintgate sends, per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>): `webhook-signature: v1,<base64 HMAC-SHA256>` of
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed by the bytes of a `whsec_<base64>` secret;
//! during a rotation one signature per key, separated by spaces.
//!
//! The key never leaves this type: it has no `Debug` of its bytes and no `Serialize`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The shortest and longest key, in bytes once decoded (the specification's range).
const KEY_BYTES_MIN: usize = 24;
const KEY_BYTES_MAX: usize = 64;

/// A signing key: the decoded bytes of a `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// Reads a `whsec_<base64>` secret. The error says what is wrong, never the value.
    pub fn parse(secret: &SecretString) -> Result<Self, String> {
        let text = secret.expose_secret();
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "must start with `{SECRET_PREFIX}` followed by base64 (a Standard Webhooks secret)"
            ));
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| format!("is not `{SECRET_PREFIX}` followed by valid base64"))?;
        if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&bytes.len()) {
            return Err(format!(
                "must decode to {KEY_BYTES_MIN} to {KEY_BYTES_MAX} bytes (e.g. `{SECRET_PREFIX}$(openssl rand -base64 32)`)"
            ));
        }
        Ok(Self(bytes))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` value: one signature per key (the current one first), separated by
/// spaces.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| key.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(&SecretString::from(secret.to_owned())).unwrap()
    }

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks reference libraries' tests.
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_signs_with_both_keys_current_first() {
        let current = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let previous = key(&format!("whsec_{}", STANDARD.encode([7u8; 32])));
        let header = signature_header(&[current.clone(), previous.clone()], "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                current.sign("msg_1", 1, b"{}"),
                previous.sign("msg_1", 1, b"{}")
            ]
        );
    }

    #[test]
    fn secrets_are_refused_without_echoing_them() {
        for secret in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
        ] {
            let error = SigningKey::parse(&SecretString::from(secret.to_owned())).unwrap_err();
            assert!(!error.contains(secret), "{error}");
        }
        assert_eq!(
            format!("{:?}", key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            "SigningKey([redacted])"
        );
    }
}
