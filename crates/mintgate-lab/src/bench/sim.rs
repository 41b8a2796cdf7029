//! Simulator serving-rate benchmark (result files and small requests).

/// Runs mint-sim's serving benchmark with its default settings (a 100 MiB and a 2 GiB result file
/// over loopback, then 16 clients of `GET /api/instances/{id}` for 3 s) and prints the figures:
/// bytes/s, peak resident memory per download, requests/s.
pub async fn run() -> anyhow::Result<()> {
    mint_sim::bench::run(mint_sim::bench::BenchArgs::default()).await
}
