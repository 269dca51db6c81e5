//! The control database: PostgreSQL (production) or SQLite (the embedded default), one schema
//! and one set of statements for both.
//!
//! Every statement is a `&'static str` with `$n` placeholders (SQLite reads `$1` as the first
//! argument too); values are always bound, never formatted into the text. [`on_db!`] runs the
//! same code against whichever pool is open, so a repository method is written once.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};

use crate::ControlError;

/// The migrations, in order. Applied once each and recorded (`_sqlx_migrations`), so running
/// them again is a no-op; a changed file that was already applied is refused.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "workspaces", include_str!("../migrations/0001_workspaces.sql")),
    (2, "functions_backups", include_str!("../migrations/0002_functions_backups.sql")),
    (3, "conversations", include_str!("../migrations/0003_conversations.sql")),
    (4, "approvals", include_str!("../migrations/0004_approvals.sql")),
];

/// An open pool on one of the two databases.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the open pool, whichever database it is.
#[macro_export]
#[doc(hidden)]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

impl Db {
    /// Opens `url` (`postgres://…` or `sqlite://path`) with at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, ControlError> {
        let bad = |e: sqlx::Error| ControlError::Config(format!("control.database_url: {e}"));
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| ControlError::Config(format!("control.database_url: cannot connect to PostgreSQL: {e}")))?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            // WAL lets readers run beside the one writer; writers wait for each other (busy
            // timeout) rather than fail.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(bad)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new().max_connections(max_connections.clamp(1, 8)).connect_with(options).await.map_err(bad)?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(ControlError::Config(format!("control.database_url: `{url}` is neither postgres://… nor sqlite://…")))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgresql",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), ControlError> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, name, sql)| Migration::new(*v, Cow::Borrowed(*name), MigrationType::Simple, AssertSqlSafe(*sql).into_sql_str(), false))
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        on_db!(self, pool => migrator.run(pool).await).map_err(|e| ControlError::Migrate(e.to_string()))
    }

    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await)
    }
}

/// Reading columns the same way from either database's rows.
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
}

macro_rules! cols_for {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
cols_for!(PgRow);
cols_for!(SqliteRow);

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new identifier: `prefix` and 16 random hex digits (a DNS label, so usable in names of
/// Kubernetes objects).
pub fn new_id(prefix: &str) -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system's random source failing is not recoverable; fall back to time and a counter
    // so an id is still unique within this process.
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = ((now_ms() as u64) << 16 ^ n).to_be_bytes();
    }
    let mut s = String::with_capacity(prefix.len() + 17);
    s.push_str(prefix);
    s.push('-');
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether `e` is a unique-constraint violation (a name already taken).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
