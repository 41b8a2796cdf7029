//! The intake's transaction: a group commit of accepted requests ([`crate::ingest`]) in as few
//! round trips as the database allows.
//!
//! sqlx's own transaction costs three messages more than its statements on SQLite: `BEGIN` and
//! `COMMIT` are each a round trip to SQLite's thread that waits for the caller to acknowledge the
//! answer, and the connection's release pings that thread again (in a task of its own) before the
//! next writer may have it. At 32 connections the intake spends most of a batch's time in these
//! hand-overs between threads (issue 16: 269 µs for `BEGIN` against 383 µs for the statement).
//! So the intake's transaction is begun and ended in its statements' own text:
//!
//! - on SQLite, whose queries may hold several statements run in turn, the first statement's query
//!   begins with `BEGIN IMMEDIATE` and the last one's ends with `COMMIT`: a batch of new
//!   executions is one query, a batch of webhooks two or three;
//! - on PostgreSQL, whose prepared statements hold one statement each, `BEGIN` is sent before the
//!   first statement unless that statement is also the last: then it runs alone, its own
//!   transaction (one statement is atomic), with no `BEGIN` and no `COMMIT` at all.
//!
//! Where the process has one writer connection (SQLite), the intake leaves it idle in
//! [`IdleWriter`] after a commit instead of releasing it to the pool: the next batch, or any other
//! writer ([`super::sql::SqlStore::writer_connection`]), takes it from there without the ping.
//!
//! A transaction that did not end (a statement failed, or the future was dropped) is rolled back;
//! a connection that cannot be rolled back, or whose state is unknown, is closed rather than
//! given to the next writer.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Database, Executor};

use super::sql::Dialect;

/// The writer connection the intake used last, kept open and idle (see the module documentation).
pub(super) struct IdleWriter<D: Database>(Mutex<Option<PoolConnection<D>>>);

impl<D: Database> Default for IdleWriter<D> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<D: Database> IdleWriter<D> {
    /// Takes the idle writer connection, if there is one.
    pub(super) fn take(&self) -> Option<PoolConnection<D>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn put(&self, conn: PoolConnection<D>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conn);
    }
}

impl<D: Database> Drop for IdleWriter<D> {
    fn drop(&mut self) {
        // A pooled connection goes back to its pool in a task of the runtime; a store dropped
        // where there is none (after its runtime ended) leaves the connection to the process's
        // exit instead of panicking.
        if let Some(conn) = self.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(conn);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet.
    NotBegun,
    /// Begun; statements may follow.
    Open,
    /// The last statement's text carries the commit (or is its own transaction): it only has to
    /// succeed.
    Committing,
    /// Committed or rolled back: the connection may serve the next writer.
    Ended,
}

/// One transaction of the intake; see the module documentation.
pub(super) struct IntakeTx<D: Dialect> {
    conn: Option<PoolConnection<D>>,
    /// Where the connection waits for the next writer after the transaction (one writer only).
    idle: Option<Arc<IdleWriter<D>>>,
    state: State,
}

impl<D: Dialect> IntakeTx<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
{
    /// A transaction on `conn`, not begun yet; `idle`: where `conn` goes after it ends.
    pub(super) fn new(conn: PoolConnection<D>, idle: Option<Arc<IdleWriter<D>>>) -> Self {
        Self {
            conn: Some(conn),
            idle,
            state: State::NotBegun,
        }
    }

    /// The connection, for a statement whose text came from [`Self::statement`], or for a read
    /// after the last statement (it then reads what was committed).
    pub(super) fn conn(&mut self) -> anyhow::Result<&mut D::Connection> {
        Ok(&mut **self
            .conn
            .as_mut()
            .context("the intake's transaction has no connection")?)
    }

    /// The text to run for the transaction's next statement; `last`: nothing follows it but the
    /// commit. The caller runs it on [`Self::conn`], then calls [`Self::commit`].
    pub(super) async fn statement(&mut self, text: &str, last: bool) -> anyhow::Result<String> {
        let fused = D::MULTI_STATEMENT_QUERIES;
        let (begin, state) = match self.state {
            State::Committing | State::Ended => {
                anyhow::bail!("a statement after the intake transaction's last")
            }
            State::NotBegun if fused => (format!("{};\n", D::BEGIN_WRITE), State::Open),
            // Alone: one statement is its own transaction.
            State::NotBegun if last => (String::new(), State::Committing),
            State::NotBegun => {
                sqlx::raw_sql(AssertSqlSafe(D::BEGIN_WRITE))
                    .execute(self.conn()?)
                    .await
                    .context("beginning a write transaction")?;
                (String::new(), State::Open)
            }
            State::Open => (String::new(), State::Open),
        };
        let commit = if last && fused { ";\nCOMMIT" } else { "" };
        self.state = if commit.is_empty() {
            state
        } else {
            State::Committing
        };
        Ok(format!("{begin}{text}{commit}"))
    }

    /// Ends the transaction after its statements succeeded (sends `COMMIT` unless the last
    /// statement carried it); the connection then waits for the next writer.
    pub(super) async fn commit(mut self) -> anyhow::Result<()> {
        if self.state == State::Open {
            sqlx::raw_sql("COMMIT")
                .execute(self.conn()?)
                .await
                .context("committing the intake's batch")?;
        }
        self.state = State::Ended;
        self.keep_idle();
        Ok(())
    }

    /// Ends the transaction after a statement failed: rolled back, or the connection closed.
    pub(super) async fn rollback(mut self) {
        let Ok(conn) = self.conn() else { return };
        match sqlx::raw_sql("ROLLBACK").execute(conn).await {
            Ok(_) => {
                self.state = State::Ended;
                self.keep_idle();
            }
            // Nothing to roll back (the failure was the `BEGIN`, or a lone statement of
            // PostgreSQL), or the connection is broken: `Drop` closes it either way.
            Err(error) => tracing::debug!(%error, "rolling back the intake's batch"),
        }
    }

    fn keep_idle(&mut self) {
        if let (Some(idle), Some(conn)) = (&self.idle, self.conn.take()) {
            idle.put(conn);
        }
    }
}

impl<D: Dialect> Drop for IntakeTx<D> {
    fn drop(&mut self) {
        if self.state != State::Ended
            && let Some(conn) = self.conn.as_mut()
        {
            // Its transaction may still be open: never the next writer's.
            conn.close_on_drop();
        }
    }
}
