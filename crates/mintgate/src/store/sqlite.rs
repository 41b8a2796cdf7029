//! The embedded default store: one SQLite file in WAL mode.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions (a deferred transaction that reads before it writes
//! can fail with SQLITE_BUSY without waiting) on one connection of their own (the process's
//! writers queue for it, instead of sleeping in SQLite's busy handler), and commits are fully
//! synchronous, so an answer given
//! after a commit survives a crash or a power cut. One process owns the file, so there are no row
//! locks and no wake-ups to send. The statements are [`super::sql`]'s.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::schema::OpenMode;
use super::sql::{Dialect, SqlStore};

/// The writer's page cache: 32 MiB (a negative `cache_size` is in KiB).
const WRITER_CACHE_SIZE: &str = "-32768";
/// WAL pages (4 KiB each) after which a commit checkpoints them into the database (SQLite's default
/// is 1,000).
const WAL_AUTOCHECKPOINT_PAGES: &str = "8000";

/// The SQLite implementation of [`super::Store`].
pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_ROW: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const NOTIFY_WORK: Option<&'static str> = None;
    const MIGRATIONS_TABLE_COUNT: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'";
    const ONE_WRITER: bool = true;
    const MULTI_STATEMENT_QUERIES: bool = true;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database file and runs the migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::connect(options, OpenMode::Migrate).await
    }

    /// Opens a database given as a `sqlite://…` URL, creating and migrating it if needed.
    pub async fn open_url(url: &str) -> anyhow::Result<Self> {
        Self::open_url_with(url, OpenMode::Migrate).await
    }

    /// Opens a database given as a `sqlite://…` URL in `mode`.
    pub async fn open_url_with(url: &str, mode: OpenMode) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("parsing the database URL {url:?}"))?;
        Self::connect(options, mode).await
    }

    async fn connect(options: SqliteConnectOptions, mode: OpenMode) -> anyhow::Result<Self> {
        let path = options.get_filename().to_owned();
        let name = path.display().to_string();
        let options = options
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let options = match mode {
            OpenMode::Migrate => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await.with_context(|| {
                        format!("creating the database folder {}", parent.display())
                    })?;
                }
                options
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
            }
            OpenMode::ReadWrite | OpenMode::ReadOnly => {
                // Never create a database that is not there: that would hide a wrong path.
                if !path.exists() {
                    anyhow::bail!("there is no SQLite database at {name}");
                }
                // The journal mode is the database's (WAL, set when it was created).
                let options = options.create_if_missing(false);
                if mode == OpenMode::ReadOnly {
                    options.read_only(true)
                } else {
                    options.synchronous(SqliteSynchronous::Full)
                }
            }
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the SQLite database {name}"))?;
        // Writes queue for one connection in this process rather than in SQLite's busy handler.
        // Its statement journals stay in memory: a group commit's multi-row INSERT may touch
        // hundreds of pages, and SQLite spills a statement journal past 64 KiB into a temporary
        // file created, written and deleted for each statement (about a third of the writer's
        // time in issue 16's profile). The statement journal only undoes a failed statement
        // inside its transaction: it is never read after a crash, so durability is the same (the
        // WAL and `synchronous = FULL`). And the writer is not pinged before each transaction: it is a
        // file this process holds open, not a server that may have gone away, and the ping was a
        // round trip to SQLite's thread per batch.
        //
        // Its page cache is larger than SQLite's default (2 MiB): a group commit of webhooks writes
        // index pages all over the unique index, and a page not cached is read again from the
        // file. And it checkpoints the WAL into the database every WAL_AUTOCHECKPOINT_PAGES pages
        // instead of every 1,000: a page written by many commits in between (the end of each
        // index, the pages a burst of webhooks keeps touching) is copied and synced once, not once
        // per 1,000 pages (a fifth of the writer's time in issue 16's profile). Commits are as
        // durable: a commit is in the synced WAL whether or not it was checkpointed yet.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_lazy_with(
                options
                    .pragma("temp_store", "memory")
                    .pragma("cache_size", WRITER_CACHE_SIZE)
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
            );
        Self::from_pools(pool, writer, mode)
            .await
            .with_context(|| format!("opening the SQLite database {name}"))
    }
}
