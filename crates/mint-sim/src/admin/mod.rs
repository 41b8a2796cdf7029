//! The admin API (`/_sim/...`): its wire types, its routes and the typed [`AdminClient`].

mod client;
pub(crate) mod routes;
mod types;
mod views;

pub use client::AdminClient;
pub use types::*;
