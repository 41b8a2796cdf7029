//! An optional hook for metrics: the client tells an [`Observer`] what its send path, token manager
//! and downloads did, synchronously, without pulling a metrics library into this crate.

use std::fmt;
use std::time::Duration;

use crate::budget::Priority;
use crate::error::Operation;

/// One thing the client did. Never carries a token, a secret or a body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// One attempt of a request ended. `units` is what it cost (0 when the units were refunded: a
    /// `429`, a `401` or a request that never left); `status` is `None` when no answer came.
    Request {
        /// The call.
        operation: Operation,
        /// The budget priority it ran at.
        priority: Priority,
        /// Units spent.
        units: u32,
        /// The HTTP status, if any answer came.
        status: Option<u16>,
    },
    /// The server answered `429`.
    Throttled {
        /// The call.
        operation: Operation,
        /// The budget priority it ran at.
        priority: Priority,
    },
    /// A failed attempt will be retried (it took tokens from the retry quota).
    Retry {
        /// The call.
        operation: Operation,
    },
    /// A retry was refused because the retry quota ran out.
    RetryQuotaExhausted {
        /// The call.
        operation: Operation,
    },
    /// A token was issued; `renewal` is false for the first token of the client.
    TokenIssued {
        /// The lifetime the server gave.
        expires_in: Duration,
        /// Whether a token had been issued before.
        renewal: bool,
    },
    /// Fetching a token failed for good (after its retries).
    TokenFailed,
    /// A result-file download was interrupted and will restart or resume.
    DownloadInterrupted {
        /// The transfer rate fell below the minimum (rather than the connection being cut).
        stalled: bool,
        /// It resumes with `Range` (rather than restarting from zero).
        resumed: bool,
    },
}

/// Receives [`ClientEvent`]s. Called synchronously on the request's task: keep it cheap and never
/// block.
pub trait Observer: Send + Sync + fmt::Debug + 'static {
    /// One event.
    fn observe(&self, event: &ClientEvent);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use secrecy::SecretString;

    use super::*;
    use crate::{FlowId, MintClient, MintConfig, RetryConfig, StartInstance};

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<ClientEvent>>);

    impl Observer for Recorder {
        fn observe(&self, event: &ClientEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[tokio::test]
    async fn the_observer_hears_tokens_requests_throttles_and_retries() {
        let sim = mint_sim::Simulator::builder().start().await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let config = MintConfig::new(
            sim.base_url(),
            sim.token_url(),
            "demo",
            SecretString::from("demo-secret"),
        )
        .retry(RetryConfig {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            retry_after_max: Duration::from_millis(5),
            ..RetryConfig::default()
        })
        .observer(recorder.clone());
        let client = MintClient::new(config).unwrap();
        assert_eq!(client.token_info(), None, "no token before the first call");
        let flow = FlowId::new("flow-kyc-basic").unwrap();
        let started = client
            .start_instance(&flow, &StartInstance::default())
            .await
            .unwrap();
        assert!(client.token_info().is_some());
        sim.admin()
            .set_faults(mint_sim::Faults {
                storm_rate: 1.0,
                ..mint_sim::Faults::default()
            })
            .await
            .unwrap();
        let error = client.get_instance(&started.instance.id).await.unwrap_err();
        assert!(matches!(error, crate::Error::RateLimited { .. }), "{error}");
        let events = recorder.0.lock().unwrap().clone();
        assert!(matches!(
            events[0],
            ClientEvent::TokenIssued { renewal: false, .. }
        ));
        assert!(
            events.contains(&ClientEvent::Request {
                operation: Operation::StartInstance,
                priority: Priority::Interactive,
                units: 1,
                status: Some(201),
            }) || events.contains(&ClientEvent::Request {
                operation: Operation::StartInstance,
                priority: Priority::Interactive,
                units: 1,
                status: Some(200),
            }),
            "{events:?}"
        );
        let throttled = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::Throttled {
                        operation: Operation::GetInstance,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(throttled, 2, "{events:?}");
        assert!(events.contains(&ClientEvent::Retry {
            operation: Operation::GetInstance
        }));
        assert!(events.contains(&ClientEvent::Request {
            operation: Operation::GetInstance,
            priority: Priority::Interactive,
            units: 0,
            status: Some(429),
        }));
        sim.shutdown().await;
    }
}
