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
//! Architecture invariant: the units of requests that *reach the server* in any window of `window`
//! length never exceed `limit_units` (and `burst_units` per `burst_window`), whatever the costs,
//! latencies, refunds and 429s. The server counts a request when it arrives, somewhere between the
//! moment the client admitted it and the moment its answer came back; so an admitted request counts
//! here from admission until `window` after its answer (in flight: indefinitely). Counting from
//! admission to admission + `window` would let latency jitter pack more than the limit into one
//! server window.

use std::cmp::Reverse;
use std::collections::BTreeMap;
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
///
/// A 429 does not say which server window was exceeded, so the budget guesses from its own log: the
/// long window is lowered only when the client was using at least half of it or it holds at least
/// twice the current burst (otherwise a burst, a storm or an overload is the likelier cause, and
/// only the burst limit is lowered). Each lowered
/// limit becomes `min(limit, units in use) × decrease_factor`, then grows back by
/// `recovery_step_fraction` of the configured limit per quiet `recovery_interval`, up to 90 % of the
/// units that were in use when the 429 came (the rate the server refused) for `ceiling_memory`, and
/// to the configured limit after that.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Whether a 429 lowers the limits at all (the pause applies regardless).
    pub enabled: bool,
    /// Multiplicative decrease.
    pub decrease_factor: f64,
    /// The long-window limit never drops below this (nor below the largest single cost).
    pub min_limit_units: u32,
    /// Pause for everyone after a 429 without `Retry-After`; doubled for each 429 that follows the
    /// end of the previous pause (a storm), up to `max_pause`.
    pub default_pause: Duration,
    /// Cap of the growing pause.
    pub max_pause: Duration,
    /// Each pause (grown or from `Retry-After`) is lengthened by a random fraction of itself, up to
    /// this (default 0.2), so processes that met the same 429 do not resume in step.
    pub pause_jitter_fraction: f64,
    /// See the type's documentation.
    pub recovery_interval: Duration,
    /// See the type's documentation.
    pub recovery_step_fraction: f64,
    /// See the type's documentation.
    pub ceiling_memory: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            decrease_factor: 0.5,
            min_limit_units: 5,
            default_pause: Duration::from_secs(2),
            max_pause: Duration::from_secs(60),
            pause_jitter_fraction: 0.2,
            recovery_interval: Duration::from_secs(15),
            recovery_step_fraction: 0.1,
            ceiling_memory: Duration::from_secs(300),
        }
    }
}

/// The budget's configuration.
///
/// The defaults are 90 units per 60 s and 18 units per second: 10 % under Mint's reported 100/min and
/// modelled 20/s. Latency alone needs no headroom: a request counts here until a window after its
/// answer, which covers any arrival time at the server (see the module invariant). The headroom is
/// for what this process cannot see: other tools spending units of the same API client (a `doctor`
/// run, a second replica before a shared budget is configured, a person with curl), a server window
/// that is not exactly 60.000 s, and limits that are "about" 100. Set `limit_units: 100` if you own
/// the API client alone and accept the odd 429 (retried, and it lowers the effective limit anyway).
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

/// One admitted request, as the budget knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A request budget shared by every call of a client (and, for a shared implementation, by replicas).
///
/// Object-safe: methods return boxed futures so `Arc<dyn Budget>` works. The client calls
/// `acquire` before each request, then exactly one of `answered` (the server has seen it: an answer
/// or a failure after sending) or `refund` (the server did not count it: never sent, 401, 429).
pub trait Budget: Send + Sync + fmt::Debug + 'static {
    /// Waits until `units` may be spent, then records them. Dropping the future gives up the place in
    /// the queue.
    fn acquire(&self, units: u32, priority: Priority)
    -> BoxFuture<'_, Result<Ticket, BudgetError>>;
    /// The request's answer (or its failure) has arrived: it reached the server no later than now.
    fn answered(&self, ticket: Ticket) -> BoxFuture<'_, ()>;
    /// The server did not count this request (never sent, or answered 401 or 429).
    fn refund(&self, ticket: Ticket) -> BoxFuture<'_, ()>;
    /// Reports a 429: slow down for everyone (pause, then lower limits that recover).
    fn on_throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()>;
    /// The current state.
    fn snapshot(&self) -> BoxFuture<'_, BudgetSnapshot>;
    /// This process stops spending the budget for good (a graceful shutdown): a budget shared by
    /// several processes lets the others have its share at once. Nothing to do for a local one.
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The answer of [`WindowBudget::try_acquire`] when it does not admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Try again at this time (same time base as the `now` passed in), or when an answer arrives.
    WaitUntil(Duration),
    /// Never admissible.
    TooLarge(BudgetError),
}

/// One adaptive limit (the long window's or the burst window's).
#[derive(Debug, Clone)]
struct Adaptive {
    configured: f64,
    floor: f64,
    effective: f64,
    ceiling: Option<(f64, Duration)>,
    last_change: Duration,
}

impl Adaptive {
    fn new(configured: u32, floor: u32) -> Self {
        let configured = f64::from(configured);
        Self {
            configured,
            floor: f64::from(floor).min(configured),
            effective: configured,
            ceiling: None,
            last_change: Duration::ZERO,
        }
    }

    fn value(&self) -> u32 {
        (self.effective.floor() as u32).max(1)
    }

    fn recover(&mut self, now: Duration, a: &AdaptiveConfig) {
        if let Some((_, set_at)) = self.ceiling
            && now.saturating_sub(set_at) >= a.ceiling_memory
        {
            self.ceiling = None;
        }
        if self.effective >= self.configured || a.recovery_interval.is_zero() {
            self.last_change = now;
            return;
        }
        let target = match self.ceiling {
            Some((c, _)) => (c * 0.9).max(self.floor).min(self.configured),
            None => self.configured,
        };
        let elapsed = now.saturating_sub(self.last_change);
        let steps = (elapsed.as_nanos() / a.recovery_interval.as_nanos()) as u32;
        if steps > 0 {
            if self.effective < target {
                let step = (self.configured * a.recovery_step_fraction).max(1.0);
                self.effective = (self.effective + f64::from(steps) * step).min(target);
            }
            self.last_change += a.recovery_interval * steps;
        }
    }

    /// Lowers the limit to `min(limit, used) × factor`. Within one congestion event (`fresh` false)
    /// later 429s only refine it: requests in flight at the first 429 that came back 429 too were
    /// refunded meanwhile, so `used` is now closer to what the server accepted.
    fn decrease(&mut self, now: Duration, used: u32, fresh: bool, a: &AdaptiveConfig) {
        let used = f64::from(used);
        if used >= self.floor {
            self.ceiling = match self.ceiling {
                Some((c, at)) if !fresh => Some((c.min(used), at)),
                _ => Some((used, now)),
            };
        }
        let lowered = (used * a.decrease_factor).max(self.floor);
        if fresh {
            self.effective = (self.effective.min(used) * a.decrease_factor).max(self.floor);
            self.last_change = now;
        } else {
            self.effective = self.effective.min(lowered);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ticket: Ticket,
    units: u32,
    /// When the answer arrived; `None` while in flight.
    answered: Option<Duration>,
}

impl Entry {
    /// Whether this entry still counts at `now` in a window of length `window`.
    fn counts(&self, now: Duration, window: Duration) -> bool {
        self.answered.is_none_or(|at| at + window > now)
    }
}

/// The pure sliding-window-log budget. Time is an input (`now`, any monotonic `Duration` base).
#[derive(Debug, Clone)]
pub struct WindowBudget {
    cfg: BudgetConfig,
    log: Vec<Entry>,
    next_ticket: u64,
    window: Adaptive,
    burst: Adaptive,
    paused_until: Duration,
    /// The last 429 that counted as a new congestion event, and the pause it imposed.
    last_event: Option<(Duration, Duration)>,
    streak: u32,
    throttled: u64,
}

impl WindowBudget {
    /// A budget with nothing spent.
    pub fn new(cfg: BudgetConfig) -> Self {
        let largest = cfg.result_file_units.max(cfg.request_units);
        Self {
            window: Adaptive::new(cfg.limit_units, cfg.adaptive.min_limit_units.max(largest)),
            burst: Adaptive::new(cfg.burst_units, largest),
            cfg,
            log: Vec::new(),
            next_ticket: 0,
            paused_until: Duration::ZERO,
            last_event: None,
            streak: 0,
            throttled: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    fn used_in(&self, now: Duration, window: Duration) -> u32 {
        self.log
            .iter()
            .filter(|e| e.counts(now, window))
            .map(|e| e.units)
            .sum()
    }

    fn refresh(&mut self, now: Duration) {
        let a = self.cfg.adaptive.clone();
        self.window.recover(now, &a);
        self.burst.recover(now, &a);
        let longest = self.cfg.window.max(self.cfg.burst_window);
        self.log.retain(|e| e.counts(now, longest));
    }

    /// When `units` more fit under `limit` in windows of length `window`, if not now.
    fn wait_for(
        &self,
        now: Duration,
        window: Duration,
        limit: u32,
        units: u32,
    ) -> Option<Duration> {
        let used = self.used_in(now, window);
        if used + units <= limit {
            return None;
        }
        // Entries leave the window `window` after their answer; in-flight ones not before now + window.
        let mut expiries: Vec<(Duration, u32)> = self
            .log
            .iter()
            .filter(|e| e.counts(now, window))
            .map(|e| (e.answered.map_or(now + window, |at| at + window), e.units))
            .collect();
        expiries.sort_unstable();
        let mut freed = 0;
        for (at, u) in expiries {
            freed += u;
            if used - freed + units <= limit {
                return Some(at);
            }
        }
        Some(now + window)
    }

    /// Admits `units` at `now` (recording them) or says when to try again.
    pub fn try_acquire(&mut self, now: Duration, units: u32) -> Result<Ticket, Refusal> {
        if units > self.cfg.burst_units || units > self.cfg.limit_units || units == 0 {
            return Err(Refusal::TooLarge(BudgetError::TooLarge {
                units,
                burst_units: self.cfg.burst_units,
                limit_units: self.cfg.limit_units,
            }));
        }
        self.refresh(now);
        if now < self.paused_until {
            return Err(Refusal::WaitUntil(self.paused_until));
        }
        // A request larger than a lowered limit may still go once the window has room for it alone.
        let limit = self.window.value().max(units);
        let burst = self.burst.value().max(units);
        let waits = [
            self.wait_for(now, self.cfg.window, limit, units),
            self.wait_for(now, self.cfg.burst_window, burst, units),
        ];
        if let Some(t) = waits.into_iter().flatten().max() {
            return Err(Refusal::WaitUntil(t.max(now + Duration::from_nanos(1))));
        }
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.log.push(Entry {
            ticket,
            units,
            answered: None,
        });
        Ok(ticket)
    }

    /// Records that the answer to `ticket` arrived at `now`.
    pub fn answered(&mut self, ticket: Ticket, now: Duration) {
        if let Some(e) = self.log.iter_mut().find(|e| e.ticket == ticket) {
            e.answered.get_or_insert(now);
        }
    }

    /// Forgets `ticket`: the server did not count it.
    pub fn refund(&mut self, ticket: Ticket) {
        self.log.retain(|e| e.ticket != ticket);
    }

    /// Reports a 429 at `now` (call it after refunding the refused request), without jitter.
    pub fn on_throttled(&mut self, now: Duration, retry_after: Option<Duration>) {
        self.on_throttled_jittered(now, retry_after, 0.0);
    }

    /// Reports a 429 at `now`; the pause is lengthened by `unit × pause_jitter_fraction` of itself
    /// (`unit` uniform in `[0, 1)`: randomness is an input).
    pub fn on_throttled_jittered(
        &mut self,
        now: Duration,
        retry_after: Option<Duration>,
        unit: f64,
    ) {
        self.throttled += 1;
        let jitter =
            1.0 + unit.clamp(0.0, 1.0) * self.cfg.adaptive.pause_jitter_fraction.clamp(0.0, 1.0);
        self.refresh(now);
        let a = self.cfg.adaptive.clone();
        // Nothing is sent during a pause, and a 429 comes back at once, so a 429 during the pause
        // answers a request sent before it began: the same congestion event.
        let fresh = self.last_event.is_none() || now >= self.paused_until;
        if fresh {
            // A 429 soon after the previous pause ended continues a storm: pause longer.
            self.streak = match self.last_event {
                Some((at, pause)) if now <= at + pause * 2 + self.cfg.burst_window => {
                    self.streak + 1
                }
                _ => 0,
            };
            let grown = a.default_pause.saturating_mul(1u32 << self.streak.min(16));
            let pause = retry_after.unwrap_or(grown.min(a.max_pause));
            self.paused_until = self.paused_until.max(now + pause.mul_f64(jitter));
            self.last_event = Some((now, pause));
        } else if let Some(ra) = retry_after {
            self.paused_until = self.paused_until.max(now + ra.mul_f64(jitter));
        }
        if !a.enabled {
            return;
        }
        let window_used = self.used_in(now, self.cfg.window);
        let burst_used = self.used_in(now, self.cfg.burst_window);
        // The long window is the suspect when it is well used, or when it holds clearly more than
        // the current burst (it has been filling up); otherwise the burst (or a storm) is.
        let window_suspect = window_used > 0
            && (f64::from(window_used) >= 0.5 * self.window.effective
                || f64::from(window_used) >= 1.5 * f64::from(burst_used));
        let burst_suspect = f64::from(burst_used) >= 0.5 * self.burst.effective || !window_suspect;
        if window_suspect {
            self.window.decrease(now, window_used, fresh, &a);
        }
        if burst_suspect {
            self.burst.decrease(now, burst_used, fresh, &a);
        }
    }

    /// The state at `now`.
    pub fn snapshot(&mut self, now: Duration, waiting: usize) -> BudgetSnapshot {
        self.refresh(now);
        let limit = self.window.value();
        let used = self.used_in(now, self.cfg.window);
        BudgetSnapshot {
            limit_units: self.cfg.limit_units,
            effective_limit_units: limit,
            used_units: used,
            remaining_units: limit.saturating_sub(used),
            burst_limit_units: self.burst.value(),
            burst_used_units: self.used_in(now, self.cfg.burst_window),
            waiting,
            paused_for: (self.paused_until > now).then(|| self.paused_until - now),
            throttled_total: self.throttled,
            window: self.cfg.window,
        }
    }
}

/// The time a [`LocalBudget`] runs on: tokio's ([`TokioClock`]) unless told otherwise. A test may
/// give the budget a [`ManualClock`] it moves together with a simulator's, so that what the budget
/// admits, and when the server sees it, depend on that time only, not on the machine's scheduling.
pub trait BudgetClock: Send + Sync + fmt::Debug + 'static {
    /// Time since the clock's start.
    fn now(&self) -> Duration;
    /// Completes once [`Self::now`] has reached `at`.
    fn sleep_until(&self, at: Duration) -> BoxFuture<'_, ()>;
}

/// Tokio's clock (real time, or tokio's paused test time), from the moment it was made.
#[derive(Debug)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl BudgetClock for TokioClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn sleep_until(&self, at: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep_until(self.epoch + at))
    }
}

/// A clock that moves only when [`ManualClock::advance`] is called (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
    advanced: Notify,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` and wakes whoever sleeps on it.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) += by;
        self.advanced.notify_waiters();
    }
}

impl BudgetClock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_until(&self, at: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                // Registered before the time is read, so no advance between the two is lost.
                let advanced = self.advanced.notified();
                tokio::pin!(advanced);
                advanced.as_mut().enable();
                if self.now() >= at {
                    return;
                }
                advanced.await;
            }
        })
    }
}

/// The in-process [`Budget`]: a [`WindowBudget`] on a [`BudgetClock`] (tokio's by default) with a
/// priority queue of waiters.
pub struct LocalBudget {
    state: Mutex<State>,
    notify: Notify,
    clock: std::sync::Arc<dyn BudgetClock>,
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
    /// A fresh budget on tokio's clock.
    pub fn new(cfg: BudgetConfig) -> Self {
        Self::with_clock(cfg, std::sync::Arc::new(TokioClock::new()))
    }

    /// A fresh budget on `clock`.
    pub fn with_clock(cfg: BudgetConfig, clock: std::sync::Arc<dyn BudgetClock>) -> Self {
        Self {
            state: Mutex::new(State {
                core: WindowBudget::new(cfg),
                waiters: BTreeMap::new(),
                next_seq: 0,
            }),
            notify: Notify::new(),
            clock,
        }
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    async fn acquire_inner(&self, units: u32, priority: Priority) -> Result<Ticket, BudgetError> {
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
            // Registered before the state is read, so no wake-up between the two is lost.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut st = self.state.lock().unwrap();
                // Only the head of the queue (highest priority, then oldest) may take units; a
                // newcomer goes first only past waiters of strictly lower priority.
                let is_head = match st.waiters.first_key_value() {
                    None => true,
                    Some((first, _)) if guard.registered => *first == key,
                    Some((first, _)) => *first > key,
                };
                let mut deadline = None;
                if is_head {
                    let now = self.now();
                    match st.core.try_acquire(now, units) {
                        Ok(ticket) => {
                            if guard.registered {
                                st.waiters.remove(&key);
                                guard.registered = false;
                                drop(st);
                                // The next waiter is now at the head.
                                self.notify.notify_waiters();
                            }
                            return Ok(ticket);
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
                        _ = self.clock.sleep_until(t) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut WindowBudget, Duration)) {
        let now = self.now();
        change(&mut self.state.lock().unwrap().core, now);
        // Units may have been freed: let the head of the queue look again.
        self.notify.notify_waiters();
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
    fn acquire(
        &self,
        units: u32,
        priority: Priority,
    ) -> BoxFuture<'_, Result<Ticket, BudgetError>> {
        Box::pin(self.acquire_inner(units, priority))
    }

    fn answered(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        self.update(|core, now| core.answered(ticket, now));
        Box::pin(std::future::ready(()))
    }

    fn refund(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        self.update(|core, _| core.refund(ticket));
        Box::pin(std::future::ready(()))
    }

    fn on_throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        let now = self.now();
        let snap = {
            let mut st = self.state.lock().unwrap();
            st.core
                .on_throttled_jittered(now, retry_after, rand::random());
            let waiting = st.waiters.len();
            st.core.snapshot(now, waiting)
        };
        self.notify.notify_waiters();
        tracing::info!(
            effective_limit_units = snap.effective_limit_units,
            burst_limit_units = snap.burst_limit_units,
            used_units = snap.used_units,
            burst_used_units = snap.burst_used_units,
            paused_ms = snap.paused_for.map(|d| d.as_millis() as u64),
            "429: the budget slows down"
        );
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

    /// Admits and answers at once (zero latency).
    fn take(b: &mut WindowBudget, at: f64, units: u32) -> Result<Ticket, Refusal> {
        let t = b.try_acquire(secs(at), units)?;
        b.answered(t, secs(at));
        Ok(t)
    }

    #[test]
    fn admits_up_to_the_burst_then_says_when() {
        let mut b = WindowBudget::new(small());
        for _ in 0..6 {
            take(&mut b, 0.0, 1).unwrap();
        }
        assert_eq!(take(&mut b, 0.5, 1), Err(Refusal::WaitUntil(secs(1.0))));
        take(&mut b, 1.0, 4).unwrap();
        // 10 units in the window now: the next one when the first entries (t=0) leave, at t=10.
        assert_eq!(take(&mut b, 5.0, 1), Err(Refusal::WaitUntil(secs(10.0))));
        take(&mut b, 10.0, 5).unwrap();
    }

    #[test]
    fn a_request_in_flight_counts_until_a_window_after_its_answer() {
        let mut b = WindowBudget::new(small());
        let slow = b.try_acquire(secs(0.0), 6).unwrap();
        // Still in flight a second later: it may reach the server only now.
        assert_eq!(
            b.try_acquire(secs(1.5), 1),
            Err(Refusal::WaitUntil(secs(2.5)))
        );
        b.answered(slow, secs(2.0));
        assert_eq!(
            b.try_acquire(secs(2.5), 1),
            Err(Refusal::WaitUntil(secs(3.0)))
        );
        b.try_acquire(secs(3.0), 1).unwrap();
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
        let mut last = None;
        for _ in 0..6 {
            last = Some(take(&mut b, 0.0, 1).unwrap());
        }
        b.refund(last.unwrap());
        take(&mut b, 0.0, 1).unwrap();
    }

    fn adaptive_cfg() -> BudgetConfig {
        BudgetConfig {
            limit_units: 100,
            window: secs(60.0),
            burst_units: 20,
            adaptive: AdaptiveConfig {
                recovery_interval: secs(10.0),
                recovery_step_fraction: 0.1,
                ceiling_memory: secs(1000.0),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_429_when_the_window_is_well_used_lowers_the_window_limit_and_it_recovers_additively() {
        let mut b = WindowBudget::new(adaptive_cfg());
        for i in 0..60 {
            take(&mut b, f64::from(i) * 0.5, 1).unwrap();
        }
        b.on_throttled(secs(30.0), Some(secs(3.0)));
        assert_eq!(take(&mut b, 31.0, 1), Err(Refusal::WaitUntil(secs(33.0))));
        // A second 429 from a request already in flight does not lower it again.
        b.on_throttled(secs(30.5), None);
        let s = b.snapshot(secs(33.0), 0);
        assert_eq!(s.effective_limit_units, 30, "min(100, 60 used) × 0.5");
        assert_eq!(s.throttled_total, 2);
        // Recovery: +10 per 10 s, but only up to 90 % of the refused 60 while that is remembered.
        assert_eq!(b.snapshot(secs(40.0), 0).effective_limit_units, 40);
        assert_eq!(b.snapshot(secs(500.0), 0).effective_limit_units, 54);
        // Forgotten after `ceiling_memory`: back to the configured limit.
        assert_eq!(b.snapshot(secs(2000.0), 0).effective_limit_units, 100);
    }

    #[test]
    fn later_429s_of_one_event_refine_the_ceiling_to_what_the_server_accepted() {
        let mut b = WindowBudget::new(adaptive_cfg());
        let tickets: Vec<_> = (0..16)
            .map(|_| b.try_acquire(secs(0.0), 1).unwrap())
            .collect();
        // The server accepted 10; the 6 others come back 429, one after the other.
        for t in &tickets[..10] {
            b.answered(*t, secs(0.001));
        }
        for t in &tickets[10..] {
            b.refund(*t);
            b.on_throttled(secs(0.002), None);
        }
        let s = b.snapshot(secs(0.002), 0);
        assert_eq!(s.burst_limit_units, 5, "min(20, 10) × 0.5");
        assert_eq!(
            s.effective_limit_units, 100,
            "the window was not the suspect"
        );
        assert_eq!(
            b.snapshot(secs(100.0), 0).burst_limit_units,
            9,
            "recovers to 90 % of 10"
        );
    }

    #[test]
    fn a_429_during_a_burst_lowers_the_burst_limit_not_the_window() {
        let mut b = WindowBudget::new(adaptive_cfg());
        for _ in 0..16 {
            take(&mut b, 0.0, 1).unwrap();
        }
        b.on_throttled(secs(0.0), None);
        let s = b.snapshot(secs(0.0), 0);
        assert_eq!(
            s.effective_limit_units, 100,
            "16 of 100 in the window: not the suspect"
        );
        assert_eq!(s.burst_limit_units, 8, "min(20, 16 used) × 0.5");
        assert_eq!(s.paused_for, Some(secs(2.0)));
    }

    #[test]
    fn a_storm_makes_the_pause_grow_and_a_quiet_spell_resets_it() {
        let mut b = WindowBudget::new(adaptive_cfg());
        b.on_throttled(secs(0.0), None);
        assert_eq!(b.snapshot(secs(0.0), 0).paused_for, Some(secs(2.0)));
        b.on_throttled(secs(2.1), None);
        assert_eq!(b.snapshot(secs(2.1), 0).paused_for, Some(secs(4.0)));
        b.on_throttled(secs(6.2), None);
        assert_eq!(b.snapshot(secs(6.2), 0).paused_for, Some(secs(8.0)));
        b.on_throttled(secs(100.0), None);
        assert_eq!(b.snapshot(secs(100.0), 0).paused_for, Some(secs(2.0)));
        // Retry-After wins over the grown pause.
        b.on_throttled(secs(102.5), Some(secs(1.0)));
        assert_eq!(b.snapshot(secs(102.5), 0).paused_for, Some(secs(1.0)));
    }

    #[test]
    fn a_pause_is_lengthened_by_its_jitter_never_shortened() {
        let mut b = WindowBudget::new(adaptive_cfg());
        b.on_throttled_jittered(secs(0.0), None, 0.5);
        assert_eq!(
            b.snapshot(secs(0.0), 0).paused_for,
            Some(secs(2.2)),
            "2 s × (1 + 0.5 × 0.2)"
        );
        let mut b = WindowBudget::new(adaptive_cfg());
        b.on_throttled_jittered(secs(0.0), Some(secs(10.0)), 0.999);
        let paused = b.snapshot(secs(0.0), 0).paused_for.unwrap();
        assert!(paused >= secs(10.0) && paused <= secs(12.0), "{paused:?}");
    }

    #[test]
    fn the_limits_never_drop_below_the_largest_single_cost() {
        let mut b = WindowBudget::new(BudgetConfig::default());
        for t in 0..20 {
            b.on_throttled(secs(f64::from(t) * 100.0), None);
        }
        let s = b.snapshot(secs(1900.0), 0);
        assert!(
            s.effective_limit_units >= 5 && s.burst_limit_units >= 5,
            "{s:?}"
        );
        take(&mut b, 2000.0, 5).unwrap();
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// A request `gap_ms` after the previous one; answered `latency_ms` after admission; it
        /// reaches the server at `arrival` (fraction of the latency); `refused` answers (401/429)
        /// are refunded and never counted by the server.
        Ask {
            gap_ms: u64,
            units: u32,
            latency_ms: u64,
            arrival: f64,
            refused: bool,
        },
        Throttled {
            retry_after_ms: Option<u64>,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let ask = (
            0u64..1500,
            prop_oneof![4 => Just(1u32), 1 => Just(5u32), 1 => 1u32..8],
            prop_oneof![3 => 0u64..20, 1 => 0u64..3000],
            0.0f64..=1.0,
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(gap_ms, units, latency_ms, arrival, refused)| Step::Ask {
                gap_ms,
                units,
                latency_ms,
                arrival,
                refused,
            });
        prop_oneof![
            9 => ask,
            1 => proptest::option::of(0u64..5000).prop_map(|retry_after_ms| Step::Throttled { retry_after_ms }),
        ]
    }

    /// The most units whose arrival falls in any half-open window `(t - window, t]`.
    fn max_in_any_window(arrivals: &mut [(Duration, u32)], window: Duration) -> u32 {
        arrivals.sort();
        let mut best = 0;
        for (i, &(end, _)) in arrivals.iter().enumerate() {
            let sum: u32 = arrivals[..=i]
                .iter()
                .rev()
                .take_while(|(at, _)| *at + window > end)
                .map(|(_, u)| u)
                .sum();
            best = best.max(sum);
        }
        best
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The invariant, against a server with exact sliding windows that counts each request
        /// when it arrives (anywhere between admission and answer): whatever the costs, latencies,
        /// refunds and 429s, no server window ever holds more than the limit.
        #[test]
        fn the_server_never_sees_more_than_the_limit_in_any_window(
            limit in 5u32..120,
            burst in 5u32..25,
            window_ms in 1000u64..60_000,
            steps in proptest::collection::vec(step(), 1..300),
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
            // Answers still to come: (time, ticket, refused).
            let mut pending: Vec<(Duration, Ticket, bool)> = vec![];
            let mut arrivals: Vec<(Duration, u32)> = vec![];
            let deliver = |b: &mut WindowBudget, pending: &mut Vec<(Duration, Ticket, bool)>, until: Duration| {
                pending.sort_by_key(|p| p.0);
                while let Some(&(at, ticket, refused)) = pending.first() {
                    if at > until {
                        break;
                    }
                    pending.remove(0);
                    if refused { b.refund(ticket) } else { b.answered(ticket, at) }
                }
            };
            for s in steps {
                match s {
                    Step::Ask { gap_ms, units, latency_ms, arrival, refused } => {
                        now += Duration::from_millis(gap_ms);
                        loop {
                            deliver(&mut b, &mut pending, now);
                            match b.try_acquire(now, units) {
                                Ok(ticket) => {
                                    let latency = Duration::from_millis(latency_ms);
                                    pending.push((now + latency, ticket, refused));
                                    if !refused {
                                        arrivals.push((now + latency.mul_f64(arrival), units));
                                    }
                                    break;
                                }
                                Err(Refusal::WaitUntil(t)) => {
                                    prop_assert!(t > now);
                                    // Wake at the deadline or at the next answer, as LocalBudget does.
                                    let next_answer = pending.iter().map(|p| p.0).filter(|&a| a > now).min();
                                    now = next_answer.map_or(t, |a| a.min(t));
                                }
                                Err(Refusal::TooLarge(_)) => {
                                    prop_assert!(units > cfg.burst_units);
                                    break;
                                }
                            }
                        }
                    }
                    Step::Throttled { retry_after_ms } => {
                        deliver(&mut b, &mut pending, now);
                        b.on_throttled(now, retry_after_ms.map(Duration::from_millis));
                    }
                }
            }
            prop_assert!(max_in_any_window(&mut arrivals, cfg.window) <= cfg.limit_units);
            prop_assert!(max_in_any_window(&mut arrivals, cfg.burst_window) <= cfg.burst_units);
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
        let first = budget.acquire(2, Priority::Interactive).await.unwrap();
        budget.answered(first).await;
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
                let ticket = budget.acquire(2, prio).await.unwrap();
                budget.answered(ticket).await;
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
        assert_eq!(budget.now(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let cfg = BudgetConfig {
            burst_units: 5,
            ..Default::default()
        };
        let budget = Arc::new(LocalBudget::new(cfg));
        let t = budget.acquire(5, Priority::Background).await.unwrap();
        budget.answered(t).await;
        let waiting =
            tokio::time::timeout(secs(0.5), budget.acquire(5, Priority::Interactive)).await;
        assert!(waiting.is_err());
        assert_eq!(budget.snapshot().await.waiting, 0);
        budget.acquire(5, Priority::Background).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_wakes_a_waiter_blocked_by_a_request_in_flight() {
        let cfg = BudgetConfig {
            burst_units: 5,
            ..Default::default()
        };
        let budget = Arc::new(LocalBudget::new(cfg));
        let in_flight = budget.acquire(5, Priority::Background).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(5, Priority::Interactive).await })
        };
        tokio::time::sleep(secs(3.0)).await;
        assert!(!waiter.is_finished(), "in flight for 3 s: still counts");
        budget.answered(in_flight).await;
        waiter.await.unwrap().unwrap();
        let elapsed = budget.now();
        assert_eq!(elapsed, secs(4.0), "one burst window after the answer");
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_turns_a_long_wait_into_an_error() {
        let cfg = BudgetConfig {
            limit_units: 5,
            max_wait: Some(secs(1.0)),
            ..Default::default()
        };
        let budget = LocalBudget::new(cfg);
        let t = budget.acquire(5, Priority::Background).await.unwrap();
        budget.answered(t).await;
        let err = budget.acquire(1, Priority::Interactive).await.unwrap_err();
        assert!(matches!(err, BudgetError::WouldWait(_)), "{err}");
    }
}
