//! Money: the month-to-date spend from the cost ledger, its projection to the month's end, and the
//! budget guard (a soft alert threshold and an optional hard cap that holds new starts).
//!
//! The hard cap is `pipeline.monthly_spend_cap_cents` unless an operator set one with
//! `PUT /v1/budget/cap`, which is kept in the database (setting [`CAP_SETTING`]) and wins, so the cap
//! can be raised without a restart. A held start is delayed, never failed: its job looks again every
//! `pipeline.spend_cap_recheck` and at the start of the next month at the latest.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, TimeZone as _, Utc};
use serde::Serialize;

use crate::clock::delta;
use crate::config::PipelineConfig;
use crate::store::{SpendRow, Store};

/// The settings key of the operator's cap (cents, as decimal text).
pub const CAP_SETTING: &str = "spend.monthly_cap_cents";
/// Mint's price of one execution when the profile says nothing else.
pub const DEFAULT_PRICE_CENTS: u32 = 50;

/// `YYYY-MM` of `at` (UTC), the ledger's month key.
pub fn month_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}

/// The first instant of `at`'s month.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

/// The first instant of the month after `at`'s.
pub fn next_month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

/// A linear projection of the month's spend from what was spent so far.
pub fn project(spent_cents: i64, now: DateTime<Utc>) -> i64 {
    let start = month_start(now);
    let end = next_month_start(now);
    let elapsed = (now - start).num_seconds().max(1) as f64;
    let whole = (end - start).num_seconds().max(1) as f64;
    // Early in the month the projection is noisy; never project less than what is spent.
    ((spent_cents as f64) * whole / elapsed)
        .round()
        .max(spent_cents as f64) as i64
}

/// The price of one execution in an environment.
pub fn price_cents(config: &PipelineConfig, environment: &str) -> u32 {
    config
        .price_cents
        .get(environment)
        .copied()
        .unwrap_or(DEFAULT_PRICE_CENTS)
}

/// The cap in force: the operator's (database) if set, else the configured one.
pub async fn cap_cents(store: &dyn Store, config: &PipelineConfig) -> anyhow::Result<Option<u64>> {
    match store.setting(CAP_SETTING).await? {
        Some(text) => Ok(Some(text.trim().parse().map_err(|_| {
            anyhow::anyhow!("the stored spend cap {text:?} is not a number of cents")
        })?)),
        None => Ok(config.monthly_spend_cap_cents),
    }
}

/// The month so far, for the status page, `/metrics` and `GET /v1/budget`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendSummary {
    pub month: String,
    pub executions: i64,
    pub cents: i64,
    pub projected_cents: i64,
    pub alert_cents: Option<u64>,
    pub cap_cents: Option<u64>,
    /// Where the cap comes from: `operator` (database), `config`, or none.
    pub cap_source: Option<&'static str>,
    pub by_flow: BTreeMap<String, (i64, i64)>,
    pub by_day: BTreeMap<String, (i64, i64)>,
    pub rows: Vec<SpendRow>,
}

impl SpendSummary {
    pub fn over_alert(&self) -> bool {
        self.alert_cents
            .is_some_and(|alert| self.cents > i64::try_from(alert).unwrap_or(i64::MAX))
    }

    /// Whether a start of `price` cents would pass the cap now.
    pub fn cap_allows(&self, price: u32) -> bool {
        match self.cap_cents {
            None => true,
            Some(cap) => self.cents + i64::from(price) <= i64::try_from(cap).unwrap_or(i64::MAX),
        }
    }
}

pub async fn summary(
    store: &dyn Store,
    config: &PipelineConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<SpendSummary> {
    let month = month_key(now);
    let rows = store.spend(&month).await?;
    let mut by_flow: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut by_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let (mut executions, mut cents) = (0, 0);
    for row in &rows {
        executions += row.executions;
        cents += row.cents;
        let flow = by_flow
            .entry(format!("{}/{}", row.environment, row.flow_id))
            .or_default();
        flow.0 += row.executions;
        flow.1 += row.cents;
        let day = by_day.entry(row.day.clone()).or_default();
        day.0 += row.executions;
        day.1 += row.cents;
    }
    let operator = store.setting(CAP_SETTING).await?.is_some();
    let cap = cap_cents(store, config).await?;
    Ok(SpendSummary {
        month,
        executions,
        cents,
        projected_cents: project(cents, now),
        alert_cents: config.monthly_spend_alert_cents,
        cap_cents: cap,
        cap_source: match (cap, operator) {
            (None, _) => None,
            (Some(_), true) => Some("operator"),
            (Some(_), false) => Some("config"),
        },
        by_flow,
        by_day,
        rows,
    })
}

/// When a start of an execution in `environment` must wait for the cap: `None` if it may go now.
pub async fn held_until(
    store: &dyn Store,
    config: &PipelineConfig,
    environment: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(cap) = cap_cents(store, config).await? else {
        return Ok(None);
    };
    let spent: i64 = store
        .spend(&month_key(now))
        .await?
        .iter()
        .map(|row| row.cents)
        .sum();
    let price = i64::from(price_cents(config, environment));
    if spent + price <= i64::try_from(cap).unwrap_or(i64::MAX) {
        return Ok(None);
    }
    Ok(Some(
        (now + delta(config.spend_cap_recheck)).min(next_month_start(now)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn months_start_and_roll_over_at_the_year_end() {
        assert_eq!(
            next_month_start(at("2025-12-31T23:59:59Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            month_start(at("2025-02-14T10:00:00Z")),
            at("2025-02-01T00:00:00Z")
        );
        assert_eq!(month_key(at("2025-02-14T10:00:00Z")), "2025-02");
    }

    #[test]
    fn the_projection_is_linear_over_the_month_and_never_below_the_spend() {
        // Half of a 30-day month gone: twice the spend.
        assert_eq!(project(1000, at("2025-06-16T00:00:00Z")), 2000);
        assert_eq!(project(0, at("2025-06-16T00:00:00Z")), 0);
        assert!(project(50, at("2025-06-30T23:59:00Z")) >= 50);
    }
}
