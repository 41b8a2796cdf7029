//! Retries: exponential backoff with full jitter, `Retry-After`, and a retry quota (token bucket) in
//! the manner of the AWS SDKs' "standard" mode, so a brown-out does not multiply the load.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per call, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff base: attempt `n` (from 1) sleeps a random time in `[0, min(max_delay, base × 2^(n-1))]`.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is capped to it (a broken server must not park us for hours).
    pub retry_after_max: Duration,
    /// The retry quota: tokens available for retries (AWS: 500).
    pub quota_tokens: u32,
    /// Tokens a retry costs (AWS: 5).
    pub retry_cost: u32,
    /// Tokens a retry after a timeout costs (AWS: 10): timeouts hint at overload.
    pub timeout_retry_cost: u32,
    /// Tokens a successful first attempt gives back (AWS: 1).
    pub success_refill: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            retry_after_max: Duration::from_secs(120),
            quota_tokens: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refill: 1,
        }
    }
}

/// The backoff before retry number `retry` (1 = first retry), given a uniform random `unit` in `[0, 1)`.
/// Full jitter: `unit × min(max_delay, base × 2^(retry-1))`.
pub fn backoff_delay(retry: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The wait before retry number `retry` (1 = first retry), given a uniform random `unit` in `[0, 1)`.
/// Every wait has jitter, so callers that failed together do not come back together:
///
/// * without `Retry-After`: full jitter, `unit × min(max_delay, base_delay × 2^(retry−1))`
///   ([`backoff_delay`]);
/// * with `Retry-After: ra`: never sooner than asked, spread over a fifth of it,
///   `ra + unit × min(max(ra / 5, base_delay), max_delay)`.
pub fn retry_delay(
    retry: u32,
    retry_after: Option<Duration>,
    cfg: &RetryConfig,
    unit: f64,
) -> Duration {
    match retry_after {
        None => backoff_delay(retry, cfg.base_delay, cfg.max_delay, unit),
        Some(ra) => {
            let spread = (ra / 5).max(cfg.base_delay).min(cfg.max_delay);
            ra.saturating_add(spread.mul_f64(unit.clamp(0.0, 1.0)))
        }
    }
}

/// Parses a `Retry-After` value: delta seconds, or an HTTP-date (relative to `now`). Capped at `max`.
/// Unparsable values give `None` (the caller falls back to its backoff).
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        // Not HTTP, but seen in the wild ("1.5").
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs.min(max.as_secs_f64()))
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let at = SystemTime::from(at.with_timezone(&chrono::Utc));
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(max))
}

/// The retry quota shared by all calls of a client. A retry takes tokens; without enough, the error
/// is returned instead of retried. Successes put tokens back.
#[derive(Debug)]
pub struct RetryQuota {
    cfg: RetryConfig,
    available: Mutex<u32>,
}

/// Tokens taken for one retry, to give back if it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPermit(u32);

impl RetryQuota {
    /// A full quota.
    pub fn new(cfg: RetryConfig) -> Self {
        let available = Mutex::new(cfg.quota_tokens);
        Self { cfg, available }
    }

    /// Takes tokens for a retry, or `None` when the quota is exhausted.
    pub fn try_acquire(&self, after_timeout: bool) -> Option<RetryPermit> {
        let cost = if after_timeout {
            self.cfg.timeout_retry_cost
        } else {
            self.cfg.retry_cost
        };
        let mut a = self.available.lock().unwrap();
        if *a < cost {
            return None;
        }
        *a -= cost;
        Some(RetryPermit(cost))
    }

    /// Records a success: a retried call gives its tokens back, a first attempt adds `success_refill`.
    pub fn on_success(&self, permit: Option<RetryPermit>) {
        let back = permit.map_or(self.cfg.success_refill, |p| p.0);
        let mut a = self.available.lock().unwrap();
        *a = (*a + back).min(self.cfg.quota_tokens);
    }

    /// Tokens left.
    pub fn available(&self) -> u32 {
        *self.available.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff_delay(1, base, max, 0.999_999).as_millis(), 99);
        assert_eq!(backoff_delay(3, base, max, 0.5), Duration::from_millis(200));
        assert_eq!(backoff_delay(10, base, max, 1.0), max);
        assert_eq!(backoff_delay(u32::MAX, base, max, 1.0), max);
        assert_eq!(backoff_delay(4, base, max, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured_and_spread_never_shortened() {
        let cfg = RetryConfig {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..RetryConfig::default()
        };
        let ra = Some(Duration::from_secs(5));
        assert_eq!(retry_delay(1, ra, &cfg, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(1, ra, &cfg, 0.5), Duration::from_millis(5500));
        // A long Retry-After: the spread is capped at max_delay.
        let long = Some(Duration::from_secs(100));
        assert_eq!(retry_delay(1, long, &cfg, 1.0), Duration::from_secs(102));
        // Retry-After: 0 still spreads over base_delay.
        assert_eq!(
            retry_delay(1, Some(Duration::ZERO), &cfg, 0.5),
            Duration::from_millis(50)
        );
        assert_eq!(
            retry_delay(3, None, &cfg, 0.5),
            backoff_delay(3, cfg.base_delay, cfg.max_delay, 0.5)
        );
    }

    #[test]
    fn retry_after_in_seconds_and_http_date_and_capped() {
        let max = Duration::from_secs(120);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("7", now, max),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after(" 0 ", now, max), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999", now, max), Some(max));
        assert_eq!(
            parse_retry_after("1.5", now, max),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now, max),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now, max),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now, max),
            Some(max)
        );
        assert_eq!(parse_retry_after("soon", now, max), None);
        assert_eq!(parse_retry_after("-3", now, max), None);
    }

    #[test]
    fn the_quota_runs_out_in_a_brown_out_and_refills_on_success() {
        let q = RetryQuota::new(RetryConfig {
            quota_tokens: 20,
            ..Default::default()
        });
        let p1 = q.try_acquire(false).unwrap();
        let _p2 = q.try_acquire(true).unwrap();
        assert_eq!(q.available(), 5);
        assert!(q.try_acquire(true).is_none());
        q.on_success(Some(p1));
        assert_eq!(q.available(), 10);
        q.on_success(None);
        assert_eq!(q.available(), 11);
        for _ in 0..100 {
            q.on_success(None);
        }
        assert_eq!(q.available(), 20);
    }
}
