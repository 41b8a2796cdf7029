//! Typed identifiers: a flow id, a definition id and an instance id are three different things.
//!
//! Mint uses opaque string identifiers. Mixing a definition id (shared by every version of a flow) with a
//! flow id (one version) is the classic integration bug (see `Error::DefinitionIdAsFlowId`), so each gets
//! its own type. Construction validates the value so that it is always safe as one URL path segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier accepted, in bytes. Mint ids are GUID-like; this only stops absurd input.
pub const ID_LENGTH_MAX_BYTES: usize = 200;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which identifier type was being built (`flow id`, `definition id`, `instance id`).
    pub kind: &'static str,
    /// The rejected value, truncated to 64 characters.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn validate(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let fail = |reason| InvalidId {
        kind,
        value: value.chars().take(64).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(fail("it is empty"));
    }
    if value.len() > ID_LENGTH_MAX_BYTES {
        return Err(fail("it is longer than 200 bytes"));
    }
    if value == "." || value == ".." {
        return Err(fail("it is a relative path segment"));
    }
    // URL "unreserved" characters plus ':' (seen in URN-style ids): never needs escaping in a path segment.
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':'));
    if !ok {
        return Err(fail(
            "only ASCII letters, digits and - _ . ~ : are allowed (did you paste a URL or whitespace?)",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (non-empty, at most 200 bytes, `[A-Za-z0-9._~:-]`) and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The id of one version of a flow (`GET /api/flows/{flowId}/instances` takes this one).
    FlowId,
    "flow id"
);
id_type!(
    /// The id shared by all versions of a flow. Not accepted where a [`FlowId`] is expected.
    DefinitionId,
    "definition id"
);
id_type!(
    /// The id of one execution (instance) of a flow.
    InstanceId,
    "instance id"
);

impl DefinitionId {
    /// Reinterprets a flow id that turned out to be a definition id (see `Error::DefinitionIdAsFlowId`).
    pub(crate) fn from_flow_id(id: &FlowId) -> Self {
        Self(id.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_are_accepted() {
        for s in [
            "flow-kyc-basic",
            "3f2b8c1e-0000-4a4a-9b9b-123456789abc",
            "a",
            "urn:x:1",
            "a.b_c~d",
        ] {
            assert_eq!(FlowId::new(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn unsafe_or_empty_ids_are_rejected() {
        let long = "x".repeat(201);
        for s in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "flow-1 ",
            "a%2F",
            "é",
            "a?b",
            "a#b",
            long.as_str(),
        ] {
            let err = InstanceId::new(s).unwrap_err();
            assert_eq!(err.kind, "instance id", "{s:?}");
        }
        assert!(InstanceId::new("x".repeat(200)).is_ok());
    }

    #[test]
    fn error_message_says_what_is_wrong() {
        let err = FlowId::new("flow 1").unwrap_err();
        assert!(
            err.to_string().contains("invalid flow id \"flow 1\""),
            "{err}"
        );
    }

    #[test]
    fn ids_round_trip_through_json_and_validate_on_the_way_in() {
        let id: FlowId = serde_json::from_str("\"flow-1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"flow-1\"");
        assert!(serde_json::from_str::<FlowId>("\"../etc\"").is_err());
    }
}
