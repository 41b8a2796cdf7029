//! The typed values of the configuration, and how secrets serialize.
//!
//! Each value is checked once, when the configuration is read, with an error that names what is
//! wrong and never the value itself (a URL may carry a password). Every type that holds a secret
//! serializes redacted, so the configuration's `Serialize` impl *is* its redacted view: a new
//! secret field cannot be logged by accident, because `SecretString` has no `Serialize` impl of its
//! own and the field does not compile until it names one of the redacting serializers below.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// What a redacted secret serializes as.
pub const REDACTED: &str = "[redacted]";

/// `service.log_format`: one JSON object per line (production) or plain text (people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// `service.database_url`: the store.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// `sqlite://<path>` (or `sqlite:<path>`, with `?…` options): one process owns it.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`, for several replicas. The whole URL is kept secret
    /// because it may carry the password.
    Postgres(SecretString),
}

impl DatabaseUrl {
    /// The SQLite database in the file `path`.
    pub fn sqlite_file(path: &Path) -> Self {
        Self::Sqlite(format!("sqlite://{}", path.display()))
    }

    /// Whether several replicas can share it (PostgreSQL).
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// The connection URL, password included: for the store's driver only, never for a log.
    pub fn expose_url(&self) -> &str {
        match self {
            Self::Sqlite(url) => url,
            Self::Postgres(url) => url.expose_secret(),
        }
    }

    /// The file of a SQLite database (none for PostgreSQL or an in-memory database).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let Self::Sqlite(url) = self else {
            return None;
        };
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
    }

    /// The URL with its password replaced by `redacted`.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(url) => url.clone(),
            Self::Postgres(url) => redact_url_password(url.expose_secret()),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    /// Parses a database URL; the error says what is wrong without repeating the URL.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with("sqlite:") {
            return Ok(Self::Sqlite(text.to_owned()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            if Url::parse(text).is_err() {
                return Err("is not a valid postgres:// URL".to_owned());
            }
            return Ok(Self::Postgres(SecretString::from(text)));
        }
        Err(format!(
            "must be a sqlite:// URL (one replica) or a postgres:// URL (several replicas); got {}",
            describe_scheme(text)
        ))
    }
}

/// `service.redis_url`: `redis://…` or `rediss://…` with a host. Kept secret: it may carry a password.
#[derive(Clone)]
pub struct RedisUrl(SecretString);

impl RedisUrl {
    /// The connection URL, password included: for the Redis client only, never for a log.
    pub fn expose_url(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password replaced by `redacted`.
    pub fn redacted(&self) -> String {
        redact_url_password(self.0.expose_secret())
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let ok = Url::parse(text)
            .is_ok_and(|url| matches!(url.scheme(), "redis" | "rediss") && url.has_host());
        if ok {
            Ok(Self(SecretString::from(text)))
        } else {
            Err("must be a redis://host:port URL (or rediss://)".to_owned())
        }
    }
}

/// Debug, Display, Serialize (all redacted) and Deserialize (parsed) for the URL types.
macro_rules! url_value {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name))
                    .field(&self.redacted())
                    .finish()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.redacted())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.redacted())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

url_value!(DatabaseUrl);
url_value!(RedisUrl);

/// `postgres`, `mysql`…: the scheme of what looks like a URL, and nothing of what does not (it
/// could be a password pasted into the wrong key).
fn describe_scheme(text: &str) -> String {
    match text.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme.len() <= 16
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("a {scheme:?} URL")
        }
        _ => "no URL".to_owned(),
    }
}

/// A URL with its password (if any) and any secret query parameter (`?password=`, `sslpassword=`,
/// `token=`, …) replaced by `redacted`.
pub fn redact_url_password(url: &str) -> String {
    match Url::parse(url) {
        // `scheme:anything` with no host: nothing tells a password from the rest.
        Ok(parsed) if parsed.cannot_be_a_base() && parsed.scheme() != "sqlite" => {
            format!("{}:{REDACTED}", parsed.scheme())
        }
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            if parsed.query_pairs().any(|(k, _)| is_secret_parameter(&k)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_parameter(&k) {
                            "redacted".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL we can take apart: show nothing of it.
        Err(_) => REDACTED.to_owned(),
    }
}

/// A URL with its password and every query value replaced by `redacted`: for URLs an outside
/// party gave, whose query often is the credential under any name (`code=`, `sig=`, …).
pub fn redact_url_query(url: &str) -> String {
    let shown = redact_url_password(url);
    match Url::parse(&shown) {
        Ok(mut parsed) if parsed.query().is_some() => {
            let names: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
            parsed
                .query_pairs_mut()
                .clear()
                .extend_pairs(names.iter().map(|k| (k.as_str(), "redacted")));
            parsed.to_string()
        }
        _ => shown,
    }
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|s| name.contains(s))
}

fn redact(secret: &SecretString) -> &'static str {
    if secret.expose_secret().is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// Serializers for `#[serde(serialize_with = "…")]` on secret fields.
pub mod redacted {
    use super::*;

    pub fn secret<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(redact(secret))
    }

    pub fn optional_secret<S: Serializer>(
        secret: &Option<SecretString>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        secret.as_ref().map(redact).serialize(serializer)
    }

    /// A URL, with its password (if any) redacted.
    pub fn url<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_url_password(url.as_str()))
    }

    /// A URL, with its password and every query value redacted ([`redact_url_query`]).
    pub fn url_query<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_url_query(url.as_str()))
    }

    pub fn optional_url<S: Serializer>(
        url: &Option<Url>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        url.as_ref()
            .map(|url| redact_url_password(url.as_str()))
            .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_outside_url_shows_its_query_names_but_no_value() {
        let shown = redact_url_query("https://fn.example/api/hook?code=abc123&sig=s3cr3t&x");
        assert_eq!(
            shown,
            "https://fn.example/api/hook?code=redacted&sig=redacted&x=redacted"
        );
        assert_eq!(
            redact_url_query("https://u:pw@crm.example/h"),
            "https://u:redacted@crm.example/h"
        );
        assert_eq!(
            redact_url_query("https://crm.example/h"),
            "https://crm.example/h"
        );
    }
    use super::*;

    #[test]
    fn database_urls_are_told_apart_by_their_scheme() {
        let sqlite: DatabaseUrl = "sqlite://data/mintgate.db?mode=rwc".parse().unwrap();
        assert!(!sqlite.is_postgres());
        assert_eq!(
            sqlite.sqlite_path(),
            Some(PathBuf::from("data/mintgate.db"))
        );
        let postgres: DatabaseUrl = "postgresql://app:pw@db/mintgate".parse().unwrap();
        assert!(postgres.is_postgres());
        assert_eq!(postgres.sqlite_path(), None);
        assert_eq!(postgres.expose_url(), "postgresql://app:pw@db/mintgate");
        assert_eq!(
            "sqlite::memory:"
                .parse::<DatabaseUrl>()
                .unwrap()
                .sqlite_path(),
            None
        );
    }

    #[test]
    fn a_database_password_never_shows() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/mintgate".parse().unwrap();
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("app:redacted@db"), "{shown}");
        }
    }

    #[test]
    fn a_wrong_url_is_described_without_repeating_it() {
        let error = "mysql://root:s3cret@db/x"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(error.contains("\"mysql\" URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        // A secret pasted into the wrong key is not a URL: nothing of it is shown.
        let error = "hunter2-hunter2".parse::<DatabaseUrl>().unwrap_err();
        assert!(error.ends_with("got no URL"), "{error}");
        let error = "http://:s3cret@cache".parse::<RedisUrl>().unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        assert!("redis://:pw@cache:6379".parse::<RedisUrl>().is_ok());
        assert!("rediss://cache".parse::<RedisUrl>().is_ok());
        assert!("redis://".parse::<RedisUrl>().is_err());
    }

    #[test]
    fn a_password_in_the_query_never_shows() {
        for url in [
            "postgres://db:5432/m?user=m&password=hunter2-pw&sslmode=require",
            "postgres://db/m?sslpassword=hunter2-pw",
            "postgres:u:hunter2-pw@@",
        ] {
            let redacted = redact_url_password(url);
            assert!(!redacted.contains("hunter2-pw"), "{url} -> {redacted}");
        }
        assert!(
            redact_url_password("postgres://db/m?password=x&sslmode=require")
                .contains("sslmode=require")
        );
        let url: DatabaseUrl = "postgres://db/m?password=hunter2-pw".parse().unwrap();
        assert!(!url.redacted().contains("hunter2-pw"));
    }

    #[test]
    fn a_redis_password_never_shows() {
        let url: RedisUrl = "redis://:s3cret@cache:6379".parse().unwrap();
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(url.expose_url(), "redis://:s3cret@cache:6379");
    }
}
