//! The lab's integration tests: the demo in small, and several replicas (the fleet harness) on the
//! machine's PostgreSQL and Redis, and the kill -9 soak of the real `serve` process, asserting the
//! simulator's ground truth.

mod demo;
mod replicas;
mod soak;
// One copy of the servers' helpers for both crates' test binaries.
#[path = "../../../mintgate/tests/it/support.rs"]
mod support;
