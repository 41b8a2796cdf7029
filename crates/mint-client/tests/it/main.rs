//! The integration tests of `mint-client`, one binary, against an in-process `mint-sim`.
//!
//! Every assertion about what reached the server reads the simulator's ground truth
//! (`sim.admin().usage()`), never the client's own bookkeeping.

mod helpers;
mod odd_mint;

mod budget;
mod config;
mod contract;
mod download;
mod fuzz;
mod ids_and_models;
mod observability;
mod pagination;
mod progress;
mod propagation;
mod result_check;
mod retries;
mod roles;
mod tokens;
mod verbose_log;
