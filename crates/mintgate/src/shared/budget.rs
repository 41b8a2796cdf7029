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
//! It probes Redis again at most once per [`PROBE_INTERVAL`] (a `PING` first, so a failed probe
//! cannot count as a sign of life, see below). On recovery it first repays what it spent locally
//! during the last window (the script moves the shared arrival time forward by those units), so
//! the local spending and the shared spending together still fit the window.
//!
//! # A partial partition: membership and held-back shares
//!
//! When Redis is unreachable for one replica only, the others keep spending the shared budget:
//! without more, the fleet would spend the whole budget *plus* the cut-off replica's share, and
//! Mint answers 429. So the replicas keep a membership in Redis (a sorted set of member ids by
//! last-seen time, refreshed by every call of the script and by a heartbeat every
//! [`RedisBudget::heartbeat_interval`], even when idle), and the script *holds back* the share of
//! every member silent for longer than [`RedisBudget::silence`]: it charges the shared GCRA
//! `share × elapsed / window` units for each, continuously, as if that member spent its whole
//! local share at an even pace. The rest of the fleet then gets `limit − share` per window. At most
//! `service.replicas − live members` shares are held (a replica restarted after a crash is a new
//! member: the old one's share is not held beside it), and a member silent for longer than
//! [`RedisBudget::member_timeout`] is forgotten (a replica that died for good costs a share for
//! that long; a graceful shutdown leaves at once, [`Budget::leave`]). A membership Redis does not
//! have (first start, or Redis restarted empty) may miss replicas still spending their local
//! shares, so for a member timeout after it begins, every missing replica's share is held back.
//!
//! The cut-off replica cannot know what the others spent just before Redis noticed its silence,
//! so with `service.replicas > 1` it spends its local share only from `silence + window` after
//! the last moment Redis may have seen it (every window holding local spending then starts after
//! the hold-back began); a replica that never reached Redis counts from its own start. That costs
//! a window of stillness at the start of any outage. A returning replica repays its local units
//! of the last window before anything else, so it never spends a window twice.
//!
//! What is not covered: a partition longer than the member timeout (Redis forgets the cut-off
//! member, the others take its share again while it still spends it locally), and a replica that
//! never reached Redis starting after the first member timeout of the membership. The fleet may
//! then exceed Mint's limit by one share; Mint's `429`s slow every replica through the adaptive
//! budget (delay, never a failure). Stopping the cut-off replica instead would turn a long Redis
//! outage, which a replica cannot tell from a partition, into a halt of every Mint call, which is
//! worse: results near Mint's deletion would be lost rather than fetched a little slower.
//!
//! The window rule is held back exactly; the burst rule is not (a cut-off replica's burst share
//! beside the others' bursts is bounded by the window rule's small instant capacity, a tenth of
//! the limit: at most about the burst limit plus two units, within the 10 % headroom under Mint's).

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mint_client::{
    BoxFuture, Budget, BudgetConfig, BudgetError, BudgetSnapshot, LocalBudget, Priority, Ticket,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{REDIS_COMMAND_TIMEOUT, SharedRedis};

/// While Redis is unreachable, try it again at most this often.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeats per budget window: a live replica refreshes its membership this often at least.
const HEARTBEATS_PER_WINDOW: u32 = 30;
/// Bounds of the heartbeat's period (2 s for Mint's minute).
const HEARTBEAT_MIN: Duration = Duration::from_millis(20);
const HEARTBEAT_MAX: Duration = Duration::from_secs(2);
/// A silent member's share is held back for this many windows (plus the silence), then it is
/// forgotten: long enough for a partition of most causes, short enough that a replica that died
/// for good (and was not replaced) does not slow the fleet for long.
const MEMBER_TIMEOUT_WINDOWS: u32 = 60;

/// The weighted two-rule GCRA. KEYS: window TAT, burst TAT, pause-until, units used per slot (a
/// hash), members (a sorted set: id by last-seen ms), hold-back (a hash: when the membership began
/// and when the hold-back was last charged, ms). ARGV: window
/// interval, window tolerance (already shortened by the priority's reserve), burst interval, burst
/// tolerance (all in ms per unit / ms), cost (0: a heartbeat), debt (units to repay first), slot
/// length and the used-units hash's lifetime (ms), window (ms), member id, replicas, share
/// (units), silence and member timeout (ms).
/// Answers `{1, 0, held}` (admitted) or `{0, wait_ms, held}`, `held` the members whose shares
/// are held back.
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
local window, replicas, share = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12])
local silent_ms, drop_ms = tonumber(ARGV[13]), tonumber(ARGV[14])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - drop_ms)
redis.call('ZADD', KEYS[5], now, ARGV[10])
redis.call('PEXPIRE', KEYS[5], math.ceil(drop_ms))
local live = redis.call('ZCOUNT', KEYS[5], now - silent_ms, '+inf')
local held = redis.call('ZCARD', KEYS[5]) - live
if held > replicas - live then held = replicas - live end
if held < 0 then held = 0 end
local born = tonumber(redis.call('HGET', KEYS[6], 'born') or now)
if now - born < drop_ms and held < replicas - live then held = replicas - live end
local charged = tonumber(redis.call('HGET', KEYS[6], 'charged') or now)
local elapsed = math.min(math.max(now - charged, 0), window)
redis.call('HSET', KEYS[6], 'charged', now, 'born', born)
redis.call('PEXPIRE', KEYS[6], math.ceil(drop_ms))
local hold = held * share * elapsed / window
local tat1 = tonumber(redis.call('GET', KEYS[1]) or now)
if tat1 < now then tat1 = now end
local slot = math.floor(now / tonumber(ARGV[7]))
if debt > 0 then
  redis.call('HINCRBY', KEYS[4], slot, debt)
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
if debt + hold > 0 then
  tat1 = tat1 + (debt + hold) * t1
  redis.call('SET', KEYS[1], tat1, 'PX', math.ceil(tat1 - now) + 1000)
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
if wait > 0 then return {0, math.ceil(wait), held} end
if cost > 0 then
  redis.call('SET', KEYS[1], new1, 'PX', math.ceil(new1 - now) + 1000)
  redis.call('SET', KEYS[2], new2, 'PX', math.ceil(new2 - now) + 1000)
  redis.call('HINCRBY', KEYS[4], slot, cost)
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
return {1, 0, held}
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

/// Removes a member (a graceful shutdown): its share is the others' at once. KEYS[1]: members.
/// ARGV[1]: member id.
const LEAVE: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1])
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

    /// The most units the limiter admits in a span of `span`, from an unused state: each rule
    /// admits its instant capacity at once and its sustained rate over the span (a GCRA's exact
    /// bound), and a request must pass both, so the smaller of the two. This is what a fleet
    /// spending flat out for `span` may be measured against: the instant capacity counts once
    /// per span, not once per window.
    pub fn admissible_units(&self, span: Duration) -> f64 {
        let span = ms(span);
        let window = f64::from(self.window_capacity_units) + span / self.window_interval_ms;
        let burst = f64::from(self.burst_capacity_units) + span / self.burst_interval_ms;
        window.min(burst)
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
    /// Window TAT, burst TAT, pause-until, units used per slot, members, hold-back times.
    keys: [String; 6],
    name: String,
    /// This replica's id in the membership (one per budget instance: a restart is a new member).
    member: String,
    /// `service.replicas`: at most this many members, each with a share of `limit / replicas`.
    replicas: u32,
    /// The window units of one replica's local share.
    share_units: u32,
    cfg: BudgetConfig,
    params: GcraParams,
    fallback: LocalBudget,
    state: Mutex<State>,
    notify: Notify,
    degraded: AtomicBool,
    /// Members whose shares the script held back at the last answer.
    held: AtomicU32,
    /// Left the membership (graceful shutdown): no more heartbeats.
    left: AtomicBool,
    /// When this budget was made: a replica that never reached Redis waits from then.
    created: Instant,
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
    /// The latest moment Redis may have seen this replica (an unanswered call may have run).
    last_seen_until: Option<Instant>,
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
            redis.key("budget", &format!("{name}:members")),
            redis.key("budget", &format!("{name}:held")),
        ];
        crate::metrics::budget_fallback_active(name, false);
        Self {
            redis,
            keys,
            name: name.to_owned(),
            member: uuid::Uuid::new_v4().simple().to_string(),
            replicas,
            share_units: share.limit_units,
            params: GcraParams::from_budget(&cfg),
            cfg,
            fallback: LocalBudget::new(share),
            state: Mutex::new(State::default()),
            created: Instant::now(),
            notify: Notify::new(),
            degraded: AtomicBool::new(false),
            held: AtomicU32::new(0),
            left: AtomicBool::new(false),
        }
    }

    /// A live replica refreshes its membership at least this often: a thirtieth of the window,
    /// within 20 ms and 2 s.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.cfg.window / HEARTBEATS_PER_WINDOW).clamp(HEARTBEAT_MIN, HEARTBEAT_MAX)
    }

    /// A member not seen for longer than this may be cut off: its share is held back. Three
    /// heartbeats and two command timeouts, so a live replica slowed down is not mistaken for a
    /// silent one (that would only be conservative, but slower).
    pub fn silence(&self) -> Duration {
        self.heartbeat_interval() * 3 + REDIS_COMMAND_TIMEOUT * 2
    }

    /// A member not seen for longer than this is forgotten, its share no longer held back.
    pub fn member_timeout(&self) -> Duration {
        self.cfg.window * MEMBER_TIMEOUT_WINDOWS + self.silence()
    }

    /// How many members' shares the shared limiter held back at its last answer.
    pub fn held_shares(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }

    /// Refreshes this replica's membership every [`Self::heartbeat_interval`], idle or not, for as
    /// long as the budget exists and has not left (and probes Redis while it is unreachable).
    pub fn spawn_heartbeat(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.heartbeats())
    }

    /// The loop of [`Self::spawn_heartbeat`], for a caller to spawn in its own scope (the metrics
    /// registry of the replica, say).
    pub fn heartbeats(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let budget = Arc::downgrade(self);
        let interval = self.heartbeat_interval();
        async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(budget) = budget.upgrade() else {
                    return;
                };
                if budget.left.load(Ordering::Relaxed) {
                    return;
                }
                budget.heartbeat().await;
            }
        }
    }

    /// One heartbeat: the script with no cost refreshes the membership, charges the held-back
    /// shares and, after an outage, repays the local spending.
    pub async fn heartbeat(&self) {
        let now = Instant::now();
        if !self.should_probe(now) || !self.reachable().await {
            return;
        }
        let debt = if self.is_degraded() {
            self.units_spent_locally(now)
        } else {
            0
        };
        match self.ask(0, Priority::Interactive, debt).await {
            Ok(_) => {
                self.leave_fallback();
                self.notify.notify_waiters();
            }
            Err(error) => self.enter_fallback(&error),
        }
    }

    /// While degraded, a `PING` before the script: a probe that fails fails before it could
    /// refresh the membership (see [`State::last_seen_until`]).
    async fn reachable(&self) -> bool {
        !self.is_degraded() || self.redis.ping().await.is_ok()
    }

    /// While degraded: `None` if the local share may be spent now, else how long until it may be.
    /// See the module documentation.
    fn local_share_closed_for(&self, now: Instant) -> Option<Duration> {
        if self.replicas <= 1 {
            return None;
        }
        // From the last moment Redis may have seen this replica; one that never reached it
        // counts from its start (its share is held as a missing member's, or nobody spends).
        let seen = self.lock().last_seen_until.unwrap_or(self.created);
        let opens = seen + self.silence() + self.cfg.window;
        (now < opens).then(|| opens - now)
    }

    /// Runs a script whose failure costs little (a refund, a shared pause, leaving): a failure is
    /// logged at debug as `what`, and nothing else happens.
    async fn best_effort(&self, invocation: &redis::ScriptInvocation<'_>, what: &'static str) {
        let mut connection = self.redis.connection();
        if let Err(error) = self
            .redis
            .run(invocation.invoke_async::<i64>(&mut connection))
            .await
        {
            tracing::debug!(error = format!("{error:#}"), "{what}");
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
            .arg(self.params.window_tolerance_ms(priority, units.max(1)))
            .arg(self.params.burst_interval_ms)
            .arg(self.params.burst_tolerance_ms())
            .arg(units)
            .arg(debt)
            .arg(self.slot_ms())
            .arg(ms(self.cfg.window).ceil() as u64 * 2)
            .arg(ms(self.cfg.window))
            .arg(&self.member)
            .arg(self.replicas)
            .arg(self.share_units)
            .arg(ms(self.silence()))
            .arg(ms(self.member_timeout()));
        let mut connection = self.redis.connection();
        let sent = Instant::now();
        let answer: anyhow::Result<(i64, i64, u32)> = self
            .redis
            .run(invocation.invoke_async(&mut connection))
            .await;
        let (admitted, wait_ms, held) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                // The call may have reached Redis and refreshed the membership all the same, at
                // the latest when it timed out.
                let until = Instant::now().max(sent + REDIS_COMMAND_TIMEOUT);
                let mut state = self.lock();
                state.last_seen_until = Some(state.last_seen_until.map_or(until, |u| u.max(until)));
                return Err(error);
            }
        };
        {
            let answered = Instant::now();
            let mut state = self.lock();
            state.last_seen_until =
                Some(state.last_seen_until.map_or(answered, |u| u.max(answered)));
        }
        let before = self.held.swap(held, Ordering::Relaxed);
        if held > before {
            tracing::warn!(
                budget = self.name,
                held,
                "a replica sharing the Mint budget went silent (cut off from Redis, or gone): its share is held back"
            );
        }
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
            // With other replicas, the local share opens a window after this replica's last
            // shared spending (see the module documentation): nothing to charge it with.
            if self.replicas <= 1 {
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
            let wait = if self.should_probe(now) && self.reachable().await {
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
            let wait = match wait {
                None if !self.is_degraded() => {
                    self.record_shared(units);
                    drop(guard);
                    return Ok(self.issue(Admission::Shared { units }));
                }
                None => match self.local_share_closed_for(Instant::now()) {
                    None => {
                        // Redis is down: the local share, still in priority order (the fallback
                        // has its own queue), then leave ours.
                        let result = self.spend_locally(units, priority).await;
                        drop(guard);
                        return result;
                    }
                    // Not yet (or no longer): wait, trying Redis again meanwhile.
                    Some(closed) => closed.min(PROBE_INTERVAL),
                },
                Some(wait) => wait,
            };
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
            // A lost refund only makes the fleet slightly slower for one window.
            self.best_effort(&invocation, "cannot refund shared budget units")
                .await;
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
            self.best_effort(&invocation, "cannot share a 429 pause")
                .await;
        })
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.left.store(true, Ordering::Relaxed);
            let script = redis::Script::new(LEAVE);
            let mut invocation = script.prepare_invoke();
            invocation.key(&self.keys[4]).arg(&self.member);
            // The share is then held back until the member timeout, as for a crash.
            self.best_effort(&invocation, "cannot leave the shared budget's membership")
                .await;
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
            // The units of the window the others may spend while silent members' shares are
            // held back.
            let held_units = self.held_shares() * self.share_units;
            BudgetSnapshot {
                limit_units: self.cfg.limit_units,
                effective_limit_units: self.cfg.limit_units.saturating_sub(held_units),
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
    fn admissible_units_are_one_capacity_plus_the_rate_over_the_span() {
        let p = GcraParams::from_budget(&BudgetConfig::default());
        // 9 at once and 81 a minute; the burst rule (9 at once, 9 a second) binds only briefly.
        assert!((p.admissible_units(Duration::from_secs(60)) - 90.0).abs() < 1e-9);
        assert!((p.admissible_units(Duration::from_secs(120)) - 171.0).abs() < 1e-9);
        assert!((p.admissible_units(Duration::ZERO) - 9.0).abs() < 1e-9);
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
