//! `mintgate bench …`: the benchmarks that hold the project's speed and memory goals.
//!
//! Each submodule exposes `pub async fn run(args) -> anyhow::Result<()>` that prints its figures.

pub mod download;
pub mod sim;
