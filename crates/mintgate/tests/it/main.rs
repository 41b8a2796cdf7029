//! The service's integration tests: an in-process simulator and the service, asserting the
//! simulator's ground truth.

mod api;
mod architecture;
mod archive;
mod cli;
mod edge;
mod events;
mod fuzz;
mod helpers;
mod monitoring;
mod pipeline;
mod polling;
mod reconcile;
mod resilience;
mod results;
mod shared_budget;
mod shipped_client;
mod store;
mod support;
mod traces;
mod webhooks;
