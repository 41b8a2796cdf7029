//! Behaviour 6: the limiter never admits more than its limit in any window, with mixed costs.

use mint_sim::limiter::RateLimiter;
use proptest::prelude::*;

proptest! {
    #[test]
    fn never_admits_more_than_its_limit_in_any_window(
        window_ms in 1i64..5_000,
        window_units in 1u64..60,
        burst_ms in 1i64..1_000,
        burst_units in 1u64..25,
        requests in prop::collection::vec((0i64..300, 1u64..8), 1..300),
    ) {
        let mut limiter = RateLimiter::new(window_ms * 1000, window_units, burst_ms * 1000, burst_units);
        let mut now = 0;
        let mut admitted = Vec::new();
        for (gap_ms, cost) in requests {
            now += gap_ms * 1000;
            if limiter.try_admit(now, cost).is_ok() {
                admitted.push((now, cost));
            }
        }
        // Any window [s, s + len) holding admissions can be slid to start at one of them.
        for (len_ms, limit) in [(window_ms, window_units), (burst_ms, burst_units)] {
            for &(start, _) in &admitted {
                let end = start + len_ms * 1000;
                let used: u64 = admitted
                    .iter()
                    .filter(|(at, _)| *at >= start && *at < end)
                    .map(|(_, cost)| cost)
                    .sum();
                prop_assert!(used <= limit, "{used} units in [{start}, {end}) over {limit}");
            }
        }
    }

    #[test]
    fn a_refusal_names_exactly_when_the_request_would_fit(
        requests in prop::collection::vec((0i64..200, 1u64..6), 1..200),
        cost in 1u64..6,
    ) {
        let mut limiter = RateLimiter::new(2_000_000, 30, 500_000, 10);
        let mut now = 0;
        for (gap_ms, c) in requests {
            now += gap_ms * 1000;
            let _ = limiter.try_admit(now, c);
        }
        match limiter.clone().try_admit(now, cost) {
            Ok(()) => {}
            Err(None) => prop_assert!(false, "cost {cost} fits both limits eventually"),
            Err(Some(wait)) => {
                prop_assert!(wait > 0);
                prop_assert!(limiter.clone().try_admit(now + wait - 1, cost).is_err());
                prop_assert!(limiter.clone().try_admit(now + wait, cost).is_ok());
            }
        }
    }
}
