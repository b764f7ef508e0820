//! The store's writer: one thread with its own runtime, owning the [`Store`], fed by a queue.
//!
//! Why a thread of its own: sqlx's PostgreSQL connections belong to the runtime they were made
//! on, and the server's workers are separate single-threaded runtimes; with every use of the
//! pool on one runtime there is no question of which one drives a connection. And why a queue:
//! the live path must never wait on the database. A session or the `ChatServer` pushes a
//! message and goes on; the writer takes whatever has queued up (up to [`MAX_BATCH`], waiting
//! at most [`GATHER`] for more) and writes it in one transaction, so a busy server writes large
//! batches and a quiet one a few messages per commit, 5 ms late at most.
//!
//! The queue is bounded by `store.max_backlog` messages (counted, not by the channel, so that
//! pushing never blocks): past it, messages are delivered but not kept, and the writer logs how
//! many were dropped at most once a minute. A batch that fails to write is dropped the same way
//! (counted and logged), so a database that is down costs neither memory nor delivery.
//!
//! `history` goes through the same queue: the writer commits every message queued before the
//! request, then answers it, so the asker always sees what it has just said and what it has
//! just been delivered.
//!
//! So do the requests of offline delivery (see docs/ARCHITECTURE.md): storing a message for an
//! offline account (answered only once committed, so `queued` means stored), a page of an
//! account's missed messages, and moving its read position forward. The queue being FIFO is
//! what orders a `queued` answer before any later login's replay.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use log::{debug, info, warn};
use tokio::{
    sync::{mpsc, oneshot},
    time::{interval, timeout, timeout_at, Instant, MissedTickBehavior},
};

use super::{Account, Conversation, ConversationIds, NewMessage, Store, StoreError, StoredMessage};
use crate::config::{StoreSettings, StoreUrl};

/// Most messages written in one transaction.
const MAX_BATCH: usize = 1000;
/// Longest the writer waits for more messages before it writes the ones it has. Each commit
/// costs SQLite a WAL append of every page it touched (the table's last page and a leaf of each
/// index) whatever the number of rows: under a steady trickle (room1000's 500 lines/s), written
/// at once, nearly every message was a commit of its own. Nothing waits for it but the store:
/// `history`, `flush` and `stop` end the gathering at once.
const GATHER: Duration = Duration::from_millis(5);
/// Longest a write or a query may take before it is given up.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// How often messages past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most one warning about dropped messages or failed writes is repeated.
const REPORT_EVERY: Duration = Duration::from_secs(60);

enum Command {
    Write(NewMessage),
    Ask(Request),
}

/// What the writer does between batches: everything queued before it is written first.
enum Request {
    History {
        conversation: Conversation,
        limit: u32,
        before: Option<i64>,
        reply: oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>,
    },
    /// An account operation (see [`AccountRequest`]).
    Account(AccountRequest),
    /// Write everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
    /// Store a direct message for an offline account, if the account exists (see
    /// [`Store::queue`]); answers whether it was stored. Because it is answered only after
    /// everything queued before it, and a replay's query is queued after the login that
    /// follows, a login always sees a message already answered `queued`.
    Queue {
        message: NewMessage,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// One page of an account's missed messages, after its read position and after `after`;
    /// `None` if there is no such account.
    Missed {
        account: String,
        after: i64,
        limit: u32,
        reply: oneshot::Sender<Result<Option<Vec<StoredMessage>>, StoreError>>,
    },
    /// Move an account's read position forward to `id` (never back).
    MarkRead { account: String, id: i64 },
    /// Ask the database for next to nothing: is it there? (`/readyz`)
    Ping(oneshot::Sender<Result<(), StoreError>>),
    /// Flush, answer, and stop.
    Stop(oneshot::Sender<()>),
}

/// What the server asks of the accounts table. Answered in turn with everything else the
/// writer does, so an account made is visible to the next request.
enum AccountRequest {
    Get {
        name: String,
        reply: oneshot::Sender<Result<Option<Account>, StoreError>>,
    },
    Create {
        name: String,
        password_hash: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    SetPassword {
        name: String,
        password_hash: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Keys {
        reply: oneshot::Sender<Result<Vec<String>, StoreError>>,
    },
}

impl AccountRequest {
    async fn answer(self, store: &Store) {
        macro_rules! run {
            ($reply:expr, $operation:expr) => {{
                let result = timeout(OPERATION_TIMEOUT, $operation)
                    .await
                    .unwrap_or(Err(StoreError::TimedOut));
                if let Err(error) = &result {
                    debug!("account query failed: {error}");
                }
                let _ = $reply.send(result);
            }};
        }
        match self {
            AccountRequest::Get { name, reply } => run!(reply, store.account(&name)),
            AccountRequest::Create {
                name,
                password_hash,
                reply,
            } => run!(reply, store.create_account(&name, &password_hash)),
            AccountRequest::SetPassword {
                name,
                password_hash,
                reply,
            } => run!(reply, store.set_password(&name, &password_hash)),
            AccountRequest::Keys { reply } => run!(reply, store.account_keys()),
        }
    }
}

/// What the writer has done, for the log and the benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages committed.
    pub written: u64,
    /// Transactions that committed them.
    pub batches: u64,
    /// The largest batch.
    pub largest_batch: u64,
    /// Messages not kept: past `store.max_backlog`, or in a batch that failed to write.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    /// Messages pushed and not yet written (or given up).
    backlog: AtomicUsize,
    written: AtomicU64,
    batches: AtomicU64,
    largest_batch: AtomicU64,
    dropped: AtomicU64,
}

/// The server's side of the store: cheap to clone, and never waits on the database.
#[derive(Clone)]
pub struct StoreHandle {
    queue: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    max_backlog: usize,
    max_history_page: usize,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Opens the store `settings` name on a thread of its own and starts its writer; `None`
    /// when `store.url` is `""`. Fails if the store cannot be opened or is newer than this
    /// binary.
    pub async fn start(settings: &StoreSettings) -> Result<Option<StoreHandle>, StoreError> {
        let Some(url) = settings.url.clone() else {
            return Ok(None);
        };
        let (opened, open_result) = oneshot::channel();
        let (queue, commands) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        let retention = settings.retention;
        let nice = settings.writer_nice;
        std::thread::Builder::new()
            .name("store".to_owned())
            .spawn(move || {
                // Before anything else, so that the threads made from here (sqlx's SQLite
                // workers, the runtime's) start with the same priority.
                // Why: the writer is work that may fall behind, and the live path is not. On a
                // box that chat alone keeps busy, a writer at the same priority takes its CPU
                // from delivery; at a lower one it writes with what the live path leaves, and
                // what it cannot keep up with is shed through `store.max_backlog`, counted and
                // logged (docs/PERFORMANCE.md, "The store's cost", has the trade measured).
                if let Err(error) = crate::priority::lower_this_thread(nice) {
                    warn!("store: cannot lower the writer's priority: {error}");
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened.send(Err(StoreError::Open {
                            url: url.to_string(),
                            reason: format!("cannot start its thread: {error}"),
                        }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Store::open(&url).await {
                        Ok(store) => {
                            info!("keeping messages in {url}");
                            let _ = opened.send(Ok(()));
                            Writer {
                                file: SqliteFile::of(&url),
                                store,
                                conversations: ConversationIds::default(),
                                counters: writer_counters,
                                retention,
                                last_report: None,
                                reported_dropped: 0,
                            }
                            .run(commands)
                            .await;
                        }
                        Err(error) => {
                            let _ = opened.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|error| StoreError::Open {
                url: settings
                    .url
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                reason: format!("cannot start its thread: {error}"),
            })?;
        match open_result.await {
            Ok(Ok(())) => Ok(Some(StoreHandle {
                queue,
                counters,
                max_backlog: settings.max_backlog,
                max_history_page: settings.max_history_page,
            })),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::Open {
                url: settings
                    .url
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                reason: "its thread stopped".to_owned(),
            }),
        }
    }

    /// Hands a delivered message to the writer. Never waits: past `store.max_backlog` queued
    /// messages it is dropped and counted instead.
    pub fn keep(&self, message: NewMessage) {
        let counters = &self.counters;
        if counters.backlog.fetch_add(1, Ordering::Relaxed) >= self.max_backlog {
            counters.backlog.fetch_sub(1, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.queue.send(Command::Write(message)).is_err() {
            // The writer has stopped (the server is shutting down).
            counters.backlog.fetch_sub(1, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Most messages one `history` request may ask for (`store.max_history_page`).
    pub fn max_history_page(&self) -> usize {
        self.max_history_page
    }

    /// The last `limit` messages of `conversation` below `before`, oldest first, after every
    /// message queued before this call is written. Gives up after `wait`.
    pub async fn history(
        &self,
        conversation: Conversation,
        limit: u32,
        before: Option<i64>,
        wait: Duration,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.ask(
            |reply| Request::History {
                conversation,
                limit,
                before,
                reply,
            },
            wait,
        )
        .await
    }

    /// Sends an account request made with its reply channel, and waits at most `wait`.
    async fn account_request<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> AccountRequest,
        wait: Duration,
    ) -> Result<T, StoreError> {
        self.ask(|reply| Request::Account(request(reply)), wait)
            .await
    }

    /// Sends a request made with its reply channel, behind everything queued so far, and
    /// waits at most `wait` for the answer (a stopped writer or no answer: `TimedOut`).
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
        wait: Duration,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Ask(request(reply));
        self.queue.send(command).map_err(|_| StoreError::TimedOut)?;
        match timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(StoreError::TimedOut),
        }
    }

    /// The account registered as `name` (any spelling), if any.
    pub async fn account(&self, name: &str, wait: Duration) -> Result<Option<Account>, StoreError> {
        let name = name.to_owned();
        self.account_request(|reply| AccountRequest::Get { name, reply }, wait)
            .await
    }

    /// Makes the account `name`; `false` if the name is registered already.
    pub async fn create_account(
        &self,
        name: &str,
        password_hash: String,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.account_request(
            |reply| AccountRequest::Create {
                name,
                password_hash,
                reply,
            },
            wait,
        )
        .await
    }

    /// Replaces the password hash of `name`'s account; `false` if there is no such account.
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: String,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.account_request(
            |reply| AccountRequest::SetPassword {
                name,
                password_hash,
                reply,
            },
            wait,
        )
        .await
    }

    /// The folded names of every account.
    pub async fn account_keys(&self, wait: Duration) -> Result<Vec<String>, StoreError> {
        self.account_request(|reply| AccountRequest::Keys { reply }, wait)
            .await
    }

    /// Asks the writer to store `message` (a direct message for an offline user) for its
    /// recipient's account, after everything queued so far. The request is on the queue when
    /// this returns — so its place in the writer's order is fixed by the caller (the
    /// `ChatServer`, between a failed lookup and any later login) — and the answer comes
    /// through the returned [`Queueing`].
    pub fn queue(&self, message: NewMessage) -> Queueing {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .queue
            .send(Command::Ask(Request::Queue { message, reply }))
            .is_ok();
        Queueing(sent.then_some(answer))
    }

    /// One page (at most `limit`) of the messages queued for `account` above both its read
    /// position and `after`, oldest first; `None` if there is no such account. Gives up after
    /// `wait`.
    pub async fn missed(
        &self,
        account: &str,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        let account = account.to_owned();
        self.ask(
            |reply| Request::Missed {
                account,
                after,
                limit,
                reply,
            },
            wait,
        )
        .await
    }

    /// Moves `account`'s read position forward to `id`, behind the messages queued so far.
    /// Never waits; a failure is logged (the messages are then replayed again next time).
    pub fn mark_read(&self, account: &str, id: i64) {
        let _ = self.queue.send(Command::Ask(Request::MarkRead {
            account: account.to_owned(),
            id,
        }));
    }

    /// Waits (at most `wait`) until every message queued so far is written or given up.
    pub async fn flush(&self, wait: Duration) -> bool {
        let (done, answer) = oneshot::channel();
        if self.queue.send(Command::Ask(Request::Flush(done))).is_err() {
            return false;
        }
        matches!(timeout(wait, answer).await, Ok(Ok(())))
    }

    /// Whether the store answers: the writer asks the database for next to nothing once
    /// what is queued before is written. Gives up after `wait`; an error after a stop.
    pub async fn ping(&self, wait: Duration) -> Result<(), StoreError> {
        self.ask(Request::Ping, wait).await
    }

    /// Writes what is queued (waiting at most `wait`) and stops the writer; later messages are
    /// dropped. Logs what the writer did.
    pub async fn stop(&self, wait: Duration) {
        let (done, answer) = oneshot::channel();
        if self.queue.send(Command::Ask(Request::Stop(done))).is_ok() {
            if let Err(_) | Ok(Err(_)) = timeout(wait, answer).await {
                warn!("the store did not finish writing within {wait:?}");
            }
        }
        let stats = self.stats();
        info!(
            "store: {} messages written in {} batches (largest {}), {} not kept",
            stats.written, stats.batches, stats.largest_batch, stats.dropped
        );
    }

    /// Messages handed over and not yet written or given up (at most `store.max_backlog`).
    pub fn backlog(&self) -> usize {
        self.counters.backlog.load(Ordering::Relaxed)
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            written: c.written.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The answer to [`StoreHandle::queue`], to come.
pub struct Queueing(Option<oneshot::Receiver<Result<bool, StoreError>>>);

impl Queueing {
    /// Whether the message was stored (committed) for an existing account; an error if the
    /// store failed or did not answer within `wait` — never a false `true`.
    pub async fn outcome(self, wait: Duration) -> Result<bool, StoreError> {
        let Some(answer) = self.0 else {
            return Err(StoreError::TimedOut);
        };
        match timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(StoreError::TimedOut),
        }
    }
}

/// The SQLite file as it was opened. SQLite keeps writing to the file it has open even when
/// that file has been removed (its data then vanishes at the next start), replaced, or made
/// read-only (an open descriptor keeps its rights), and says nothing. Before storing a message
/// whose sender is told `queued`, the writer looks: a file that is not the one it opened, or
/// that is read-only, makes the answer `store-unavailable` rather than a promise it cannot keep.
struct SqliteFile {
    path: std::path::PathBuf,
    /// Device and inode when opened.
    identity: (u64, u64),
}

impl SqliteFile {
    fn of(url: &StoreUrl) -> Option<SqliteFile> {
        use std::os::unix::fs::MetadataExt;
        let StoreUrl::Sqlite(path) = url else {
            return None;
        };
        let metadata = std::fs::metadata(path).ok()?;
        Some(SqliteFile {
            path: path.clone(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// Whether the file is still the one opened, and writable.
    fn check(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let shown = self.path.display();
        let metadata = std::fs::metadata(&self.path)
            .map_err(|error| StoreError::FileChanged(format!("{shown} is gone: {error}")))?;
        if (metadata.dev(), metadata.ino()) != self.identity {
            return Err(StoreError::FileChanged(format!(
                "{shown} was replaced since it was opened"
            )));
        }
        if metadata.permissions().readonly() {
            return Err(StoreError::FileChanged(format!(
                "{shown} was made read-only"
            )));
        }
        Ok(())
    }
}

struct Writer {
    /// The SQLite file, to check before a message is stored for an offline user.
    file: Option<SqliteFile>,
    store: Store,
    /// The conversations written to so far: their ids and newest messages.
    conversations: ConversationIds,
    counters: Arc<Counters>,
    retention: Option<Duration>,
    /// When a warning was last logged, so there is at most one a minute.
    last_report: Option<Instant>,
    /// Dropped messages already reported.
    reported_dropped: u64,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut prune = interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut report = interval(REPORT_EVERY);
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let command = tokio::select! {
                command = commands.recv() => command,
                _ = prune.tick() => {
                    self.prune().await;
                    continue;
                }
                _ = report.tick() => {
                    self.report_dropped();
                    continue;
                }
            };
            let Some(mut command) = command else {
                break; // every handle is gone
            };
            let gathered_until = Instant::now() + GATHER;
            // Take whatever else has queued up, up to a batch, stopping at a request.
            let pending = loop {
                match command {
                    Command::Write(message) => batch.push(message),
                    Command::Ask(request) => break Some(request),
                }
                if batch.len() >= MAX_BATCH {
                    break None;
                }
                match commands.try_recv() {
                    Ok(next) => command = next,
                    // A trickle: wait a little for more, so that many messages share a commit.
                    Err(_) => match timeout_at(gathered_until, commands.recv()).await {
                        Ok(Some(next)) => command = next,
                        Ok(None) | Err(_) => break None,
                    },
                }
            };
            if !batch.is_empty() {
                self.write(&mut batch).await;
            }
            match pending {
                None => {}
                Some(Request::History {
                    conversation,
                    limit,
                    before,
                    reply,
                }) => {
                    let found = timeout(
                        OPERATION_TIMEOUT,
                        self.store.history(&conversation, limit, before),
                    )
                    .await
                    .unwrap_or(Err(StoreError::TimedOut));
                    if let Err(error) = &found {
                        debug!("history query failed: {error}");
                    }
                    let _ = reply.send(found);
                }
                Some(Request::Account(request)) => request.answer(&self.store).await,
                Some(Request::Flush(done)) => {
                    let _ = done.send(());
                }
                Some(Request::Queue { message, reply }) => {
                    let stored = match self.file.as_ref().map_or(Ok(()), SqliteFile::check) {
                        Ok(()) => timeout(OPERATION_TIMEOUT, self.store.queue(&message))
                            .await
                            .unwrap_or(Err(StoreError::TimedOut)),
                        Err(error) => Err(error),
                    };
                    // Its conversation's chain now ends at that message (or may: a timed-out
                    // statement can still commit).
                    self.conversations.forget_one(&message.conversation);
                    if let Err(error) = &stored {
                        if self.may_report() {
                            warn!("store: cannot keep a message for an offline user: {error}");
                        }
                    }
                    let _ = reply.send(stored);
                }
                Some(Request::Missed {
                    account,
                    after,
                    limit,
                    reply,
                }) => {
                    let page = async {
                        let Some(read) = self.store.read_position(&account).await? else {
                            return Ok(None);
                        };
                        let after = after.max(read);
                        self.store.missed(&account, after, limit).await.map(Some)
                    };
                    let found = timeout(OPERATION_TIMEOUT, page)
                        .await
                        .unwrap_or(Err(StoreError::TimedOut));
                    if let Err(error) = &found {
                        debug!("missed messages of {account}: {error}");
                    }
                    let _ = reply.send(found);
                }
                Some(Request::MarkRead { account, id }) => {
                    let marked = timeout(OPERATION_TIMEOUT, self.store.mark_read(&account, id))
                        .await
                        .unwrap_or(Err(StoreError::TimedOut));
                    if let Err(error) = marked {
                        warn!("store: cannot record what {account} has read: {error}");
                    }
                }
                Some(Request::Ping(reply)) => {
                    let answered = timeout(OPERATION_TIMEOUT, self.store.ping())
                        .await
                        .unwrap_or(Err(StoreError::TimedOut));
                    let _ = reply.send(answered);
                }
                Some(Request::Stop(done)) => {
                    // Whatever is still queued is written before the answer.
                    while let Ok(command) = commands.try_recv() {
                        if let Command::Write(message) = command {
                            batch.push(message);
                            if batch.len() >= MAX_BATCH {
                                self.write(&mut batch).await;
                            }
                        }
                    }
                    if !batch.is_empty() {
                        self.write(&mut batch).await;
                    }
                    self.report_dropped();
                    self.store.close().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
        self.store.close().await;
    }

    /// Writes `batch` in one transaction and empties it; a failure drops it, counted.
    async fn write(&mut self, batch: &mut Vec<NewMessage>) {
        let rows = batch.len();
        let result = timeout(
            OPERATION_TIMEOUT,
            self.store.insert_with(batch, &mut self.conversations),
        )
        .await
        .unwrap_or(Err(StoreError::TimedOut));
        batch.clear();
        let c = &self.counters;
        c.backlog.fetch_sub(rows, Ordering::Relaxed);
        match result {
            Ok(()) => {
                c.written.fetch_add(rows as u64, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.largest_batch.fetch_max(rows as u64, Ordering::Relaxed);
            }
            Err(error) => {
                // Where the chains end is read again from the database.
                self.conversations.forget();
                c.dropped.fetch_add(rows as u64, Ordering::Relaxed);
                if self.may_report() {
                    warn!("store: cannot write {rows} messages, not kept: {error}");
                }
            }
        }
    }

    async fn prune(&mut self) {
        let Some(retention) = self.retention else {
            return;
        };
        let cutoff = jiff::Timestamp::now().as_millisecond()
            - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let pruned = timeout(OPERATION_TIMEOUT * 10, self.store.prune(cutoff)).await;
        // Conversations left empty are gone, and an id may be given to another one later.
        self.conversations.forget();
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => info!("store: deleted {deleted} messages past their retention"),
            Ok(Err(error)) => warn!("store: cannot delete old messages: {error}"),
            Err(_) => warn!("store: deleting old messages took too long; trying again later"),
        }
    }

    /// Logs how many messages were dropped since the last report, if any.
    fn report_dropped(&mut self) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_dropped && self.may_report() {
            warn!(
                "store: {} messages delivered but not kept (backlog full or store failing)",
                dropped - self.reported_dropped
            );
            self.reported_dropped = dropped;
        }
    }

    /// Whether a warning may be logged now: at most one per [`REPORT_EVERY`].
    fn may_report(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|last| now.duration_since(last) < REPORT_EVERY)
        {
            return false;
        }
        self.last_report = Some(now);
        true
    }
}
