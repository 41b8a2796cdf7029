//! [`RedisBudget`]: one Mint budget for every replica, as a weighted GCRA in Redis.
//!
//! # The limiter
//!
//! One Lua script, run atomically by Redis on Redis's own clock (`TIME`, so the replicas' clocks do
//! not matter), keeps two GCRA "theoretical arrival times": one for the per-window limit and one for
//! the burst rule. A request of `cost` units is admitted only if both admit it; otherwise the script
//! answers how long to wait. A GCRA admits at most `capacity + rate × w` units in any span `w`, so
//! the parameters ([`GcraParams::from_budget`]) split each limit into an instant capacity and a
//! sustained rate whose sum is the limit: the fleet never exceeds `limit_units` per `window` nor
//! `burst_units` per `burst_window` (plus at most one request at the edge, which the budget's 10 %
//! headroom under Mint's limit absorbs).
//!
//! # Priorities
//!
//! Two mechanisms, because each alone falls short:
//! - **A local priority queue in front of the shared limiter**: within a replica, only the most
//!   urgent waiter asks Redis; a more urgent arrival overtakes waiters at once. This orders a
//!   replica's own requests exactly, but cannot order requests across replicas.
//! - **Headroom reserved for higher priorities**, fleet-wide, in the script: a lower priority must
//!   leave some of the instant capacity unused (webhook-triggered work leaves 2 units, background
//!   work 4), so when background work of every replica drains the bucket, an interactive or
//!   webhook request anywhere still finds units at once. The sustained rate is unchanged: the
//!   reserve only shortens the burst that lower priorities may take.
//!
//! # When Redis is unreachable
//!
//! The replica falls back to a [`LocalBudget`] with a conservative share of the budget (limit and
//! burst divided by `service.replicas`), logs it once, and sets `mintgate_budget_fallback_active`.
//! It probes Redis again at most once per [`PROBE_INTERVAL`]. On recovery it first repays what it
//! spent locally during the last window (the script moves the shared arrival time forward by those
//! units), so the local spending and the shared spending together still fit the window.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mint_client::{
    BoxFuture, Budget, BudgetConfig, BudgetError, BudgetSnapshot, LocalBudget, Priority, Ticket,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::SharedRedis;

/// While Redis is unreachable, try it again at most this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The weighted two-rule GCRA. KEYS: window TAT, burst TAT, pause-until, units used per slot (a
/// hash). ARGV: window interval, window tolerance (already shortened by the priority's reserve),
/// burst interval, burst tolerance (all in ms per unit / ms), cost, debt (units to repay first),
/// slot length and the used-units hash's lifetime (ms).
/// Answers `{1, 0}` (admitted) or `{0, wait_ms}`.
///
/// The GCRA keeps no history, so the units the fleet spent in the last window (what the status
/// page and `mintgate_mint_budget_units_remaining` show, as for a local budget) are counted beside
/// it, per slot of a sixtieth of the window.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local t1, tau1 = tonumber(ARGV[1]), tonumber(ARGV[2])
local t2, tau2 = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost, debt = tonumber(ARGV[5]), tonumber(ARGV[6])
local tat1 = tonumber(redis.call('GET', KEYS[1]) or now)
if tat1 < now then tat1 = now end
local slot = math.floor(now / tonumber(ARGV[7]))
if debt > 0 then
  tat1 = tat1 + debt * t1
  redis.call('SET', KEYS[1], tat1, 'PX', math.ceil(tat1 - now) + 1000)
  redis.call('HINCRBY', KEYS[4], slot, debt)
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
local tat2 = tonumber(redis.call('GET', KEYS[2]) or now)
if tat2 < now then tat2 = now end
local new1 = tat1 + cost * t1
local new2 = tat2 + cost * t2
local wait = 0
local pause = tonumber(redis.call('GET', KEYS[3]) or 0)
if pause > now then wait = pause - now end
if new1 - tau1 - now > wait then wait = new1 - tau1 - now end
if new2 - tau2 - now > wait then wait = new2 - tau2 - now end
if wait > 0 then return {0, math.ceil(wait)} end
redis.call('SET', KEYS[1], new1, 'PX', math.ceil(new1 - now) + 1000)
redis.call('SET', KEYS[2], new2, 'PX', math.ceil(new2 - now) + 1000)
redis.call('HINCRBY', KEYS[4], slot, cost)
redis.call('PEXPIRE', KEYS[4], ARGV[8])
return {1, 0}
";

/// Gives back `cost` units (a 429 or 401 consumed none). KEYS: window TAT, burst TAT, units used
/// per slot. ARGV: window interval, burst interval, cost, slot length (ms).
const REFUND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cost = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], math.floor(now / tonumber(ARGV[4])), -cost)
end
for i, interval in ipairs({tonumber(ARGV[1]), tonumber(ARGV[2])}) do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat and tat > now then
    local back = tat - cost * interval
    if back < now then back = now end
    redis.call('SET', KEYS[i], back, 'PX', math.ceil(back - now) + 1000)
  end
end
return 1
";

/// Pauses everyone for ARGV[1] ms (after a 429), unless a longer pause is set. KEYS[1]: pause.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or 0)
if untl > current then redis.call('SET', KEYS[1], untl, 'PX', math.ceil(untl - now) + 1) end
return 1
";

/// Reads the state for a snapshot: `{now, window TAT, burst TAT, pause, units used in the last
/// window}` (ms and units, as strings); drops the used-units slots older than the window.
/// ARGV: slot length (ms), slots per window.
const STATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local slot = math.floor(now / tonumber(ARGV[1]))
local oldest = slot - tonumber(ARGV[2]) + 1
local used = 0
local slots = redis.call('HGETALL', KEYS[4])
for i = 1, #slots, 2 do
  local s = tonumber(slots[i])
  if s < oldest then
    redis.call('HDEL', KEYS[4], slots[i])
  else
    used = used + tonumber(slots[i + 1])
  end
end
if used < 0 then used = 0 end
return {tostring(now), redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0',
        redis.call('GET', KEYS[3]) or '0', tostring(used)}
";

/// Slots per window of the fleet's used-units count.
const USED_SLOTS: u32 = 60;

/// The GCRA's parameters, derived from a budget configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcraParams {
    /// Milliseconds per unit at the window's sustained rate.
    pub window_interval_ms: f64,
    /// Units the window rule admits at once.
    pub window_capacity_units: u32,
    /// Milliseconds per unit at the burst rule's sustained rate.
    pub burst_interval_ms: f64,
    /// Units the burst rule admits at once.
    pub burst_capacity_units: u32,
}

impl GcraParams {
    /// Splits each limit into an instant capacity and a sustained rate that add up to it.
    ///
    /// The window's capacity is a tenth of its limit, but at least one result file (5 units) plus
    /// the background reserve (4), so background downloads can still pass; the burst rule's is half
    /// its limit, but at least one result file.
    pub fn from_budget(cfg: &BudgetConfig) -> Self {
        let largest = cfg.result_file_units.max(cfg.request_units).max(1);
        let limit = cfg.limit_units.max(largest + 1);
        let window_capacity_units = (limit / 10)
            .max(largest + RESERVE_BACKGROUND_UNITS)
            .min(limit / 2)
            .max(largest);
        let window_rate = limit - window_capacity_units;
        let burst = cfg.burst_units.max(largest + 1);
        let burst_capacity_units = (burst / 2).max(largest).min(burst - 1);
        let burst_rate = burst - burst_capacity_units;
        Self {
            window_interval_ms: ms(cfg.window) / f64::from(window_rate),
            window_capacity_units,
            burst_interval_ms: ms(cfg.burst_window) / f64::from(burst_rate),
            burst_capacity_units,
        }
    }

    /// The sustained rate the whole fleet gets, in units per second.
    pub fn units_per_second(&self) -> f64 {
        1000.0 / self.window_interval_ms.max(self.burst_interval_ms)
    }

    /// The window rule's tolerance for `priority`: lower priorities leave a reserve unused.
    fn window_tolerance_ms(&self, priority: Priority, units: u32) -> f64 {
        let reserve = match priority {
            Priority::Interactive => 0,
            Priority::Webhook => RESERVE_WEBHOOK_UNITS,
            Priority::Background => RESERVE_BACKGROUND_UNITS,
        };
        // Never so large a reserve that the request could never pass.
        let capacity = self
            .window_capacity_units
            .saturating_sub(reserve)
            .max(units);
        f64::from(capacity) * self.window_interval_ms
    }

    fn burst_tolerance_ms(&self) -> f64 {
        f64::from(self.burst_capacity_units) * self.burst_interval_ms
    }
}

/// Instant capacity webhook-triggered work leaves for interactive work.
const RESERVE_WEBHOOK_UNITS: u32 = 2;
/// Instant capacity background work leaves for the others.
const RESERVE_BACKGROUND_UNITS: u32 = 4;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The shared budget of one Mint API client.
pub struct RedisBudget {
    redis: SharedRedis,
    /// Window TAT, burst TAT, pause-until, units used per slot.
    keys: [String; 4],
    name: String,
    cfg: BudgetConfig,
    params: GcraParams,
    fallback: LocalBudget,
    state: Mutex<State>,
    notify: Notify,
    degraded: AtomicBool,
}

/// Where an admitted request's units came from.
#[derive(Debug, Clone, Copy)]
enum Admission {
    Shared { units: u32 },
    Local(Ticket),
}

#[derive(Default)]
struct State {
    waiters: BTreeMap<(Reverse<Priority>, u64), u32>,
    next_seq: u64,
    /// Units spent on the local share, with when: repaid to the shared limiter on recovery.
    spent_locally: VecDeque<(Instant, u32)>,
    /// Units this replica got from the shared limiter during the last window.
    spent_shared: VecDeque<(Instant, u32)>,
    /// Admitted requests not yet answered or refunded: where their units came from.
    tickets: BTreeMap<u64, Admission>,
    next_ticket: u64,
    /// On entering the fallback, this replica's shared spending of the last window, charged to
    /// the local share before anything else: the fleet may have used the whole window already.
    precharge: Vec<u32>,
    last_probe: Option<Instant>,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudget")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisBudget {
    /// The budget `cfg` (the whole fleet's) of the API client `name`, shared through `redis`;
    /// `replicas` sizes the local share used while Redis is unreachable.
    pub fn new(redis: SharedRedis, name: &str, cfg: BudgetConfig, replicas: u32) -> Self {
        let replicas = replicas.max(1);
        let largest = cfg.result_file_units.max(cfg.request_units);
        let share = BudgetConfig {
            limit_units: (cfg.limit_units / replicas).max(largest),
            burst_units: (cfg.burst_units / replicas).max(largest),
            ..cfg.clone()
        };
        let keys = [
            redis.key("budget", &format!("{name}:window")),
            redis.key("budget", &format!("{name}:burst")),
            redis.key("budget", &format!("{name}:pause")),
            redis.key("budget", &format!("{name}:used")),
        ];
        crate::metrics::budget_fallback_active(name, false);
        Self {
            redis,
            keys,
            name: name.to_owned(),
            params: GcraParams::from_budget(&cfg),
            cfg,
            fallback: LocalBudget::new(share),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            degraded: AtomicBool::new(false),
        }
    }

    /// The length of one slot of the used-units count (a sixtieth of the window), in ms.
    fn slot_ms(&self) -> u64 {
        ((ms(self.cfg.window) / f64::from(USED_SLOTS)).ceil() as u64).max(1)
    }

    /// The GCRA's parameters.
    pub fn params(&self) -> GcraParams {
        self.params
    }

    /// Whether this replica is on its local share (Redis unreachable).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the shared limiter once: `Ok(None)` admitted, `Ok(Some(wait))` not yet.
    async fn ask(
        &self,
        units: u32,
        priority: Priority,
        debt: u32,
    ) -> anyhow::Result<Option<Duration>> {
        let script = redis::Script::new(ACQUIRE);
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
            .arg(self.params.window_interval_ms)
            .arg(self.params.window_tolerance_ms(priority, units))
            .arg(self.params.burst_interval_ms)
            .arg(self.params.burst_tolerance_ms())
            .arg(units)
            .arg(debt)
            .arg(self.slot_ms())
            .arg(ms(self.cfg.window).ceil() as u64 * 2);
        let mut connection = self.redis.connection();
        let (admitted, wait_ms): (i64, i64) = self
            .redis
            .run(invocation.invoke_async(&mut connection))
            .await?;
        Ok((admitted == 0).then(|| Duration::from_millis(wait_ms.max(1) as u64)))
    }

    fn units_spent_locally(&self, now: Instant) -> u32 {
        let mut state = self.lock();
        while let Some(&(at, _)) = state.spent_locally.front() {
            if now.duration_since(at) >= self.cfg.window {
                state.spent_locally.pop_front();
            } else {
                break;
            }
        }
        state.spent_locally.iter().map(|(_, u)| u).sum()
    }

    fn record_shared(&self, units: u32) {
        let now = Instant::now();
        let mut state = self.lock();
        while let Some(&(at, _)) = state.spent_shared.front() {
            if now.duration_since(at) >= self.cfg.window {
                state.spent_shared.pop_front();
            } else {
                break;
            }
        }
        state.spent_shared.push_back((now, units));
    }

    fn enter_fallback(&self, error: &anyhow::Error) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            {
                let mut state = self.lock();
                let now = Instant::now();
                let window = self.cfg.window;
                let recent: Vec<u32> = state
                    .spent_shared
                    .drain(..)
                    .filter(|(at, _)| now.duration_since(*at) < window)
                    .map(|(_, units)| units)
                    .collect();
                state.precharge = recent;
            }
            tracing::warn!(
                budget = self.name,
                error = format!("{error:#}"),
                "Redis is unreachable: spending this replica's local share of the Mint budget (limit / service.replicas) until it returns"
            );
            crate::metrics::budget_fallback_active(&self.name, true);
            crate::metrics::budget_fallback_started(&self.name);
        }
    }

    fn leave_fallback(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(
                budget = self.name,
                "Redis is reachable again: back on the shared Mint budget"
            );
            crate::metrics::budget_fallback_active(&self.name, false);
            self.lock().spent_locally.clear();
        }
    }

    /// Whether a degraded replica should try Redis now (at most once per [`PROBE_INTERVAL`]).
    fn should_probe(&self, now: Instant) -> bool {
        if !self.is_degraded() {
            return true;
        }
        let mut state = self.lock();
        let due = state
            .last_probe
            .is_none_or(|at| now.duration_since(at) >= PROBE_INTERVAL);
        if due {
            state.last_probe = Some(now);
        }
        due
    }

    fn issue(&self, admission: Admission) -> Ticket {
        let mut state = self.lock();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.tickets.insert(ticket, admission);
        Ticket(ticket)
    }

    async fn spend_locally(&self, units: u32, priority: Priority) -> Result<Ticket, BudgetError> {
        // Each replica's share of a window covers what it spent through Redis as well, so the
        // fleet as a whole stays under the limit across the switch (conservatively: the charges
        // are dated now, not when they were spent).
        let precharge = std::mem::take(&mut self.lock().precharge);
        for charged in precharge {
            let ticket = self
                .fallback
                .acquire(charged, Priority::Interactive)
                .await?;
            self.fallback.answered(ticket).await;
        }
        let local = self.fallback.acquire(units, priority).await?;
        self.lock().spent_locally.push_back((Instant::now(), units));
        Ok(self.issue(Admission::Local(local)))
    }

    async fn acquire_inner(&self, units: u32, priority: Priority) -> Result<Ticket, BudgetError> {
        let largest = self
            .params
            .window_capacity_units
            .min(self.params.burst_capacity_units);
        if units == 0 || units > largest {
            return Err(BudgetError::TooLarge {
                units,
                burst_units: self.cfg.burst_units,
                limit_units: self.cfg.limit_units,
            });
        }
        let key = {
            let mut state = self.lock();
            state.next_seq += 1;
            (Reverse(priority), state.next_seq)
        };
        let mut guard = QueueGuard {
            budget: self,
            key,
            registered: false,
        };
        let asked_at = Instant::now();
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let is_head = {
                let mut state = self.lock();
                let head = match state.waiters.first_key_value() {
                    None => true,
                    Some((first, _)) if guard.registered => *first == key,
                    Some((first, _)) => *first > key,
                };
                if !guard.registered {
                    state.waiters.insert(key, units);
                    guard.registered = true;
                }
                head
            };
            if !is_head {
                notified.await;
                continue;
            }
            let now = Instant::now();
            let wait = if self.should_probe(now) {
                let debt = if self.is_degraded() {
                    self.units_spent_locally(now)
                } else {
                    0
                };
                match self.ask(units, priority, debt).await {
                    Ok(wait) => {
                        self.leave_fallback();
                        wait
                    }
                    Err(error) => {
                        self.enter_fallback(&error);
                        None
                    }
                }
            } else {
                None
            };
            match wait {
                None if !self.is_degraded() => {
                    self.record_shared(units);
                    drop(guard);
                    return Ok(self.issue(Admission::Shared { units }));
                }
                None => {
                    // Redis is down: the local share, still in priority order (the fallback has
                    // its own queue), then leave ours.
                    let result = self.spend_locally(units, priority).await;
                    drop(guard);
                    return result;
                }
                Some(wait) => {
                    if let Some(max) = self.cfg.max_wait
                        && asked_at.elapsed() + wait > max
                    {
                        return Err(BudgetError::WouldWait(wait));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = &mut notified => {}
                    }
                }
            }
        }
    }
}

/// Leaves the local queue (on admission or when the caller gives up) and lets the next one ask.
struct QueueGuard<'a> {
    budget: &'a RedisBudget,
    key: (Reverse<Priority>, u64),
    registered: bool,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.budget.lock().waiters.remove(&self.key);
            self.budget.notify.notify_waiters();
        }
    }
}

impl Budget for RedisBudget {
    fn acquire(
        &self,
        units: u32,
        priority: Priority,
    ) -> BoxFuture<'_, Result<Ticket, BudgetError>> {
        Box::pin(self.acquire_inner(units, priority))
    }

    fn answered(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        // The shared GCRA counts at admission; the local share's log wants the arrival.
        let admission = self.lock().tickets.remove(&ticket.0);
        Box::pin(async move {
            if let Some(Admission::Local(local)) = admission {
                self.fallback.answered(local).await;
            }
        })
    }

    fn refund(&self, ticket: Ticket) -> BoxFuture<'_, ()> {
        let admission = self.lock().tickets.remove(&ticket.0);
        Box::pin(async move {
            let units = match admission {
                None => return,
                Some(Admission::Local(local)) => {
                    self.fallback.refund(local).await;
                    return;
                }
                Some(Admission::Shared { units }) => units,
            };
            let script = redis::Script::new(REFUND);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&self.keys[0])
                .key(&self.keys[1])
                .key(&self.keys[3])
                .arg(self.params.window_interval_ms)
                .arg(self.params.burst_interval_ms)
                .arg(units)
                .arg(self.slot_ms());
            let mut connection = self.redis.connection();
            if let Err(error) = self
                .redis
                .run(invocation.invoke_async::<i64>(&mut connection))
                .await
            {
                // A lost refund only makes the fleet slightly slower for one window.
                tracing::debug!(
                    error = format!("{error:#}"),
                    "cannot refund shared budget units"
                );
            }
            self.notify.notify_waiters();
        })
    }

    fn on_throttled(&self, retry_after: Option<Duration>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.fallback.on_throttled(retry_after).await;
            let pause = retry_after.unwrap_or(self.cfg.adaptive.default_pause);
            let script = redis::Script::new(PAUSE);
            let mut invocation = script.prepare_invoke();
            invocation.key(&self.keys[2]).arg(pause.as_millis() as u64);
            let mut connection = self.redis.connection();
            if let Err(error) = self
                .redis
                .run(invocation.invoke_async::<i64>(&mut connection))
                .await
            {
                tracing::debug!(error = format!("{error:#}"), "cannot share a 429 pause");
            }
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, BudgetSnapshot> {
        Box::pin(async move {
            let waiting = self.lock().waiters.len();
            if self.is_degraded() {
                let mut snapshot = self.fallback.snapshot().await;
                snapshot.waiting += waiting;
                return snapshot;
            }
            let script = redis::Script::new(STATE);
            let mut invocation = script.prepare_invoke();
            for key in &self.keys {
                invocation.key(key);
            }
            invocation.arg(self.slot_ms()).arg(USED_SLOTS);
            let mut connection = self.redis.connection();
            let state: Vec<String> = self
                .redis
                .run(invocation.invoke_async(&mut connection))
                .await
                .unwrap_or_default();
            let number = |i: usize| {
                state
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let now = number(0);
            // Units "in flight" in each GCRA: how far its arrival time is ahead of now.
            let used = |tat: f64, interval: f64| ((tat - now).max(0.0) / interval).ceil() as u32;
            // The fleet's units of the last window (counted beside the GCRA), as a local budget
            // reports its own; the GCRA's instant capacity is not the window's remainder.
            let window_used = number(4) as u32;
            let burst_used = used(number(2), self.params.burst_interval_ms);
            let pause = number(3) - now;
            // This replica's 429s (the local share counts every one it is told of).
            let throttled_total = self.fallback.snapshot().await.throttled_total;
            BudgetSnapshot {
                limit_units: self.cfg.limit_units,
                effective_limit_units: self.cfg.limit_units,
                used_units: window_used,
                remaining_units: self.cfg.limit_units.saturating_sub(window_used),
                burst_limit_units: self.cfg.burst_units,
                burst_used_units: burst_used,
                waiting,
                paused_for: (pause > 0.0).then(|| Duration::from_millis(pause as u64)),
                throttled_total,
                window: self.cfg.window,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_rate_add_up_to_each_limit() {
        let cfg = BudgetConfig::default(); // 90 per 60 s, 18 per second
        let p = GcraParams::from_budget(&cfg);
        assert_eq!(p.window_capacity_units, 9);
        let window_rate = 60_000.0 / p.window_interval_ms;
        assert!((window_rate + 9.0 - 90.0).abs() < 1e-9, "{p:?}");
        let burst_rate = 1000.0 / p.burst_interval_ms;
        assert!(
            (burst_rate + f64::from(p.burst_capacity_units) - 18.0).abs() < 1e-9,
            "{p:?}"
        );
        assert!((p.units_per_second() - 81.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn lower_priorities_leave_a_reserve_but_can_always_pass() {
        let p = GcraParams::from_budget(&BudgetConfig::default());
        let t = p.window_interval_ms;
        assert_eq!(p.window_tolerance_ms(Priority::Interactive, 1), 9.0 * t);
        assert_eq!(p.window_tolerance_ms(Priority::Webhook, 1), 7.0 * t);
        assert_eq!(p.window_tolerance_ms(Priority::Background, 1), 5.0 * t);
        assert_eq!(p.window_tolerance_ms(Priority::Background, 5), 5.0 * t);
        // A tiny budget: the reserve never blocks a request for good.
        let tiny = GcraParams::from_budget(&BudgetConfig {
            limit_units: 10,
            burst_units: 6,
            ..BudgetConfig::default()
        });
        assert!(tiny.window_tolerance_ms(Priority::Background, 5) >= 5.0 * tiny.window_interval_ms);
    }
}
