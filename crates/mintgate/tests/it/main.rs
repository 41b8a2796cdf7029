//! The service's integration tests: an in-process simulator and the service, asserting the
//! simulator's ground truth.

mod api;
mod helpers;
mod pipeline;
mod replicas;
mod store;
mod webhooks;
