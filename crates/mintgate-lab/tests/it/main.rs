//! The lab's integration tests: the demo in small, and several replicas (the fleet harness) on the
//! machine's PostgreSQL and Redis, asserting the simulator's ground truth.

mod demo;
mod replicas;
// One copy of the servers' helpers for both crates' test binaries.
#[path = "../../../mintgate/tests/it/support.rs"]
mod support;
