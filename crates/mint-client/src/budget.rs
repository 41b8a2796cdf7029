//! The weighted request budget: every request asks it for units before it is sent.
//!
//! Mint allows about 100 rate units per minute per API client (a result file costs 5) and an
//! undocumented burst (modelled as 20 units per second). A 429 costs a retry and, during peak traffic,
//! lost onboardings, so the client keeps its own sliding-window log and waits *before* sending.
//!
//! * [`Budget`] is the object-safe trait (boxed futures) the client talks to, so a shared (Redis)
//!   implementation can replace [`LocalBudget`] when several replicas share one API client.
//! * [`WindowBudget`] is the pure core: time is an argument, so its guarantees are property-tested.
//! * [`LocalBudget`] wraps the core for one process: waiters queue by [`Priority`], then arrival.
//!
//! Architecture invariant: the units admitted in any window of `window` length never exceed
//! `limit_units`, and in any window of `burst_window` length never exceed `burst_units`, whatever the
//! costs, refunds and 429s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// A boxed, sendable future, as the object-safe [`Budget`] trait returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who is asking. When units are scarce, higher priorities go first: an operator's call before a
/// webhook-triggered download before background polling. Within a class, first come first served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background polling and reconciliation (lowest).
    Background,
    /// Work triggered by a webhook.
    Webhook,
    /// A person is waiting (highest, default).
    #[default]
    Interactive,
}

/// How the budget reacts to 429s.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Whether a 429 lowers the effective limit at all.
    pub enabled: bool,
    /// On a 429, the effective limit becomes `min(effective, used in window) × decrease_factor`.
    pub decrease_factor: f64,
    /// The effective limit never drops below this (at least the largest single cost).
    pub min_limit_units: u32,
    /// Pause for everyone after a 429 without `Retry-After`.
    pub default_pause: Duration,
    /// After a quiet `recovery_interval`, the effective limit grows by `recovery_step_units`.
    pub recovery_interval: Duration,
    /// See `recovery_interval`.
    pub recovery_step_units: u32,
    /// After a 429, recovery stops at 90 % of the units that were in use when it came (the rate the
    /// server refused) until this long passes without another 429; then it probes upward again.
    pub ceiling_memory: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            decrease_factor: 0.5,
            min_limit_units: 5,
            default_pause: Duration::from_secs(2),
            recovery_interval: Duration::from_secs(15),
            recovery_step_units: 9,
            ceiling_memory: Duration::from_secs(300),
        }
    }
}

/// The budget's configuration.
///
/// The defaults are 90 units per 60 s and 18 units per second: 10 % under Mint's reported 100/min and
/// modelled 20/s. The server counts a request when it *arrives* and its window is exact, while this
/// budget counts it when it is *sent*; latency jitter can pack requests sent just over a window apart
/// into one server window, and other tools (a `doctor` run, a second process) may spend units of the
/// same API client. 10 % absorbs both; set `limit_units: 100` if you own the API client alone and
/// accept the odd 429 (which is retried and lowers the effective limit anyway).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Units admitted per `window`.
    pub limit_units: u32,
    /// The long sliding window.
    pub window: Duration,
    /// Units admitted per `burst_window`.
    pub burst_units: u32,
    /// The short sliding window.
    pub burst_window: Duration,
    /// Cost of an ordinary call.
    pub request_units: u32,
    /// Cost of a result-file download (each attempt).
    pub result_file_units: u32,
    /// Give up (not sent) rather than wait longer than this for units; `None` waits as long as needed.
    pub max_wait: Option<Duration>,
    /// Reaction to 429s.
    pub adaptive: AdaptiveConfig,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            limit_units: 90,
            window: Duration::from_secs(60),
            burst_units: 18,
            burst_window: Duration::from_secs(1),
            request_units: 1,
            result_file_units: 5,
            max_wait: None,
            adaptive: AdaptiveConfig::default(),
        }
    }
}

/// The budget's state, for metrics and `doctor`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSnapshot {
    /// Configured units per window.
    pub limit_units: u32,
    /// Currently admitted units per window (lower after 429s).
    pub effective_limit_units: u32,
    /// Units spent in the current window.
    pub used_units: u32,
    /// `effective_limit_units - used_units`.
    pub remaining_units: u32,
    /// Currently admitted units per burst window.
    pub burst_limit_units: u32,
    /// Units spent in the current burst window.
    pub burst_used_units: u32,
    /// Requests waiting for units.
    pub waiting: usize,
    /// Remaining pause after a 429, if any.
    pub paused_for: Option<Duration>,
    /// 429s reported since start.
    pub throttled_total: u64,
    /// The window length.
    pub window: Duration,
}

/// Why the budget refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The request costs more than the budget can ever admit at once.
    #[error("a request of {units} units can never fit (burst {burst_units}, limit {limit_units})")]
    TooLarge {
        /// Cost asked for.
        units: u32,
        /// Burst limit.
        burst_units: u32,
        /// Window limit.
        limit_units: u32,
    },
    /// Waiting for units would take longer than `max_wait`.
    #[error("units would be available only in {0:?}, beyond max_wait")]
    WouldWait(Duration),
    /// The budget backend failed (e.g. Redis unreachable).
    #[error("budget backend unavailable: {0}")]
    Unavailable(String),
}

/// A request budget shared by every call of a client (and, for a shared implementation, by replicas).
///
/// Object-safe: methods return boxed futures so `Arc<dyn Budget>` works.
pub trait Budget: Send + Sync + fmt::Debug + 'static {
    /// Waits until `units` may be spent, then records them. Dropping the future gives up the place in
    /// the queue.
    fn acquire(&self, units: u32, priority: Priority) -> BoxFuture<'_, Result<(), BudgetError>>;
    /// Gives back units the server did not count (a 429 or 401 answer consumes none).
    fn refund(&self, units: u32) -> BoxFuture<'_, ()>;
    /// Reports a 429: slow down for everyone (pause, then a lower effective limit that recovers).
    fn on_throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()>;
    /// The current state.
    fn snapshot(&self) -> BoxFuture<'_, BudgetSnapshot>;
}

/// The answer of [`WindowBudget::try_acquire`] when it does not admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Try again at this time (same time base as the `now` passed in).
    WaitUntil(Duration),
    /// Never admissible.
    TooLarge(BudgetError),
}

/// The pure sliding-window-log budget. Time is an input (`now`, any monotonic `Duration` base).
#[derive(Debug, Clone)]
pub struct WindowBudget {
    cfg: BudgetConfig,
    log: VecDeque<(Duration, u32)>,
    used: u32,
    effective: f64,
    ceiling: Option<(f64, Duration)>,
    paused_until: Duration,
    last_decrease: Option<Duration>,
    last_change: Duration,
    throttled: u64,
}

impl WindowBudget {
    /// A budget with nothing spent.
    pub fn new(cfg: BudgetConfig) -> Self {
        Self {
            effective: f64::from(cfg.limit_units),
            cfg,
            log: VecDeque::new(),
            used: 0,
            ceiling: None,
            paused_until: Duration::ZERO,
            last_decrease: None,
            last_change: Duration::ZERO,
            throttled: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    fn min_limit(&self) -> f64 {
        f64::from(
            self.cfg
                .adaptive
                .min_limit_units
                .max(self.cfg.result_file_units)
                .min(self.cfg.limit_units),
        )
    }

    fn effective_limit(&self) -> u32 {
        (self.effective.floor() as u32).clamp(1, self.cfg.limit_units.max(1))
    }

    fn effective_burst(&self) -> u32 {
        let limit = f64::from(self.cfg.limit_units.max(1));
        let scaled = (f64::from(self.cfg.burst_units) * self.effective / limit).floor() as u32;
        let floor = self.cfg.result_file_units.max(self.cfg.request_units);
        scaled.max(floor).min(self.cfg.burst_units)
    }

    fn prune(&mut self, now: Duration) {
        while let Some(&(at, units)) = self.log.front() {
            if at + self.cfg.window <= now {
                self.log.pop_front();
                self.used -= units;
            } else {
                break;
            }
        }
    }

    fn recover(&mut self, now: Duration) {
        let a = &self.cfg.adaptive;
        if let Some((_, set_at)) = self.ceiling
            && now.saturating_sub(set_at) >= a.ceiling_memory
        {
            self.ceiling = None;
        }
        let limit = f64::from(self.cfg.limit_units);
        if self.effective >= limit || a.recovery_interval.is_zero() {
            self.last_change = now;
            return;
        }
        let target = match self.ceiling {
            Some((c, _)) => (c * 0.9).max(self.min_limit()).min(limit),
            None => limit,
        };
        let elapsed = now.saturating_sub(self.last_change);
        let steps = (elapsed.as_nanos() / a.recovery_interval.as_nanos()) as u32;
        if steps > 0 {
            if self.effective < target {
                let grown = self.effective + f64::from(steps) * f64::from(a.recovery_step_units);
                self.effective = grown.min(target);
            }
            self.last_change += a.recovery_interval * steps;
        }
    }

    /// Admits `units` at `now` (recording them) or says when to try again.
    pub fn try_acquire(&mut self, now: Duration, units: u32) -> Result<(), Refusal> {
        if units > self.cfg.burst_units || units > self.cfg.limit_units || units == 0 {
            return Err(Refusal::TooLarge(BudgetError::TooLarge {
                units,
                burst_units: self.cfg.burst_units,
                limit_units: self.cfg.limit_units,
            }));
        }
        self.recover(now);
        self.prune(now);
        if now < self.paused_until {
            return Err(Refusal::WaitUntil(self.paused_until));
        }
        let mut wait_until = None::<Duration>;
        // A request larger than a lowered limit may still go once the window has room for it alone.
        let limit = self.effective_limit().max(units);
        if self.used + units > limit {
            // The earliest time enough old entries leave the window.
            let mut freed = 0;
            for &(at, u) in &self.log {
                freed += u;
                if self.used - freed + units <= limit {
                    wait_until = Some(at + self.cfg.window);
                    break;
                }
            }
        }
        let burst = self.effective_burst().max(units);
        let in_burst = |at: Duration| at + self.cfg.burst_window > now;
        let burst_used: u32 = self
            .log
            .iter()
            .filter(|(at, _)| in_burst(*at))
            .map(|(_, u)| u)
            .sum();
        if burst_used + units > burst {
            let mut freed = 0;
            for &(at, u) in self.log.iter().filter(|(at, _)| in_burst(*at)) {
                freed += u;
                if burst_used - freed + units <= burst {
                    let t = at + self.cfg.burst_window;
                    wait_until = Some(wait_until.map_or(t, |w| w.max(t)));
                    break;
                }
            }
        }
        if let Some(t) = wait_until {
            return Err(Refusal::WaitUntil(t.max(now + Duration::from_nanos(1))));
        }
        self.log.push_back((now, units));
        self.used += units;
        Ok(())
    }

    /// Removes the most recent record of `units` (the server did not count that request).
    pub fn refund(&mut self, units: u32) {
        if let Some(pos) = self.log.iter().rposition(|&(_, u)| u == units) {
            self.log.remove(pos);
            self.used -= units;
        }
    }

    /// Reports a 429 at `now`.
    pub fn on_throttled(&mut self, now: Duration, retry_after: Option<Duration>) {
        self.throttled += 1;
        self.prune(now);
        let a = self.cfg.adaptive.clone();
        let pause = retry_after.unwrap_or(a.default_pause);
        self.paused_until = self.paused_until.max(now + pause);
        if !a.enabled {
            return;
        }
        // One decrease per congestion event: 429s of requests already in flight when the first one
        // came say nothing new.
        let cooldown = pause.max(self.cfg.burst_window);
        if let Some(t) = self.last_decrease
            && now < t + cooldown
        {
            return;
        }
        self.last_decrease = Some(now);
        let used = f64::from(self.used);
        self.ceiling = Some((used.max(self.min_limit()), now));
        self.effective = (self.effective.min(used) * a.decrease_factor).max(self.min_limit());
        self.last_change = now;
    }

    /// The state at `now`.
    pub fn snapshot(&mut self, now: Duration, waiting: usize) -> BudgetSnapshot {
        self.recover(now);
        self.prune(now);
        let burst_used = self
            .log
            .iter()
            .filter(|(at, _)| *at + self.cfg.burst_window > now)
            .map(|(_, u)| u)
            .sum();
        let limit = self.effective_limit();
        BudgetSnapshot {
            limit_units: self.cfg.limit_units,
            effective_limit_units: limit,
            used_units: self.used,
            remaining_units: limit.saturating_sub(self.used),
            burst_limit_units: self.effective_burst(),
            burst_used_units: burst_used,
            waiting,
            paused_for: (self.paused_until > now).then(|| self.paused_until - now),
            throttled_total: self.throttled,
            window: self.cfg.window,
        }
    }
}

/// The in-process [`Budget`]: a [`WindowBudget`] on tokio's clock with a priority queue of waiters.
pub struct LocalBudget {
    state: Mutex<State>,
    notify: Notify,
    epoch: tokio::time::Instant,
}

struct State {
    core: WindowBudget,
    waiters: BTreeMap<(Reverse<Priority>, u64), u32>,
    next_seq: u64,
}

impl fmt::Debug for LocalBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock().unwrap();
        f.debug_struct("LocalBudget")
            .field("config", st.core.config())
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

impl LocalBudget {
    /// A fresh budget.
    pub fn new(cfg: BudgetConfig) -> Self {
        Self {
            state: Mutex::new(State {
                core: WindowBudget::new(cfg),
                waiters: BTreeMap::new(),
                next_seq: 0,
            }),
            notify: Notify::new(),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn acquire_inner(&self, units: u32, priority: Priority) -> Result<(), BudgetError> {
        let key = {
            let mut st = self.state.lock().unwrap();
            st.next_seq += 1;
            (Reverse(priority), st.next_seq)
        };
        let mut guard = QueueGuard {
            budget: self,
            key,
            registered: false,
        };
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut st = self.state.lock().unwrap();
                let is_head = match st.waiters.first_key_value() {
                    None => true,
                    Some((first, _)) if guard.registered => *first == key,
                    Some((first, _)) => *first > key,
                };
                let mut deadline = None;
                if is_head {
                    let now = self.now();
                    match st.core.try_acquire(now, units) {
                        Ok(()) => {
                            if guard.registered {
                                st.waiters.remove(&key);
                                guard.registered = false;
                                drop(st);
                                // The next waiter is now at the head.
                                self.notify.notify_waiters();
                            }
                            return Ok(());
                        }
                        Err(Refusal::TooLarge(e)) => return Err(e),
                        Err(Refusal::WaitUntil(t)) => {
                            if let Some(max) = st.core.config().max_wait
                                && t - now > max
                            {
                                return Err(BudgetError::WouldWait(t - now));
                            }
                            deadline = Some(t);
                        }
                    }
                }
                if !guard.registered {
                    st.waiters.insert(key, units);
                    guard.registered = true;
                }
                deadline
            };
            match deadline {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(self.epoch + t) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// Removes a cancelled waiter from the queue.
struct QueueGuard<'a> {
    budget: &'a LocalBudget,
    key: (Reverse<Priority>, u64),
    registered: bool,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.budget.state.lock().unwrap().waiters.remove(&self.key);
            self.budget.notify.notify_waiters();
        }
    }
}

impl Budget for LocalBudget {
    fn acquire(&self, units: u32, priority: Priority) -> BoxFuture<'_, Result<(), BudgetError>> {
        Box::pin(self.acquire_inner(units, priority))
    }

    fn refund(&self, units: u32) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap().core.refund(units);
        self.notify.notify_waiters();
        Box::pin(std::future::ready(()))
    }

    fn on_throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        let now = self.now();
        self.state
            .lock()
            .unwrap()
            .core
            .on_throttled(now, retry_after);
        self.notify.notify_waiters();
        Box::pin(std::future::ready(()))
    }

    fn snapshot(&self) -> BoxFuture<'_, BudgetSnapshot> {
        let now = self.now();
        let mut st = self.state.lock().unwrap();
        let waiting = st.waiters.len();
        let snap = st.core.snapshot(now, waiting);
        Box::pin(std::future::ready(snap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn small() -> BudgetConfig {
        BudgetConfig {
            limit_units: 10,
            window: secs(10.0),
            burst_units: 6,
            burst_window: secs(1.0),
            ..Default::default()
        }
    }

    #[test]
    fn admits_up_to_the_burst_then_says_when() {
        let mut b = WindowBudget::new(small());
        for _ in 0..6 {
            b.try_acquire(secs(0.0), 1).unwrap();
        }
        assert_eq!(
            b.try_acquire(secs(0.5), 1),
            Err(Refusal::WaitUntil(secs(1.0)))
        );
        b.try_acquire(secs(1.0), 4).unwrap();
        // 10 units in the window now: next unit when the first entries (t=0) leave, at t=10.
        assert_eq!(
            b.try_acquire(secs(5.0), 1),
            Err(Refusal::WaitUntil(secs(10.0)))
        );
        b.try_acquire(secs(10.0), 5).unwrap();
    }

    #[test]
    fn a_request_larger_than_the_burst_is_refused_outright() {
        let mut b = WindowBudget::new(small());
        assert!(matches!(
            b.try_acquire(secs(0.0), 7),
            Err(Refusal::TooLarge(_))
        ));
    }

    #[test]
    fn refund_gives_units_back() {
        let mut b = WindowBudget::new(small());
        for _ in 0..6 {
            b.try_acquire(secs(0.0), 1).unwrap();
        }
        b.refund(1);
        b.try_acquire(secs(0.0), 1).unwrap();
    }

    #[test]
    fn a_429_pauses_everyone_then_lowers_the_limit_and_recovers_additively() {
        let cfg = BudgetConfig {
            limit_units: 100,
            window: secs(60.0),
            burst_units: 20,
            adaptive: AdaptiveConfig {
                recovery_interval: secs(10.0),
                recovery_step_units: 10,
                ceiling_memory: secs(1000.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut b = WindowBudget::new(cfg);
        for i in 0..40 {
            b.try_acquire(secs(f64::from(i) * 0.1), 1).unwrap();
        }
        b.on_throttled(secs(4.0), Some(secs(3.0)));
        assert_eq!(
            b.try_acquire(secs(5.0), 1),
            Err(Refusal::WaitUntil(secs(7.0)))
        );
        // A second 429 from a request already in flight does not halve again.
        b.on_throttled(secs(4.5), None);
        let s = b.snapshot(secs(7.0), 0);
        assert_eq!(s.effective_limit_units, 20, "min(100, 40 used) × 0.5");
        assert_eq!(s.throttled_total, 2);
        // Recovery stops at 90 % of the refused rate (40 → 36) while the ceiling is remembered.
        assert_eq!(b.snapshot(secs(14.0), 0).effective_limit_units, 30);
        assert_eq!(b.snapshot(secs(200.0), 0).effective_limit_units, 36);
    }

    #[test]
    fn the_ceiling_is_forgotten_and_the_limit_returns_to_the_configured_one() {
        let mut b = WindowBudget::new(BudgetConfig::default());
        b.try_acquire(secs(0.0), 5).unwrap();
        b.on_throttled(secs(0.0), None);
        assert_eq!(b.snapshot(secs(1.0), 0).effective_limit_units, 5);
        assert_eq!(b.snapshot(secs(10_000.0), 0).effective_limit_units, 90);
    }

    /// Checks every window of the admitted log against a limit.
    fn max_in_any_window(log: &[(Duration, u32)], window: Duration) -> u32 {
        let mut best = 0;
        for (i, &(start, _)) in log.iter().enumerate() {
            let sum: u32 = log[i..]
                .iter()
                .take_while(|(at, _)| *at < start + window)
                .map(|(_, u)| u)
                .sum();
            best = best.max(sum);
        }
        best
    }

    #[derive(Debug, Clone)]
    enum Step {
        Ask { gap_ms: u64, units: u32 },
        Refund,
        Throttled { retry_after_ms: Option<u64> },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u64..3000, prop_oneof![4 => Just(1u32), 1 => Just(5u32), 1 => 1u32..8])
                .prop_map(|(gap_ms, units)| Step::Ask { gap_ms, units }),
            1 => Just(Step::Refund),
            1 => proptest::option::of(0u64..5000).prop_map(|retry_after_ms| Step::Throttled { retry_after_ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The invariant: whatever the costs, timing, refunds and 429s, no window of either length
        /// ever holds more admitted units than its limit.
        #[test]
        fn never_more_than_the_limit_in_any_window(
            limit in 5u32..120,
            burst in 5u32..25,
            window_ms in 1000u64..60_000,
            steps in proptest::collection::vec(step(), 1..400),
        ) {
            let cfg = BudgetConfig {
                limit_units: limit,
                window: Duration::from_millis(window_ms),
                burst_units: burst.min(limit),
                burst_window: Duration::from_millis(1000),
                ..Default::default()
            };
            let mut b = WindowBudget::new(cfg.clone());
            let mut now = Duration::ZERO;
            let mut admitted: Vec<(Duration, u32)> = vec![];
            for s in steps {
                match s {
                    Step::Ask { gap_ms, units } => {
                        now += Duration::from_millis(gap_ms);
                        // Wait as the async wrapper would, until admitted or refused for good.
                        loop {
                            match b.try_acquire(now, units) {
                                Ok(()) => { admitted.push((now, units)); break; }
                                Err(Refusal::WaitUntil(t)) => { prop_assert!(t > now); now = t; }
                                Err(Refusal::TooLarge(_)) => {
                                    prop_assert!(units > cfg.burst_units); break;
                                }
                            }
                        }
                    }
                    Step::Refund => {
                        if let Some(&(_, u)) = admitted.last() {
                            b.refund(u);
                            // refund removes the most recent entry with that cost
                            let pos = admitted.iter().rposition(|&(_, x)| x == u).unwrap();
                            admitted.remove(pos);
                        }
                    }
                    Step::Throttled { retry_after_ms } => {
                        b.on_throttled(now, retry_after_ms.map(Duration::from_millis));
                    }
                }
            }
            prop_assert!(max_in_any_window(&admitted, cfg.window) <= cfg.limit_units);
            prop_assert!(max_in_any_window(&admitted, cfg.burst_window) <= cfg.burst_units);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_waiters_go_first() {
        let cfg = BudgetConfig {
            limit_units: 100,
            burst_units: 2,
            ..Default::default()
        };
        let budget = Arc::new(LocalBudget::new(cfg));
        budget.acquire(2, Priority::Interactive).await.unwrap();
        let order = Arc::new(Mutex::new(vec![]));
        let mut tasks = vec![];
        for (name, prio) in [
            ("bg1", Priority::Background),
            ("bg2", Priority::Background),
            ("hook", Priority::Webhook),
            ("op", Priority::Interactive),
        ] {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                budget.acquire(2, prio).await.unwrap();
                order.lock().unwrap().push(name);
            }));
            // Let each task queue up in turn.
            tokio::task::yield_now().await;
        }
        assert_eq!(budget.snapshot().await.waiting, 4);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["op", "hook", "bg1", "bg2"]);
        assert_eq!(
            tokio::time::Instant::now() - budget.epoch,
            Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let cfg = BudgetConfig {
            burst_units: 5,
            ..Default::default()
        };
        let budget = Arc::new(LocalBudget::new(cfg));
        budget.acquire(5, Priority::Background).await.unwrap();
        let waiting =
            tokio::time::timeout(secs(0.5), budget.acquire(5, Priority::Interactive)).await;
        assert!(waiting.is_err());
        assert_eq!(budget.snapshot().await.waiting, 0);
        budget.acquire(5, Priority::Background).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_turns_a_long_wait_into_an_error() {
        let cfg = BudgetConfig {
            limit_units: 5,
            max_wait: Some(secs(1.0)),
            ..Default::default()
        };
        let budget = LocalBudget::new(cfg);
        budget.acquire(5, Priority::Background).await.unwrap();
        let err = budget.acquire(1, Priority::Interactive).await.unwrap_err();
        assert!(matches!(err, BudgetError::WouldWait(_)), "{err}");
    }
}
