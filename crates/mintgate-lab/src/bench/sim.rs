//! Simulator serving-rate benchmark (result files and small requests).

/// Runs mint-sim's serving benchmark (by default a 100 MiB and a 2 GiB result file over loopback,
/// then 16 clients of `GET /api/instances/{id}` for 3 s, then a listing of 100,000 instances) and
/// prints the figures: bytes/s, peak resident memory per download, requests/s (`--json` for JSON).
pub async fn run(args: mint_sim::bench::BenchArgs) -> anyhow::Result<()> {
    mint_sim::bench::run(args).await
}
