//! mintgate: a durable, budget-aware onboarding pipeline for the Signicat Mint API.

pub mod api;
pub mod app;
pub mod archive;
pub mod cli;
pub mod clock;
pub mod config;
pub mod files;
pub mod flow_cache;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod pipeline;
pub mod retention;
pub mod roles;
pub mod server;
pub mod shared;
pub mod spend;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod view;
pub mod webhook;
