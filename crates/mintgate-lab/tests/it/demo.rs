//! `mintgate-lab demo` in small: the whole pipeline against a time-scaled simulator with faults.

use std::time::Duration;

use mintgate_lab::demo::{DemoArgs, run_demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_demo_day_loses_nothing_and_bills_nothing_twice() {
    let args = DemoArgs {
        onboardings: 15,
        seed: 3,
        timeout: Duration::from_secs(240),
        ..DemoArgs::default()
    };
    let report = run_demo(&args, false).await.unwrap();
    assert_eq!(report.duplicates_billed, 0, "{report:#?}");
    assert_eq!(report.archives_bad, 0, "{report:#?}");
    assert_eq!(report.in_flight, 0, "{report:#?}");
    assert_eq!(report.started_in_mint, 15, "{report:#?}");
    let failed = report.by_state.get("failed").copied().unwrap_or(0);
    let expired = report.by_state.get("expired").copied().unwrap_or(0);
    assert_eq!(
        report.archives_verified + failed + expired,
        15,
        "{report:#?}"
    );
    assert!(report.archives_verified >= 8, "{report:#?}");
    assert!(report.ok());
}
