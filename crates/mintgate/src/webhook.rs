//! Webhook authentication and parsing: pure functions over the raw request, so they are tested
//! (and fuzzable) without a server.
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

/// Why a webhook was refused; the text is also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    MalformedSignature,
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
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::MissingSecret => "missing_secret",
            Self::BadSecret => "bad_secret",
        }
    }
}

/// Checks webhooks against the configured scheme.
#[derive(Clone)]
pub struct Verifier {
    auth: WebhookAuth,
    secret: Option<SecretString>,
    secret_header: String,
    tolerance_secs: i64,
    allow_unauthenticated: bool,
}

impl Verifier {
    pub fn new(config: &WebhookConfig) -> Self {
        Self {
            auth: config.auth,
            secret: config.secret.clone(),
            secret_header: config.secret_header.to_ascii_lowercase(),
            tolerance_secs: i64::try_from(config.tolerance.as_secs()).unwrap_or(i64::MAX),
            allow_unauthenticated: config.allow_unauthenticated,
        }
    }

    /// Answers whether the webhook is authentic (`Ok(false)`: unauthenticated but allowed by
    /// configuration), or why it is refused.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, Refusal> {
        let secret = self.secret.as_ref().map(|s| s.expose_secret().as_bytes());
        let outcome = match (self.auth, secret) {
            (WebhookAuth::None, _) | (_, None) => Err(Refusal::MissingSecret),
            (WebhookAuth::Hmac, Some(secret)) => {
                verify_hmac(secret, headers, body, now, self.tolerance_secs)
            }
            (WebhookAuth::SharedSecret, Some(secret)) => {
                match headers.get(self.secret_header.as_str()) {
                    None => Err(Refusal::MissingSecret),
                    Some(given) if bool::from(given.as_bytes().ct_eq(secret)) => Ok(()),
                    Some(_) => Err(Refusal::BadSecret),
                }
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            // Missing credentials may be let through when explicitly allowed; wrong ones never.
            Err(Refusal::MissingSecret | Refusal::MissingSignature)
                if self.allow_unauthenticated =>
            {
                Ok(false)
            }
            Err(refusal) => Err(refusal),
        }
    }
}

/// The signature of `body` signed at `timestamp` (the value of [`SIGNATURE_HEADER`]).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify_hmac(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance_secs: i64,
) -> Result<(), Refusal> {
    let (Some(timestamp), Some(signatures)) =
        (headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER))
    else {
        return Err(Refusal::MissingSignature);
    };
    let timestamp_text = timestamp
        .to_str()
        .map_err(|_| Refusal::MalformedSignature)?;
    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| Refusal::MalformedSignature)?;
    if (now.timestamp() - timestamp).abs() > tolerance_secs {
        return Err(Refusal::StaleTimestamp);
    }
    let signatures = signatures
        .to_str()
        .map_err(|_| Refusal::MalformedSignature)?;
    let mut any_well_formed = false;
    for candidate in signatures.split(',') {
        let Some(hex_sig) = candidate.trim().strip_prefix("v1=") else {
            continue;
        };
        let Ok(bytes) = hex::decode(hex_sig) else {
            continue;
        };
        any_well_formed = true;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(timestamp_text.trim().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(if any_well_formed {
        Refusal::BadSignature
    } else {
        Refusal::MalformedSignature
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
    use std::time::Duration;

    fn config(auth: WebhookAuth) -> WebhookConfig {
        WebhookConfig {
            auth,
            secret: Some(SecretString::from("a-long-enough-webhook-secret")),
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

    #[test]
    fn a_correctly_signed_webhook_is_authentic() {
        let verifier = Verifier::new(&config(WebhookAuth::Hmac));
        let now = Utc::now();
        let body = br#"{"instanceId":"abc"}"#;
        let headers = signed("a-long-enough-webhook-secret", now.timestamp(), body);
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
        let tampered = signed("a-long-enough-webhook-secret", now.timestamp(), body);
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
        let headers = signed("a-long-enough-webhook-secret", old, body);
        assert_eq!(
            verifier.verify(&headers, body, now),
            Err(Refusal::StaleTimestamp)
        );
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
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-mint-webhook-secret",
            "a-long-enough-webhook-secret".parse().unwrap(),
        );
        assert_eq!(verifier.verify(&headers, b"{}", now), Ok(true));
        headers.insert(
            "x-mint-webhook-secret",
            "a-long-enough-webhook-secret ".parse().unwrap(),
        );
        assert_eq!(
            verifier.verify(&headers, b"{}", now),
            Err(Refusal::BadSecret)
        );
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

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&body);
        }
    }
}
