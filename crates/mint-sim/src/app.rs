//! The running simulator: shared state, the scheduler that fires due events, the router and the
//! server loop.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::SimConfig;
use crate::result_file::mix64;
use crate::server::{Connection, SeverableListener};
use crate::state::{State, WebhookJob};
use crate::{admin, api, auth, webhook};

/// Everything the handlers, the scheduler and the webhook tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub clock: Clock,
    wake: Notify,
    pub http: reqwest::Client,
    pub cancel: CancellationToken,
    /// `http://host:port/mint`, for workflow URLs.
    pub base_url: String,
    trace_counter: AtomicU64,
}

impl Shared {
    pub fn new(config: &SimConfig, base_url: String) -> anyhow::Result<Self> {
        let start = Utc::now();
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).unwrap_or(start);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            state: Mutex::new(State::new(config, start)),
            clock: Clock::new(start, config.time_scale),
            wake: Notify::new(),
            http,
            cancel: CancellationToken::new(),
            base_url,
            trace_counter: AtomicU64::new(config.seed),
        })
    }

    /// The state, as it is (no events run). Hold it briefly and never across an await.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data for a simulator.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state brought up to the simulated now (due events run, their webhooks spawned), and
    /// that now.
    pub fn current(self: &Arc<Self>) -> (MutexGuard<'_, State>, DateTime<Utc>) {
        let now = self.clock.now();
        let mut st = self.lock();
        let jobs = st.process_due(now);
        if !jobs.is_empty() {
            self.spawn_webhooks(jobs);
        }
        (st, now)
    }

    /// Starts the HTTP request steps of `jobs`.
    pub fn spawn_webhooks(self: &Arc<Self>, jobs: Vec<WebhookJob>) {
        for job in jobs {
            tokio::spawn(webhook::deliver(self.clone(), job));
        }
    }

    /// Tells the scheduler that events or the clock changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A W3C-style trace id, unique per answer.
    pub fn trace_id(&self) -> String {
        let n = self.trace_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "00-{:016x}{:016x}-{:016x}-01",
            mix64(n),
            mix64(n ^ 1),
            mix64(n ^ 2)
        )
    }
}

/// Fires due events as simulated time reaches them; woken early by clock changes and new events.
async fn run_scheduler(app: Arc<Shared>) {
    loop {
        let next = {
            let (st, _) = app.current();
            st.next_due()
        };
        let wait = next.and_then(|at| app.clock.real_until(at));
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = app.cancel.cancelled() => return,
            _ = app.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

pub(crate) fn router(app: Arc<Shared>) -> Router {
    Router::new()
        .route("/auth/open/connect/token", post(auth::token))
        .nest("/mint", api::routes())
        .nest("/_sim", admin::routes::routes())
        .fallback(api::not_found)
        .with_state(app)
}

/// Serves the simulator on a bound listener until `shutdown` completes (mini-redis style).
/// The scheduler and webhook tasks stop with it; open downloads get up to a second to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let scheduler = tokio::spawn(run_scheduler(app.clone()));
    let cancel = app.cancel.clone();
    let service = router(app.clone()).into_make_service_with_connect_info::<Connection>();
    let graceful = cancel.clone();
    let server = axum::serve(SeverableListener::new(listener), service)
        .with_graceful_shutdown(async move { graceful.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    cancel.cancel();
    let _ = scheduler.await;
    let abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) if join.is_cancelled() => {}
        Ok(Err(join)) => return Err(join.into()),
        // Long downloads still streaming: cut them.
        Err(_) => abort.abort(),
    }
    Ok(())
}
