//! `SharedLog` on PostgreSQL: what a server needs to follow the log that
//! other servers of the same database append to (migration 0013): the
//! positions stored after a point, the context epoch (`log_context`) and
//! who moved it, and a wake-up on `LISTEN fusion_log`. Knows nothing of the
//! engine; `engine::follow` decides what to fold.
//!
//! Positions are commit-ordered (`LOCK_LOG_HEAD`): a transaction holds the
//! `log_head` row lock from numbering its events to its commit, so when a
//! reader sees position p, every position below p was committed before it
//! (or never will be: a rolled-back transaction does not move the head).
//! Reading `pos > last seen` therefore skips nothing.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{AsyncMessage, Connection, NoTls};

use super::{PostgresStore, connection_config, describe, pg_error, pool_error, tls};
use crate::domain::LogPosition;
use crate::store::{SharedLog, StoreError};

/// The channel appends and context changes notify (migration 0013).
const CHANNEL: &str = "fusion_log";

/// Bumps the context epoch in the caller's transaction and wakes the
/// followers (at commit); answers the new epoch, which no other
/// transaction can also have been given (the row lock is held to commit).
/// The change takes the next log position (`log_head`, whose lock every
/// append takes first: call this before the change's other statements, so
/// an erasure never waits for the head while holding rows an append waits
/// for), recorded as the latest context position (migration 0015).
pub(super) async fn bump_context(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, StoreError> {
    let position: i64 = tx
        .query_one("UPDATE log_head SET pos = pos + 1 RETURNING pos - 1", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    let epoch = tx
        .query_one(
            "UPDATE log_context SET epoch = epoch + 1, pos = $1 RETURNING epoch",
            &[&position],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map_err(pg_error)?;
    Ok(epoch)
}

/// First wait before the listener connects again after losing its
/// connection; it doubles up to `RELISTEN_MAX` (the poll covers meanwhile).
const RELISTEN: Duration = Duration::from_millis(200);
const RELISTEN_MAX: Duration = Duration::from_secs(30);

/// The context epochs this process's own registrations and erasures made,
/// not yet seen by its follower: each was followed by a rebuild of this
/// server's state already, so seeing it again must not rebuild twice.
#[derive(Debug, Default)]
pub(super) struct OwnContext {
    epochs: parking_lot::Mutex<BTreeSet<i64>>,
}

impl OwnContext {
    /// Records an epoch this process made (after its commit).
    pub(super) fn made(&self, epoch: i64) {
        self.epochs.lock().insert(epoch);
    }
}

/// The log as other servers append to it: `PostgresStore::shared_log`.
/// One per follower (it owns the listener's wake-ups).
pub struct LogWatch {
    pool: Pool,
    own: Arc<OwnContext>,
    wake: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Starts listening for the log's changes (its own connection, outside
    /// the pool; connected again with back-off when lost) and answers what
    /// a follower reads the log through. Must be called within a tokio
    /// runtime.
    pub fn shared_log(&self) -> LogWatch {
        let wake = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(listen(Arc::clone(&self.url), Arc::clone(&wake)));
        LogWatch {
            pool: self.pool.clone(),
            own: Arc::clone(&self.own_context),
            wake,
            listener,
        }
    }
}

impl SharedLog for LogWatch {
    fn positions_after(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LogPosition>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let after = after.map_or(-1, |p| p as i64);
            // An index-only scan of `events_pos`: no body is read for
            // positions the server has folded already.
            let stmt = client
                .prepare_cached("SELECT pos FROM events WHERE pos > $1 ORDER BY pos LIMIT $2")
                .await
                .map_err(pg_error)?;
            let rows = client
                .query(&stmt, &[&after, &(limit as i64)])
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        }
    }

    fn context_epoch(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move { read_context(&pool).await.map(|e| e as u64) }
    }

    fn context_since(
        &self,
        seen: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send {
        let (pool, own) = (self.pool.clone(), Arc::clone(&self.own));
        async move {
            let now = read_context(&pool).await?;
            let mut mine = own.epochs.lock();
            let foreign = (seen as i64 + 1..=now).any(|e| !mine.contains(&e));
            mine.retain(|e| *e > now);
            Ok((now as u64, foreign))
        }
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        let wake = Arc::clone(&self.wake);
        async move { wake.notified().await }
    }
}

async fn read_context(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_one("SELECT epoch FROM log_context", &[])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// The listener task: `LISTEN fusion_log` on a connection of its own, each
/// notification a wake-up (`Notify` keeps one while nobody waits, so none
/// is lost between two passes); reconnects when the connection is lost.
async fn listen(url: Arc<str>, wake: Arc<tokio::sync::Notify>) {
    let mut wait = RELISTEN;
    loop {
        let mut listened = false;
        let outcome = listen_once(&url, &wake, &mut listened).await;
        // A listener that was up and then lost starts the back-off over:
        // only failures in a row double it (red team: it doubled at every
        // loss for the life of the process, up to 30 s without LISTEN).
        if listened {
            wait = RELISTEN;
        }
        if let Err(e) = outcome {
            tracing::warn!(cause = %e, retry_in = ?wait, "cannot listen for the log's changes; polling meanwhile");
        }
        // Whatever came while not listening is found by the next pass.
        wake.notify_one();
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RELISTEN_MAX);
    }
}

/// One listening connection, until it is lost; sets `listened` once its
/// LISTEN took effect.
async fn listen_once(
    url: &str,
    wake: &Arc<tokio::sync::Notify>,
    listened: &mut bool,
) -> Result<(), StoreError> {
    let (config, check) = connection_config(url)?;
    match check {
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(pg_error)?;
            serve_listener(client, connection, wake, listened).await
        }
        Some(check) => {
            let (client, connection) = config
                .connect(tls::connector(&check)?)
                .await
                .map_err(pg_error)?;
            serve_listener(client, connection, wake, listened).await
        }
    }
}

async fn serve_listener<S, T>(
    client: tokio_postgres::Client,
    mut connection: Connection<S, T>,
    wake: &Arc<tokio::sync::Notify>,
    listened: &mut bool,
) -> Result<(), StoreError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    // The connection is driven by polling its messages, so the LISTEN
    // makes progress only while they are polled too.
    loop {
        tokio::select! {
            done = &mut listening => {
                done.map_err(pg_error)?;
                break;
            }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg_error(e)),
                None => return Err(StoreError::Unavailable("the listening connection closed".into())),
            }
        }
    }
    *listened = true;
    // Anything appended before the LISTEN took effect is found by a pass.
    wake.notify_one();
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
            Ok(_) => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "the listening connection failed: {}",
                    describe(&e)
                )));
            }
        }
    }
    Ok(())
}
