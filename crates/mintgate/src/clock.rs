//! Time as an input: the service reads the time and sleeps through one [`Clock`].
//!
//! In production the clock is the system clock. The demo runs it faster (in step with a time-scaled
//! simulator) and tests advance it, so that 30-second polls, leases and 30-day deadlines are
//! exercised in milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// A clock that may run faster than real time and may be moved forward.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    origin_real: Instant,
    origin_time: DateTime<Utc>,
    scale: f64,
    offset_ms: AtomicI64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::scaled(Utc::now(), 1.0)
    }

    /// A clock that starts at `start` and runs `scale` times faster than real time.
    pub fn scaled(start: DateTime<Utc>, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Self {
            inner: Arc::new(Inner {
                origin_real: Instant::now(),
                origin_time: start,
                scale,
                offset_ms: AtomicI64::new(0),
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.inner.origin_real.elapsed().as_secs_f64() * self.inner.scale;
        let elapsed_ms = (elapsed * 1000.0) as i64 + self.inner.offset_ms.load(Ordering::Relaxed);
        self.inner.origin_time + TimeDelta::milliseconds(elapsed_ms)
    }

    /// Moves the clock forward (tests and the demo).
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.inner.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }

    /// How fast this clock runs compared to real time.
    pub fn scale(&self) -> f64 {
        self.inner.scale
    }

    /// The real time it takes this clock to move by `clock_time`.
    pub fn real(&self, clock_time: Duration) -> Duration {
        clock_time.div_f64(self.inner.scale)
    }

    /// How far this clock moves in `real` time (the inverse of [`Clock::real`]).
    pub fn clock_time(&self, real: Duration) -> Duration {
        real.mul_f64(self.inner.scale)
    }

    /// Sleeps until the clock shows `at` (or a little past it), or at most `cap` of real time: a
    /// clock advanced meanwhile is noticed at the next wake-up.
    pub async fn sleep_until(&self, at: DateTime<Utc>, cap: Duration) {
        let wait = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(self.real(wait).min(cap)).await;
    }
}

/// A `chrono` span from a `std` duration, saturating.
pub fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let start = Utc::now();
        let clock = Clock::scaled(start, 1.0);
        clock.advance(Duration::from_secs(3600));
        let now = clock.now();
        assert!(now - start >= TimeDelta::seconds(3600));
        assert!(now - start < TimeDelta::seconds(3610));
    }

    #[test]
    fn a_fast_clock_shortens_real_waits() {
        let clock = Clock::scaled(Utc::now(), 60.0);
        assert_eq!(clock.real(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
