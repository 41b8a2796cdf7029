//! The budget replicas share through Redis reports what a local budget reports: the units the
//! whole fleet spent in the last window (not the GCRA's instant capacity), and the 429s it was
//! told of; `MintBudgetExhausted` and the status page read these.

use std::time::Duration;

use mint_client::{Budget as _, BudgetConfig, Priority};
use mintgate::shared::{RedisBudget, SharedRedis};

use crate::support::redis_server;

#[tokio::test]
async fn the_shared_budget_reports_the_fleets_window_use_and_its_429s() {
    let Some(url) =
        redis_server("shared_budget::the_shared_budget_reports_the_fleets_window_use_and_its_429s")
            .await
    else {
        return;
    };
    let prefix = format!("mintgate-test-{}", uuid::Uuid::new_v4().simple());
    let redis = SharedRedis::connect_lazy(&url, &prefix).unwrap();
    let cfg = BudgetConfig::default(); // 90 units a minute, 18 a second
    let limit = cfg.limit_units;
    let one = RedisBudget::new(redis.clone(), "demo", cfg.clone(), 2);
    let other = RedisBudget::new(redis.clone(), "demo", cfg.clone(), 2);

    // Two replicas spend 3 + 5 units; both see the fleet's 8.
    let ticket = one.acquire(3, Priority::Interactive).await.unwrap();
    one.answered(ticket).await;
    let ticket = other.acquire(5, Priority::Background).await.unwrap();
    other.answered(ticket).await;
    for replica in [&one, &other] {
        let snapshot = replica.snapshot().await;
        assert_eq!(snapshot.used_units, 8, "{snapshot:?}");
        assert_eq!(snapshot.remaining_units, limit - 8, "{snapshot:?}");
        assert_eq!(snapshot.throttled_total, 0, "{snapshot:?}");
    }

    // A refunded request (never counted by Mint) is given back.
    let ticket = one.acquire(1, Priority::Interactive).await.unwrap();
    assert_eq!(one.snapshot().await.used_units, 9);
    one.refund(ticket).await;
    assert_eq!(one.snapshot().await.used_units, 8);

    // A 429 is counted by the replica that was told of it.
    one.on_throttled(Some(Duration::from_millis(1))).await;
    assert_eq!(one.snapshot().await.throttled_total, 1);
    assert_eq!(other.snapshot().await.throttled_total, 0);
    assert!(!one.is_degraded() && !other.is_degraded());
}
