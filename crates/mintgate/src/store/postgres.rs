//! The store for several replicas: PostgreSQL.
//!
//! The statements are [`super::sql`]'s; what a shared database adds is this [`Dialect`]: claims
//! take the most urgent due job with `FOR UPDATE SKIP LOCKED` (replicas never wait on each other's
//! rows), every write under a lease locks the job row before it checks the fencing token, and new
//! work is announced with `NOTIFY` so idle workers of every replica wake at once
//! ([`PgStore::listen`]) instead of polling tightly.
//!
//! The schema is the connection's `search_path` (the default `public`, or e.g.
//! `postgres://…/db?options[search_path]=mintgate`); migrations are in `migrations/postgres`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgQueryResult};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Wake;
use super::schema::OpenMode;
use super::sql::{Dialect, SqlStore};
use crate::model::JobKind;

/// The PostgreSQL implementation of [`super::Store`].
pub type PgStore = SqlStore<Postgres>;

/// The `LISTEN/NOTIFY` channel on which enqueued work is announced (the payload is the job kind).
pub const WAKE_CHANNEL: &str = "mintgate_jobs";

/// The channel on which committed events are announced (no payload): the feed's long polls and
/// the deliveries of every replica wake at once.
pub const EVENTS_CHANNEL: &str = "mintgate_events";

/// The advisory lock (a transaction-level one) that hands out `outbox.seq` in commit order; the
/// key is an arbitrary constant of this application's ("mintobx1" in ASCII).
pub const OUTBOX_LOCK_KEY: i64 = 0x6d69_6e74_6f62_7831;

/// Connections per replica: workers claim and commit on short transactions, downloads hold none
/// while they stream.
const POOL_CONNECTIONS_MAX: u32 = 16;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const WRITING_CTES: bool = true;
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = "FOR UPDATE OF j SKIP LOCKED";
    // The channel is `WAKE_CHANNEL`.
    const NOTIFY_WORK: Option<&'static str> = Some("SELECT pg_notify('mintgate_jobs', $1)");
    const MIGRATIONS_TABLE_COUNT: &'static str = "SELECT COUNT(*) FROM pg_catalog.pg_tables
         WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'";
    // The key is `OUTBOX_LOCK_KEY`. Held from a transaction's first outbox row through its commit.
    const LOCK_OUTBOX: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(7883954069052749873)");
    // The channel is `EVENTS_CHANNEL`.
    const NOTIFY_EVENTS: Option<&'static str> = Some("SELECT pg_notify('mintgate_events', '')");

    fn json_rows(columns: &[(&str, &str)]) -> String {
        let columns: Vec<String> = columns
            .iter()
            .map(|(name, kind)| format!("{name} {kind}"))
            .collect();
        format!("json_to_recordset($1::json) AS r({})", columns.join(", "))
    }

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn spawn_wake_listener(
        pool: &PgPool,
        wake: Arc<Wake>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(listen(
            pool.clone(),
            WAKE_CHANNEL,
            Bell::Work(wake),
            shutdown,
        ))
    }

    fn spawn_events_listener(
        pool: &PgPool,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(listen(
            pool.clone(),
            EVENTS_CHANNEL,
            Bell::Events(wake),
            shutdown,
        ))
    }
}

impl SqlStore<Postgres> {
    /// Connects to a `postgres://…` URL and runs the migrations.
    pub async fn open_url(url: &str) -> anyhow::Result<Self> {
        Self::open_url_with(url, OpenMode::Migrate).await
    }

    /// Connects to a `postgres://…` URL in `mode` (read-only: every transaction is
    /// `READ ONLY`, so the server refuses any write).
    pub async fn open_url_with(url: &str, mode: OpenMode) -> anyhow::Result<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .context("parsing `service.database_url` as a PostgreSQL URL")?;
        if mode == OpenMode::ReadOnly {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL (`service.database_url`)")?;
        Self::from_pools(pool.clone(), pool, mode)
            .await
            .context("opening the PostgreSQL database (`service.database_url`)")
    }

    /// Listens for [`WAKE_CHANNEL`] and rings `wake` at each notification, until `shutdown`.
    pub fn listen(
        &self,
        wake: Arc<Wake>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        listen(
            self.pool().clone(),
            WAKE_CHANNEL,
            Bell::Work(wake),
            shutdown,
        )
    }
}

/// What a notification rings.
enum Bell {
    /// The workers of the job kind named by the payload (every kind's for an unknown payload).
    Work(Arc<Wake>),
    /// The feed's long polls and the deliveries.
    Events(Arc<Notify>),
}

impl Bell {
    fn ring(&self, payload: Option<&str>) {
        match self {
            Self::Work(wake) => match payload.and_then(JobKind::parse) {
                Some(kind) => wake.notify(kind),
                None => wake.notify_waiters(),
            },
            Self::Events(wake) => wake.notify_waiters(),
        }
    }
}

/// Listens for `channel` ([`WAKE_CHANNEL`], [`EVENTS_CHANNEL`]) and rings `bell` at each
/// notification, until `shutdown`.
///
/// A lost connection is re-established (sqlx's listener reconnects on the next receive); while it
/// is down the workers still find work through their timers (`pipeline.idle_wait`).
fn listen(
    pool: PgPool,
    channel: &'static str,
    bell: Bell,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut listener = loop {
            let attempt = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            tokio::select! {
                result = attempt => match result {
                    Ok(listener) => break listener,
                    Err(error) => {
                        tracing::warn!(%error, "cannot LISTEN for new work; retrying");
                    }
                },
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        };
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => bell.ring(Some(notification.payload())),
                    // The connection was lost and will be re-established: work may have been
                    // announced meanwhile, so look now.
                    Ok(None) => bell.ring(None),
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.cancelled() => return,
                        }
                    }
                },
                () = shutdown.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_announced_on_the_channel_the_listener_listens_to() {
        let statement = <Postgres as Dialect>::NOTIFY_WORK.unwrap();
        assert!(
            statement.contains(&format!("'{WAKE_CHANNEL}'")),
            "{statement}"
        );
        let statement = <Postgres as Dialect>::NOTIFY_EVENTS.unwrap();
        assert!(
            statement.contains(&format!("'{EVENTS_CHANNEL}'")),
            "{statement}"
        );
        let statement = <Postgres as Dialect>::LOCK_OUTBOX.unwrap();
        assert!(
            statement.contains(&format!("({OUTBOX_LOCK_KEY})")),
            "{statement}"
        );
    }
}
