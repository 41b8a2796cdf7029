//! Item 6: backoff, Retry-After, the retry quota, and starts that are never blindly repeated.

use std::time::Duration;

use mint_client::{Error, MintClient, NoAnswerReason, NotSentReason, RetryConfig, StartInstance};
use mint_sim::Faults;

use crate::helpers;

#[tokio::test]
async fn a_lost_start_response_is_ambiguous_and_billed_exactly_once() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    client.fetch_token().await.unwrap();
    sim.admin()
        .set_faults(Faults {
            lost_start_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let flow = helpers::flow(helpers::BASIC_FLOW);
    let err = client
        .start_instance(&flow, &StartInstance::default())
        .await
        .unwrap_err();
    match &err {
        Error::Ambiguous {
            flow_id, reason, ..
        } => {
            assert_eq!(flow_id, &flow);
            assert_eq!(reason, &NoAnswerReason::ConnectionLost);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert!(!err.is_retryable(), "the caller must reconcile first");
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(
        usage.requests_by_endpoint["start"], 1,
        "never blindly retried"
    );
    assert_eq!(usage.starts_billed, 1, "the server did run it, once");
}

#[tokio::test]
async fn a_start_answered_429_is_retried_because_the_server_did_not_run_it() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    client.fetch_token().await.unwrap();
    sim.admin()
        .set_faults(Faults {
            storm_for_secs: 1,
            storm_retry_after_secs: Some(1),
            ..Faults::default()
        })
        .await
        .unwrap();
    let started = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap();
    let usage = helpers::usage(&sim, "demo").await;
    assert!(usage.throttled >= 1);
    assert_eq!(usage.starts_billed, 1);
    assert_eq!(
        helpers::sim_status(&sim, &started.instance.id).await,
        "Running"
    );
}

#[tokio::test]
async fn a_start_answered_5xx_is_ambiguous_and_not_repeated() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    client.fetch_token().await.unwrap();
    sim.admin()
        .set_faults(Faults {
            server_error_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let err = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Ambiguous { reason: NoAnswerReason::ServerError(s), .. } if s >= 500),
        "{err:?}"
    );
    assert_eq!(
        helpers::usage(&sim, "demo").await.requests_by_endpoint["start"],
        1
    );
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_with_backoff() {
    let sim = helpers::sim().await;
    let retry = RetryConfig {
        max_attempts: 10,
        ..helpers::fast_retry()
    };
    let client = MintClient::new(helpers::config(&sim, "demo").retry(retry)).unwrap();
    let id = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap()
        .instance
        .id;
    sim.admin()
        .set_faults(Faults {
            seed: Some(7),
            server_error_rate: 0.3,
            ..Faults::default()
        })
        .await
        .unwrap();
    for _ in 0..20 {
        client.get_instance(&id).await.expect("retried to success");
    }
    let usage = helpers::usage(&sim, "demo").await;
    let errors: u64 = usage
        .status_counts
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    assert!(errors > 0, "faults were served");
    assert_eq!(
        usage.requests_by_endpoint["get_instance"],
        20 + errors,
        "{:?}",
        usage.status_counts
    );
}

#[tokio::test]
async fn the_retry_quota_stops_a_brown_out_from_multiplying_load() {
    let sim = helpers::sim().await;
    let retry = RetryConfig {
        quota_tokens: 20,
        ..helpers::fast_retry()
    };
    let client = MintClient::new(helpers::config(&sim, "demo").retry(retry)).unwrap();
    let id = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap()
        .instance
        .id;
    sim.admin()
        .set_faults(Faults {
            server_error_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    for _ in 0..10 {
        let err = client.get_instance(&id).await.unwrap_err();
        assert!(
            err.is_retryable() && err.status().unwrap() >= 500,
            "{err:?}"
        );
    }
    // 10 calls, and only 4 retries (20 tokens / 5 per retry) in total instead of 30.
    assert_eq!(
        helpers::usage(&sim, "demo").await.requests_by_endpoint["get_instance"],
        14
    );
    assert_eq!(client.retry_quota_available(), 0);
}

#[tokio::test]
async fn a_refused_connection_means_not_sent_so_even_a_start_may_be_retried() {
    let sim = helpers::sim().await;
    // A port bound but not listening, held for the whole test: connecting is refused, and no
    // other test can start listening on it meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut cfg = helpers::config(&sim, "demo");
    cfg.api_base = format!("http://127.0.0.1:{port}/mint");
    let client = MintClient::new(cfg).unwrap();
    let started = tokio::time::Instant::now();
    let err = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotSent {
                reason: NotSentReason::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}
