//! Fuzz-style property tests of the configuration loader (proptest, bounded, stable Rust; they
//! run with every `cargo test`): any file gives a configuration or a clear error, never a panic,
//! and an error never echoes a secret's value. (Webhook bodies and headers have theirs beside
//! the parser, in `src/webhook.rs`.)

use mintgate::config::Config;
use proptest::prelude::*;

const MARKER: &str = "Sekr1t-Marker-Value";

/// Keys of the configuration, some of them secret.
fn key() -> impl Strategy<Value = (&'static str, &'static str, bool)> {
    prop_oneof![
        Just(("", "default_environment", false)),
        Just(("listeners", "combined", false)),
        Just(("listeners.public", "address", false)),
        Just(("listeners.public", "request_timeout", false)),
        Just(("listeners.public", "connections_max", false)),
        Just(("listeners.public", "tls_cert_file", false)),
        Just(("listeners.operator", "address", false)),
        Just(("service", "database_url", true)),
        Just(("service", "redis_url", true)),
        Just(("service", "api_keys", true)),
        Just(("service", "replicas", false)),
        Just(("service", "shutdown_grace", false)),
        Just(("service", "log_format", false)),
        Just(("webhook", "auth", false)),
        Just(("webhook", "secret", true)),
        Just(("webhook", "previous_secret", true)),
        Just(("webhook", "tolerance", false)),
        Just(("webhook", "body_bytes_max", false)),
        Just(("pipeline", "poll_interval_min", false)),
        Just(("pipeline", "poll_interval_max", false)),
        Just(("pipeline", "lease", false)),
        Just(("pipeline", "start_workers", false)),
        Just(("archive", "url", true)),
        Just(("archive", "part_bytes", false)),
        Just(("mint.sandbox", "api_base", true)),
        Just(("mint.sandbox", "client_id", false)),
        Just(("mint.sandbox", "client_secret", true)),
        Just(("mint.sandbox", "budget_units_per_minute", false)),
        Just(("unknown", "key", false)),
    ]
}

/// A TOML value; secret keys' strings carry the marker.
fn value(secret: bool) -> BoxedStrategy<String> {
    let text = if secret {
        prop_oneof![
            Just(format!("\"{MARKER}\"")),
            Just(format!("\"postgres://user:{MARKER}@db/x\"")),
            Just(format!("\"redis://:{MARKER}@cache:6379\"")),
            Just(format!("\"https://user:{MARKER}@api.example/mint\"")),
            Just(format!("[\"{MARKER}\"]")),
            Just(format!("[\"{MARKER}\", 7]")),
        ]
        .boxed()
    } else {
        prop_oneof![
            "\"[ -~&&[^\"\\\\]]{0,30}\"",
            Just("\"127.0.0.1:0\"".to_owned()),
            Just("\"5m\"".to_owned()),
            Just("\"0s\"".to_owned()),
            Just("\"-1s\"".to_owned()),
            Just("\"hmac\"".to_owned()),
        ]
        .boxed()
    };
    prop_oneof![
        text,
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1.5".to_owned()),
    ]
    .boxed()
}

fn document() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        key().prop_flat_map(|(table, key, secret)| (Just(table), Just(key), value(secret))),
        0..12,
    )
    .prop_map(|entries| {
        // One table header per entry: a repeated table is itself an error worth feeding in.
        let mut text = String::new();
        for (table, key, value) in entries {
            if table.is_empty() {
                text.insert_str(0, &format!("{key} = {value}\n"));
            } else {
                text.push_str(&format!("[{table}]\n{key} = {value}\n"));
            }
        }
        text
    })
}

fn load(text: &[u8]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mintgate.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path)).map_err(|e| format!("{e:#} / {e:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_give_a_configuration_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = load(&bytes);
    }

    #[test]
    fn a_configuration_error_never_echoes_a_secret(text in document()) {
        if let Err(error) = load(text.as_bytes()) {
            prop_assert!(!error.contains(MARKER), "the error echoes a secret:\n{error}\nfrom:\n{text}");
        }
    }
}
