//! The per-client rate limiter: a weighted sliding log, exact "in any window".
//!
//! A fixed bucket would let a client spend twice its budget across a bucket edge; the real service's
//! limits are described as "N per window", so the simulator admits a request only if the units
//! admitted in the window ending now, plus its cost, stay within the limit. Checking the window that
//! ends at every admission is enough for every window: the last admission inside any window saw all
//! the earlier ones of that window.

use std::collections::VecDeque;

/// At most `limit_units` units in any half-open window of `window_micros` microseconds.
#[derive(Debug, Clone)]
pub struct SlidingLog {
    window_micros: i64,
    limit_units: u64,
    log: VecDeque<(i64, u64)>,
    sum_units: u64,
}

impl SlidingLog {
    /// A log that admits `limit_units` units per window of `window_micros` microseconds.
    pub fn new(window_micros: i64, limit_units: u64) -> Self {
        Self {
            window_micros: window_micros.max(1),
            limit_units,
            log: VecDeque::new(),
            sum_units: 0,
        }
    }

    fn evict(&mut self, now_micros: i64) {
        while let Some(&(at, units)) = self.log.front() {
            if at > now_micros - self.window_micros {
                break;
            }
            self.sum_units -= units;
            self.log.pop_front();
        }
    }

    /// Units admitted in the window that ends at `now_micros`.
    pub fn used(&mut self, now_micros: i64) -> u64 {
        self.evict(now_micros);
        self.sum_units
    }

    /// Whether `cost_units` more fit in the window ending at `now_micros`.
    pub fn fits(&mut self, now_micros: i64, cost_units: u64) -> bool {
        self.used(now_micros) + cost_units <= self.limit_units
    }

    /// Records an admission (call only after `fits`).
    pub fn record(&mut self, now_micros: i64, cost_units: u64) {
        self.sum_units += cost_units;
        match self.log.back_mut() {
            // Same instant (a frozen clock, or a burst): one entry, so the log stays short.
            Some((at, units)) if *at == now_micros => *units += cost_units,
            _ if cost_units == 0 => {}
            _ => self.log.push_back((now_micros, cost_units)),
        }
    }

    /// Microseconds until `cost_units` would fit; `None` if they never can (cost above the limit).
    pub fn wait_micros(&mut self, now_micros: i64, cost_units: u64) -> Option<i64> {
        if cost_units > self.limit_units {
            return None;
        }
        let used = self.used(now_micros);
        if used + cost_units <= self.limit_units {
            return Some(0);
        }
        let mut excess = used + cost_units - self.limit_units;
        for &(at, units) in &self.log {
            excess = excess.saturating_sub(units);
            if excess == 0 {
                return Some(at + self.window_micros - now_micros);
            }
        }
        Some(self.window_micros)
    }
}

/// The two rules of one API client: the main window and the burst window.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    window: SlidingLog,
    burst: SlidingLog,
}

impl RateLimiter {
    /// A limiter with a main window and a burst window (both in microseconds).
    pub fn new(window_micros: i64, window_units: u64, burst_micros: i64, burst_units: u64) -> Self {
        Self {
            window: SlidingLog::new(window_micros, window_units),
            burst: SlidingLog::new(burst_micros, burst_units),
        }
    }

    /// Admits `cost_units` at `now_micros` if both rules allow it. A refusal records nothing and
    /// returns the microseconds until the request would fit (`None` if never).
    pub fn try_admit(&mut self, now_micros: i64, cost_units: u64) -> Result<(), Option<i64>> {
        if self.window.fits(now_micros, cost_units) && self.burst.fits(now_micros, cost_units) {
            self.window.record(now_micros, cost_units);
            self.burst.record(now_micros, cost_units);
            return Ok(());
        }
        let window = self.window.wait_micros(now_micros, cost_units);
        let burst = self.burst.wait_micros(now_micros, cost_units);
        Err(match (window, burst) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_says_when_the_oldest_units_leave_the_window() {
        let mut limiter = RateLimiter::new(60_000_000, 10, 1_000_000, 10);
        for t in 0..10 {
            assert!(limiter.try_admit(t * 2_000_000, 1).is_ok());
        }
        // Full at t=20 s; the first unit (t=0) leaves the window at t=60 s.
        assert_eq!(limiter.try_admit(20_000_000, 1), Err(Some(40_000_000)));
        assert!(limiter.try_admit(60_000_000, 1).is_ok());
        assert_eq!(limiter.try_admit(60_000_001, 11), Err(None));
    }
}
