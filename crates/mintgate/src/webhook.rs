//! Webhook authentication and parsing: pure functions over the raw request, so they are tested
//! (and fuzzed by property tests) without a server.
//!
//! Authentication runs in two steps so that a forged request costs as little as possible:
//! [`Verifier::check_headers`] looks only at the headers (the shared secret, or the shape and age of
//! an HMAC signature) *before the body is read*; [`Verifier::check_body`] then verifies an HMAC over
//! the body, with one hash per configured secret whatever the number of signatures sent.
//!
//! A webhook is only a hint. Even an authentic one only brings an execution's status check
//! forward; the pipeline acts on what the API then says.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{KeyInit as _, Mac as _};
use mint_client::InstanceId;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::config::{WebhookAuth, WebhookConfig};

/// Header with the signing time (Unix seconds) of an HMAC-signed webhook.
pub const TIMESTAMP_HEADER: &str = "x-mint-timestamp";
/// Header with `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` (several, comma-separated, while
/// a secret is rotated).
pub const SIGNATURE_HEADER: &str = "x-mint-signature";
/// Signatures one [`SIGNATURE_HEADER`] may carry. More is refused before anything is hashed: a
/// sender rotating its secret needs two.
pub const SIGNATURE_ENTRIES_MAX: usize = 4;
/// Longest [`SIGNATURE_HEADER`] value that can hold [`SIGNATURE_ENTRIES_MAX`] signatures
/// (`v1=` + 64 hex digits, a comma and a space each).
const SIGNATURE_HEADER_BYTES_MAX: usize = SIGNATURE_ENTRIES_MAX * (3 + 64 + 2);
/// Longest [`TIMESTAMP_HEADER`] value (an `i64` in decimal with a sign).
const TIMESTAMP_HEADER_BYTES_MAX: usize = 20;

/// Why a webhook was refused; the text is also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    MalformedSignature,
    TooManySignatures,
    BadSignature,
    StaleTimestamp,
    MissingSecret,
    BadSecret,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::TooManySignatures => "too_many_signatures",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::MissingSecret => "missing_secret",
            Self::BadSecret => "bad_secret",
        }
    }
}

/// What the headers alone established; [`Verifier::check_body`] finishes the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Authentic (shared secret): the body needs no further check.
    Authentic,
    /// No credentials, let through because `webhook.allow_unauthenticated` is set.
    Unauthenticated,
    /// Well-formed and fresh HMAC signatures: the body decides.
    Signed {
        timestamp: String,
        signatures: Vec<[u8; 32]>,
    },
}

/// Checks webhooks against the configured scheme.
#[derive(Clone)]
pub struct Verifier {
    auth: WebhookAuth,
    /// The current secret first, then the previous one while a rotation is under way.
    secrets: Vec<SecretString>,
    secret_header: String,
    tolerance_secs: u64,
    allow_unauthenticated: bool,
}

impl Verifier {
    pub fn new(config: &WebhookConfig) -> Self {
        Self {
            auth: config.auth,
            secrets: config
                .secret
                .iter()
                .chain(config.previous_secret.iter())
                .filter(|s| !s.expose_secret().is_empty())
                .cloned()
                .collect(),
            secret_header: config.secret_header.to_ascii_lowercase(),
            tolerance_secs: config.tolerance.as_secs(),
            allow_unauthenticated: config.allow_unauthenticated,
        }
    }

    /// The header that carries the shared secret (lower case), to be marked sensitive.
    pub fn secret_header(&self) -> &str {
        &self.secret_header
    }

    /// Answers whether the webhook is authentic (`Ok(false)`: unauthenticated but allowed by
    /// configuration), or why it is refused.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Refusal> {
        let check = self.check_headers(headers, now)?;
        self.check_body(check, body)
    }

    /// The part of the check that needs no body: run before the body is read.
    pub fn check_headers(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<HeaderCheck, Refusal> {
        let outcome = if self.secrets.is_empty() {
            Err(Refusal::MissingSecret)
        } else {
            match self.auth {
                WebhookAuth::None => Err(Refusal::MissingSecret),
                WebhookAuth::Hmac => signed_headers(headers, now, self.tolerance_secs),
                WebhookAuth::SharedSecret => match headers.get(self.secret_header.as_str()) {
                    None => Err(Refusal::MissingSecret),
                    Some(given) => {
                        // Compare with every secret, each in constant time, so timing tells
                        // nothing about which one (or how much of one) matched.
                        let mut matched = subtle::Choice::from(0);
                        for secret in &self.secrets {
                            matched |= given.as_bytes().ct_eq(secret.expose_secret().as_bytes());
                        }
                        if bool::from(matched) {
                            Ok(HeaderCheck::Authentic)
                        } else {
                            Err(Refusal::BadSecret)
                        }
                    }
                },
            }
        };
        match outcome {
            // Missing credentials may be let through when explicitly allowed; wrong ones never.
            Err(Refusal::MissingSecret | Refusal::MissingSignature)
                if self.allow_unauthenticated =>
            {
                Ok(HeaderCheck::Unauthenticated)
            }
            other => other,
        }
    }

    /// Finishes a check with the body: `Ok(true)` authentic, `Ok(false)` unauthenticated but
    /// allowed. Hashes the body once per configured secret (at most two).
    pub fn check_body(&self, check: HeaderCheck, body: &[u8]) -> Result<bool, Refusal> {
        match check {
            HeaderCheck::Authentic => Ok(true),
            HeaderCheck::Unauthenticated => Ok(false),
            HeaderCheck::Signed {
                timestamp,
                signatures,
            } => {
                let mut matched = subtle::Choice::from(0);
                for secret in &self.secrets {
                    let expected = tag(secret.expose_secret().as_bytes(), &timestamp, body);
                    for given in &signatures {
                        matched |= given.ct_eq(&expected);
                    }
                }
                if bool::from(matched) {
                    Ok(true)
                } else {
                    Err(Refusal::BadSignature)
                }
            }
        }
    }
}

fn tag(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The signature of `body` signed at `timestamp` (the value of [`SIGNATURE_HEADER`]).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1={}",
        hex::encode(tag(secret, &timestamp.to_string(), body))
    )
}

/// Reads and checks the HMAC headers without touching the body: present, small, at most
/// [`SIGNATURE_ENTRIES_MAX`] well-formed `v1=` signatures, a timestamp within the tolerance.
fn signed_headers(
    headers: &HeaderMap,
    now: DateTime<Utc>,
    tolerance_secs: u64,
) -> Result<HeaderCheck, Refusal> {
    let (Some(timestamp), Some(signatures)) =
        (headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER))
    else {
        return Err(Refusal::MissingSignature);
    };
    // Count before anything else: a header of thousands of entries is refused at once.
    let entries = signatures.as_bytes().iter().filter(|b| **b == b',').count() + 1;
    if entries > SIGNATURE_ENTRIES_MAX || signatures.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(Refusal::TooManySignatures);
    }
    if timestamp.len() > TIMESTAMP_HEADER_BYTES_MAX {
        return Err(Refusal::MalformedSignature);
    }
    let timestamp_text = timestamp
        .to_str()
        .map_err(|_| Refusal::MalformedSignature)?
        .trim();
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| Refusal::MalformedSignature)?;
    // `abs_diff`: no overflow, whatever the sender wrote (i64::MIN included).
    if now.timestamp().abs_diff(timestamp) > tolerance_secs {
        return Err(Refusal::StaleTimestamp);
    }
    let signatures = signatures
        .to_str()
        .map_err(|_| Refusal::MalformedSignature)?;
    let mut parsed = Vec::with_capacity(entries);
    for candidate in signatures.split(',') {
        let Some(hex_sig) = candidate.trim().strip_prefix("v1=") else {
            // Another scheme's entry: not ours to judge.
            continue;
        };
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(hex_sig, &mut bytes).is_ok() {
            parsed.push(bytes);
        }
    }
    if parsed.is_empty() {
        return Err(Refusal::MalformedSignature);
    }
    Ok(HeaderCheck::Signed {
        timestamp: timestamp_text.to_owned(),
        signatures: parsed,
    })
}

/// What a webhook body says; only the instance id matters, the rest is a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub instance_id: InstanceId,
    pub status: Option<String>,
}

/// Parses a webhook body: a JSON object with a string `instanceId` (validated) and an optional
/// string `status`; every other field is ignored.
pub fn parse(body: &[u8]) -> Result<Hint, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "the body is not a JSON object".to_owned())?;
    let instance_id = match object.get("instanceId") {
        // mint-client's id types are the one definition of a valid id.
        Some(serde_json::Value::String(id)) => {
            InstanceId::new(id.as_str()).map_err(|e| format!("`instanceId`: {e}"))?
        }
        Some(_) => return Err("`instanceId` is not a string".to_owned()),
        None => return Err("`instanceId` is missing".to_owned()),
    };
    let status = match object.get("status") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.len() <= 64 => Some(s.clone()),
        Some(_) => return Err("`status` is not a short string".to_owned()),
    };
    Ok(Hint {
        instance_id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use std::time::Duration;

    const SECRET: &str = "a-long-enough-webhook-secret";
    const OLD_SECRET: &str = "the-previous-webhook-secret";

    fn config(auth: WebhookAuth) -> WebhookConfig {
        WebhookConfig {
            auth,
            secret: Some(SecretString::from(SECRET)),
            ..WebhookConfig::default()
        }
    }

    fn signed(secret: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        headers.insert(
            SIGNATURE_HEADER,
            sign(secret.as_bytes(), ts, body).parse().unwrap(),
        );
        headers
    }

    fn with_secret_header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-mint-webhook-secret", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_default_scheme_is_the_shared_secret_header_mint_can_send() {
        assert_eq!(WebhookConfig::default().auth, WebhookAuth::SharedSecret);
    }

    #[test]
    fn a_correctly_signed_webhook_is_authentic() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let headers = signed(SECRET, now.timestamp(), body);
        assert_eq!(verifier.verify(&headers, body, now), Ok(true));
    }

    #[test]
    fn webhook_with_bad_signature_is_rejected() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let headers = signed("another-secret-entirely!!", now.timestamp(), body);
        assert_eq!(
            verifier.verify(&headers, body, now),
            Err(Refusal::BadSignature)
        );
        let tampered = signed(SECRET, now.timestamp(), body);
        assert_eq!(
            verifier.verify(&tampered, br#"{"instanceId":"abd"}"#, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_replayed_webhook_outside_the_window_is_rejected() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let old = now.timestamp() - WebhookConfig::default().tolerance.as_secs() as i64 - 1;
        let headers = signed(SECRET, old, body);
        assert_eq!(
            verifier.verify(&headers, body, now),
            Err(Refusal::StaleTimestamp)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            let headers = signed(SECRET, ts, b"{}");
            assert_eq!(
                verifier.check_headers(&headers, now),
                Err(Refusal::StaleTimestamp),
                "{ts}"
            );
        }
    }

    #[test]
    fn a_signature_header_with_many_entries_is_refused_before_any_hashing() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let mut headers = signed(SECRET, now.timestamp(), body);
        let good = headers[SIGNATURE_HEADER].to_str().unwrap().to_owned();
        // The right signature is among them: the count alone refuses the header.
        let mut list = vec![format!("v1={}", "0".repeat(64)); 3000];
        list.push(good.clone());
        headers.insert(SIGNATURE_HEADER, list.join(",").parse().unwrap());
        assert_eq!(
            verifier.check_headers(&headers, now),
            Err(Refusal::TooManySignatures)
        );
        // A rotation's few entries pass.
        let few = format!("v1={},{good}", "0".repeat(64));
        headers.insert(SIGNATURE_HEADER, few.parse().unwrap());
        assert_eq!(verifier.verify(&headers, body, now), Ok(true));
    }

    #[test]
    fn both_secrets_are_accepted_while_a_secret_is_rotated() {
        let rotating = WebhookConfig {
            previous_secret: Some(SecretString::from(OLD_SECRET)),
            ..config(WebhookAuth::SharedSecret)
        };
        let now = Utc::now();
        let verifier = Verifier::new(&rotating);
        for secret in [SECRET, OLD_SECRET] {
            assert_eq!(
                verifier.verify(&with_secret_header(secret), b"{}", now),
                Ok(true)
            );
        }
        assert_eq!(
            verifier.verify(
                &with_secret_header("neither-of-the-two-secrets"),
                b"{}",
                now
            ),
            Err(Refusal::BadSecret)
        );
        // After the rotation, the old secret is refused.
        let after = Verifier::new(&config(WebhookAuth::SharedSecret));
        assert_eq!(
            after.verify(&with_secret_header(OLD_SECRET), b"{}", now),
            Err(Refusal::BadSecret)
        );
        // The same holds for signatures.
        let hmac = Verifier::new(&WebhookConfig {
            auth: WebhookAuth::Hmac,
            ..rotating
        });
        let body = br#"{"instanceId":"abc"}"#;
        for secret in [SECRET, OLD_SECRET] {
            let headers = signed(secret, now.timestamp(), body);
            assert_eq!(hmac.verify(&headers, body, now), Ok(true));
        }
    }

    #[test]
    fn an_unsigned_webhook_is_refused_unless_explicitly_allowed() {
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let strict = Verifier::new(&config(WebhookAuth::Hmac));
        assert_eq!(
            strict.verify(&HeaderMap::new(), body, now),
            Err(Refusal::MissingSignature)
        );
        let lenient = Verifier::new(&WebhookConfig {
            allow_unauthenticated: true,
            tolerance: Duration::from_secs(1),
            ..config(WebhookAuth::Hmac)
        });
        assert_eq!(lenient.verify(&HeaderMap::new(), body, now), Ok(false));
    }

    #[test]
    fn the_shared_secret_header_must_match_exactly() {
        let verifier = Verifier::new(&config(WebhookAuth::SharedSecret));
        let now = Utc::now();
        assert_eq!(
            verifier.check_headers(&with_secret_header(SECRET), now),
            Ok(HeaderCheck::Authentic)
        );
        for wrong in [
            "a-long-enough-webhook-secret ",
            "a-long-enough-webhook-secreT",
            "a-long-enough-webhook-secre",
        ] {
            assert_eq!(
                verifier.verify(&with_secret_header(wrong), b"{}", now),
                Err(Refusal::BadSecret)
            );
        }
    }

    #[test]
    fn bodies_are_validated_before_use() {
        assert!(parse(b"not json").is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(br#"{"status":"Finished"}"#).is_err());
        assert!(parse(br#"{"instanceId":42}"#).is_err());
        assert!(parse(br#"{"instanceId":"../../etc/passwd"}"#).is_err());
        assert_eq!(
            parse(br#"{"instanceId":"abc-1","status":"Finished","extra":[1]}"#).unwrap(),
            Hint {
                instance_id: InstanceId::new("abc-1").unwrap(),
                status: Some("Finished".into())
            }
        );
    }

    /// Header values as an attacker may send them: any bytes a header may hold (non-UTF-8 too),
    /// long lists of signature-like entries, numbers at the edges of `i64`.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(
                any::<u8>().prop_filter("a header value byte", |b| *b == b'\t'
                    || (*b >= 0x20 && *b != 0x7f)),
                0..300
            ),
            (1usize..5000, any::<bool>()).prop_map(|(n, hexes)| {
                let entry = if hexes {
                    format!("v1={}", "ab".repeat(32))
                } else {
                    "v1=zz".to_owned()
                };
                vec![entry; n].join(",").into_bytes()
            }),
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            Just(i64::MIN.to_string().into_bytes()),
            Just(b"\xff\xfe\x80 v1=".to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn verification_never_panics_and_never_accepts_what_it_did_not_sign(
            timestamp in header_value(),
            signature in header_value(),
            secret_header in header_value(),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let now = Utc::now();
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (TIMESTAMP_HEADER, &timestamp),
                (SIGNATURE_HEADER, &signature),
                ("x-mint-webhook-secret", &secret_header),
            ] {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    headers.insert(name, value);
                }
            }
            for auth in [WebhookAuth::Hmac, WebhookAuth::SharedSecret] {
                let verifier = Verifier::new(&config(auth));
                let outcome = verifier.verify(&headers, &body, now);
                prop_assert_ne!(outcome, Ok(true));
                prop_assert_ne!(outcome, Ok(false));
            }
        }

        #[test]
        fn a_signature_list_is_refused_or_checked_never_hashed_per_entry(n in 0usize..10_000) {
            let now = Utc::now();
            let body = br#"{"instanceId":"abc"}"#;
            let mut headers = signed(SECRET, now.timestamp(), body);
            let list = vec![format!("v1={}", "cd".repeat(32)); n.max(1)].join(",");
            headers.insert(SIGNATURE_HEADER, list.parse().unwrap());
            let verifier = Verifier::new(&config(WebhookAuth::Hmac));
            let check = verifier.check_headers(&headers, now);
            if n.max(1) > SIGNATURE_ENTRIES_MAX {
                prop_assert_eq!(check, Err(Refusal::TooManySignatures));
            } else {
                let signed_ok = matches!(check, Ok(HeaderCheck::Signed { .. }));
                prop_assert!(signed_ok, "a few entries must pass to the body check");
            }
        }

        #[test]
        fn a_signed_webhook_verifies_at_any_time_within_the_tolerance(
            skew in -300i64..=300,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let now = Utc::now();
            let headers = signed(SECRET, now.timestamp() + skew, &body);
            let verifier = Verifier::new(&config(WebhookAuth::Hmac));
            prop_assert_eq!(verifier.verify(&headers, &body, now), Ok(true));
        }
    }
}
