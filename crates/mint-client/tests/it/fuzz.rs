//! Fuzz-style property tests (proptest, bounded, stable Rust; they run with every `cargo test`):
//! outside input never panics the client, and what it accepts keeps its invariants.
//!
//! - `Retry-After`: any header text gives `None` or a delay within the cap; delta seconds and
//!   HTTP dates mean what they say.
//! - Mint's JSON models: any JSON value, and any bytes, deserialize into a value or an error,
//!   never a panic; a value that deserializes serializes back and deserializes to the same value.

use std::time::{Duration, SystemTime};

use mint_client::{Flow, Instance, Page, StartedInstance, parse_retry_after};
use proptest::prelude::*;

/// Arbitrary JSON, biased towards the shapes and keys of Mint's answers.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("flowId".to_owned()),
        Just("definitionId".to_owned()),
        Just("status".to_owned()),
        Just("created".to_owned()),
        Just("createdAt".to_owned()),
        Just("updatedAt".to_owned()),
        Just("finishedAt".to_owned()),
        Just("name".to_owned()),
        Just("items".to_owned()),
        Just("data".to_owned()),
        Just("totalCount".to_owned()),
        Just("offset".to_owned()),
        Just("limit".to_owned()),
        Just("activities".to_owned()),
        Just("error".to_owned()),
        Just("output".to_owned()),
        Just("workflowUrl".to_owned()),
        Just("type".to_owned()),
        "[a-zA-Z]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("Running")),
        Just(serde_json::Value::from("Finished")),
        Just(serde_json::Value::from("Faulted")),
        Just(serde_json::Value::from("2026-01-02T03:04:05Z")),
        Just(serde_json::Value::from("0001-01-01T00:00:00")),
        Just(serde_json::Value::from("9999-12-31T23:59:59.9999999+14:00")),
        ".{0,40}".prop_map(serde_json::Value::from),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..10)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Deserializes `value` as `T`; if that works, the value survives a round trip.
fn round_trips<T>(value: &serde_json::Value) -> Result<(), TestCaseError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(parsed) = serde_json::from_value::<T>(value.clone()) {
        let again = serde_json::to_value(&parsed).expect("a parsed model serializes");
        let reparsed: T = serde_json::from_value(again.clone())
            .map_err(|e| TestCaseError::fail(format!("{e}: {again}")))?;
        prop_assert_eq!(reparsed, parsed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn retry_after_never_panics_and_never_exceeds_the_cap(
        value in prop_oneof![
            ".{0,64}",
            "[0-9]{1,30}",
            "-?[0-9]{0,20}\\.?[0-9]{0,20}(e-?[0-9]{1,4})?",
            "(Mon|Tue|Sun|Xyz), [0-9]{1,2} (Jan|Feb|Dec|Foo) [0-9]{1,6} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|UTC|\\+[0-9]{4})",
            Just("NaN".to_owned()),
            Just("inf".to_owned()),
            Just("-0.0".to_owned()),
            Just("18446744073709551616".to_owned()),
        ],
        now_secs in 0u64..8_000_000_000,
        cap_millis in 0u64..10_000_000,
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        let cap = Duration::from_millis(cap_millis);
        if let Some(delay) = parse_retry_after(&value, now, cap) {
            prop_assert!(delay <= cap, "{value:?} gave {delay:?} over the cap {cap:?}");
        }
    }

    #[test]
    fn retry_after_delta_seconds_mean_seconds(secs in 0u64..1_000_000, cap_secs in 0u64..1_000_000) {
        let cap = Duration::from_secs(cap_secs);
        prop_assert_eq!(
            parse_retry_after(&format!(" {secs} "), SystemTime::now(), cap),
            Some(Duration::from_secs(secs).min(cap))
        );
    }

    #[test]
    fn retry_after_http_dates_count_from_now(ahead in 0i64..100_000, behind in 0i64..100_000) {
        let now = chrono::Utc::now();
        let now_system = SystemTime::from(now);
        let cap = Duration::from_secs(1_000_000);
        let later = (now + chrono::TimeDelta::seconds(ahead)).to_rfc2822();
        let delay = parse_retry_after(&later, now_system, cap).expect("an HTTP date parses");
        // RFC 2822 keeps whole seconds: at most a second short.
        prop_assert!(delay <= Duration::from_secs(ahead as u64), "{delay:?}");
        prop_assert!(delay + Duration::from_secs(1) >= Duration::from_secs(ahead as u64), "{delay:?}");
        let earlier = (now - chrono::TimeDelta::seconds(behind)).to_rfc2822();
        prop_assert!(parse_retry_after(&earlier, now_system, cap).unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn mint_models_never_panic_on_any_json_and_round_trip(value in json_value()) {
        round_trips::<Instance>(&value)?;
        round_trips::<Flow>(&value)?;
        round_trips::<StartedInstance>(&value)?;
        round_trips::<Page<Instance>>(&value)?;
        round_trips::<Page<Flow>>(&value)?;
    }

    #[test]
    fn mint_models_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Instance>(&bytes);
        let _ = serde_json::from_slice::<Flow>(&bytes);
        let _ = serde_json::from_slice::<StartedInstance>(&bytes);
        let _ = serde_json::from_slice::<Page<Instance>>(&bytes);
    }
}
