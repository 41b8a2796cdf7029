//! What the configuration's validation reports: [`ConfigError`] naming the offending key, and the
//! checks that `config` and `behaviours` share (so neither module needs the other's internals).

/// A configuration value that is out of range, named by its key (e.g. `flows[1].resultFileBytes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}`: {message}")]
pub struct ConfigError {
    /// The dotted path of the offending key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

pub(crate) fn check_rate(key: String, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between 0 and 1 (got {value})"),
        ))
    }
}
