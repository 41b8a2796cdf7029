//! The running simulator: the router, the scheduler that fires due events, the webhook
//! dispatcher and the server loop. The top of the module graph: it wires the handlers
//! (`api`, `auth`, `admin`, `webhook`) to [`Shared`], which knows none of them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::SimConfig;
use crate::server::{Connection, SeverableListener};
use crate::shared::Shared;
use crate::state::WebhookJob;
use crate::{admin, api, auth, webhook};

/// A simulator ready to serve.
pub(crate) struct App {
    shared: Arc<Shared>,
    webhooks: mpsc::UnboundedReceiver<WebhookJob>,
}

impl App {
    /// A simulator for a validated `config` whose API base is `base_url`.
    pub fn new(config: &SimConfig, base_url: String) -> anyhow::Result<Self> {
        let (shared, webhooks) = Shared::new(config, base_url)?;
        Ok(Self { shared, webhooks })
    }

    /// Serves on a bound listener until `shutdown` completes (mini-redis style). The scheduler
    /// and webhook tasks stop with it; open downloads get up to a second to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { shared, webhooks } = self;
        let scheduler = tokio::spawn(run_scheduler(shared.clone()));
        let dispatcher = tokio::spawn(run_webhooks(shared.clone(), webhooks));
        let cancel = shared.cancel.clone();
        let service = router(shared).into_make_service_with_connect_info::<Connection>();
        let graceful = cancel.clone();
        let server = axum::serve(SeverableListener::new(listener), service)
            .with_graceful_shutdown(async move { graceful.cancelled().await });
        let server = tokio::spawn(async move { server.await });
        shutdown.await;
        cancel.cancel();
        let _ = scheduler.await;
        let _ = dispatcher.await;
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
            _ = app.woken() => {}
            _ = sleep => {}
        }
    }
}

/// Starts each queued HTTP request step in its own task.
async fn run_webhooks(app: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<WebhookJob>) {
    loop {
        tokio::select! {
            _ = app.cancel.cancelled() => return,
            job = queue.recv() => match job {
                Some(job) => {
                    tokio::spawn(webhook::deliver(app.clone(), job));
                }
                None => return,
            },
        }
    }
}

fn router(app: Arc<Shared>) -> Router {
    Router::new()
        .route("/auth/open/connect/token", post(auth::token))
        .nest("/mint", api::routes())
        .nest("/_sim", admin::routes::routes())
        .fallback(api::not_found)
        .with_state(app)
}
