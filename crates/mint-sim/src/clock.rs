//! The simulator's controllable clock: real time times a scale, plus manual advances.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Simulated wall-clock time. Everything in the simulator (tokens, rate windows, steps, retention)
/// reads it; `advance` moves it forward and `set_scale` changes how fast it follows real time
/// (0 freezes it, so only `advance` moves it).
#[derive(Debug)]
pub struct Clock {
    state: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    real: Instant,
    sim: DateTime<Utc>,
    scale: f64,
}

impl Anchor {
    fn now(&self) -> DateTime<Utc> {
        let elapsed_micros = self.real.elapsed().as_secs_f64() * self.scale * 1e6;
        self.sim + chrono::Duration::microseconds(elapsed_micros as i64)
    }
}

impl Clock {
    /// A clock that starts at `start` and runs `scale` simulated seconds per real second.
    pub fn new(start: DateTime<Utc>, scale: f64) -> Self {
        Self {
            state: Mutex::new(Anchor {
                real: Instant::now(),
                sim: start,
                scale,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Anchor> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current simulated time.
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    /// Moves simulated time forward by `by`; returns the new time.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut anchor = self.lock();
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let now = anchor.now();
        anchor.sim = now.checked_add_signed(by).unwrap_or(now);
        anchor.real = Instant::now();
        anchor.sim
    }

    /// Simulated seconds per real second.
    pub fn scale(&self) -> f64 {
        self.lock().scale
    }

    /// Changes the time scale from now on.
    pub fn set_scale(&self, scale: f64) {
        let mut anchor = self.lock();
        anchor.sim = anchor.now();
        anchor.real = Instant::now();
        anchor.scale = scale;
    }

    /// Real time until simulated time reaches `at`; `None` when it never will on its own (scale 0).
    pub fn real_until(&self, at: DateTime<Utc>) -> Option<Duration> {
        let anchor = *self.lock();
        let ahead = (at - anchor.now()).to_std().unwrap_or(Duration::ZERO);
        if ahead.is_zero() {
            return Some(Duration::ZERO);
        }
        if anchor.scale <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(
            (ahead.as_secs_f64() / anchor.scale).min(86_400.0),
        ))
    }
}

/// Microseconds since the Unix epoch, the unit of the rate limiter's logs.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_advanced() {
        let start = Utc::now();
        let clock = Clock::new(start, 0.0);
        assert_eq!(clock.now(), start);
        let later = clock.advance(Duration::from_secs(600));
        assert_eq!(later - start, chrono::Duration::seconds(600));
        assert_eq!(clock.real_until(later + chrono::Duration::seconds(1)), None);
        assert_eq!(clock.real_until(start), Some(Duration::ZERO));
    }

    #[test]
    fn scaled_clock_converts_simulated_waits_to_real_ones() {
        let clock = Clock::new(Utc::now(), 60.0);
        let before = Instant::now();
        let wait = clock
            .real_until(clock.now() + chrono::Duration::seconds(60))
            .unwrap();
        // The clock ran on between `now` and `real_until`, by at most `elapsed` of real time.
        let elapsed = before.elapsed();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            wait + elapsed + Duration::from_millis(1) >= Duration::from_secs(1),
            "{wait:?} after {elapsed:?}"
        );
    }
}
