//! `service.api_keys`: the bearer keys of the own API and what each may do.
//!
//! A key is either a bare string, which keeps the full rights every key had before scopes existed
//! (`admin`), or a table with the scopes it is granted:
//!
//! ```toml
//! [service]
//! api_keys = [
//!   "an-operator-key-with-full-rights",
//!   { name = "onboarding-app", key = "…", scopes = ["executions:write", "executions:read"] },
//!   { name = "records", key = "…", scopes = ["results:read"] },
//! ]
//! ```
//!
//! The key itself is a secret: it serializes redacted and no error quotes it; errors name the
//! entry by its position and its `name`.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

/// What a key may do on the own API. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Scope {
    /// `POST /v1/executions`.
    #[serde(rename = "executions:write")]
    ExecutionsWrite,
    /// `GET /v1/executions`, `GET /v1/executions/{id}`, the event feed.
    #[serde(rename = "executions:read")]
    ExecutionsRead,
    /// `GET /v1/executions/{id}/result`: the archived result, personal data.
    #[serde(rename = "results:read")]
    ResultsRead,
    /// Everything, including the operator's routes (dead letters, the budget and its cap).
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::ExecutionsWrite,
        Scope::ExecutionsRead,
        Scope::ResultsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ExecutionsWrite => "executions:write",
            Scope::ExecutionsRead => "executions:read",
            Scope::ResultsRead => "results:read",
            Scope::Admin => "admin",
        }
    }

    /// This scope's bit in a [`Scopes`] mask.
    const fn bit(self) -> u8 {
        match self {
            Scope::ExecutionsWrite => 1,
            Scope::ExecutionsRead => 2,
            Scope::ResultsRead => 4,
            Scope::Admin => 8,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes as a bit mask: small and branch-free to select in constant time
/// (`crate::http::authorize_keys` picks the matching key's mask without an early exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(pub u8);

impl Scopes {
    pub const ADMIN: Scopes = Scopes(Scope::Admin.bit());

    pub fn of(scopes: &[Scope]) -> Self {
        Scopes(scopes.iter().fold(0, |mask, scope| mask | scope.bit()))
    }

    /// Whether these scopes allow `needed` (`admin` allows everything).
    pub fn allow(self, needed: Scope) -> bool {
        self.0 & (needed.bit() | Scope::Admin.bit()) != 0
    }

    pub fn list(self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .collect()
    }
}

/// One entry of `service.api_keys`.
#[derive(Clone)]
pub struct ApiKey {
    /// A label for logs and errors (never the key); optional.
    pub name: Option<String>,
    pub key: SecretString,
    pub scopes: Scopes,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes.list())
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// A key with every right (what a bare string in `service.api_keys` is).
    pub fn admin(key: impl Into<String>) -> Self {
        Self {
            name: None,
            key: SecretString::from(key.into()),
            scopes: Scopes::ADMIN,
        }
    }

    /// A key with these scopes.
    pub fn scoped(key: impl Into<String>, scopes: &[Scope]) -> Self {
        Self {
            name: None,
            key: SecretString::from(key.into()),
            scopes: Scopes::of(scopes),
        }
    }

    /// How errors and logs name the entry at `index`: its position and its `name`.
    pub fn describe(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("`service.api_keys[{index}]` ({name:?})"),
            None => format!("`service.api_keys[{index}]`"),
        }
    }
}

/// The first key of `keys` that has every scope of `needed` (the operator commands use it).
pub fn key_with<'k>(keys: &'k [ApiKey], needed: &[Scope]) -> Option<&'k ApiKey> {
    keys.iter()
        .find(|k| needed.iter().all(|scope| k.scopes.allow(*scope)))
}

/// Checks the keys; every error names the entry (position and name), never the key.
pub fn validate(keys: &[ApiKey]) -> Result<(), ConfigError> {
    for (index, entry) in keys.iter().enumerate() {
        let key = entry.key.expose_secret();
        let what = entry.describe(index);
        if key.is_empty() {
            return Err(ConfigError::Invalid(format!("{what}: the key is empty")));
        }
        // Sent as `Authorization: Bearer <key>`: anything else could never match.
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(format!(
                "{what}: the key must be printable ASCII without spaces (it is sent in an HTTP header)"
            )));
        }
        if entry.scopes.0 == 0 {
            return Err(ConfigError::Invalid(format!(
                "{what}: `scopes` is empty; give it some of {}",
                scope_names()
            )));
        }
        if let Some(name) = &entry.name
            && (name.trim().is_empty() || name.len() > 100)
        {
            return Err(ConfigError::Invalid(format!(
                "`service.api_keys[{index}].name` must be 1 to 100 characters"
            )));
        }
        if let Some(earlier) = keys[..index]
            .iter()
            .position(|other| other.key.expose_secret() == key)
        {
            return Err(ConfigError::Invalid(format!(
                "{what} is the same key as {}: each key must be listed once, with all its scopes",
                keys[earlier].describe(earlier)
            )));
        }
    }
    Ok(())
}

fn scope_names() -> String {
    Scope::ALL
        .iter()
        .map(|s| format!("{:?}", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table form of an entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default)]
    name: Option<String>,
    key: SecretString,
    scopes: Vec<Scope>,
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ApiKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key (a string, with every right) or a table { name, key, scopes }")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ApiKey, E> {
                Ok(ApiKey::admin(value))
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<ApiKey, M::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ApiKey {
                    name: table.name,
                    key: table.key,
                    scopes: Scopes::of(&table.scopes),
                })
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

/// Redacted: `{ name, key = "[redacted]", scopes }`.
impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Redacted<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: &'a Option<String>,
            #[serde(serialize_with = "super::values::redacted::secret")]
            key: &'a SecretString,
            scopes: Vec<Scope>,
        }
        Redacted {
            name: &self.name,
            key: &self.key,
            scopes: self.scopes.list(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_every_scope_and_a_scoped_key_only_its_own() {
        for scope in Scope::ALL {
            assert!(Scopes::ADMIN.allow(scope), "{scope}");
        }
        let reader = Scopes::of(&[Scope::ExecutionsRead]);
        assert!(reader.allow(Scope::ExecutionsRead));
        assert!(!reader.allow(Scope::ExecutionsWrite));
        assert!(!reader.allow(Scope::ResultsRead));
        assert!(!reader.allow(Scope::Admin));
        assert_eq!(Scopes(0).list(), Vec::<Scope>::new());
    }

    #[test]
    fn the_operator_commands_pick_the_first_key_with_every_scope_they_need() {
        let keys = [
            ApiKey::scoped("reader-key", &[Scope::ExecutionsRead]),
            ApiKey::scoped(
                "starter-key",
                &[Scope::ExecutionsWrite, Scope::ExecutionsRead],
            ),
            ApiKey::admin("admin-key"),
        ];
        let pick =
            |needed: &[Scope]| key_with(&keys, needed).map(|k| k.key.expose_secret().to_owned());
        assert_eq!(
            pick(&[Scope::ExecutionsRead]).as_deref(),
            Some("reader-key")
        );
        assert_eq!(
            pick(&[Scope::ExecutionsWrite, Scope::ExecutionsRead]).as_deref(),
            Some("starter-key")
        );
        assert_eq!(pick(&[Scope::ResultsRead]).as_deref(), Some("admin-key"));
        assert_eq!(key_with(&keys[..2], &[Scope::Admin]).map(|_| ()), None);
    }
}
