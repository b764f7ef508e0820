//! The message store: every delivered `say` and `talk`, kept in SQLite or PostgreSQL, for
//! `history`.
//!
//! Two layers:
//!
//! * [`Store`] is the database: one enum over the two sqlx pools, with the same schema
//!   (`migrations/sqlite`, `migrations/postgres`), the same operations and the same test suite
//!   (tests/store.rs) for both. Opening it applies the migrations embedded in the binary, and
//!   refuses a database whose schema is newer than the binary knows ([`StoreError::Newer`]).
//! * [`StoreHandle`] (in [`writer`]) is what the server holds: a queue to one writer on a
//!   thread of its own, which writes behind in batches. The live path only ever pushes onto
//!   that queue, so a slow or absent database never delays a message.

mod accounts;
mod writer;

use std::{collections::hash_map::Entry, path::Path, str::FromStr, time::Duration};

use rustc_hash::{FxHashMap, FxHashSet};

use sqlx::{
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    PgPool, Row, SqlitePool,
};

pub use accounts::{Account, AccountSummary};
pub use writer::{Queueing, StoreHandle, StoreStats};

use crate::{codec::fold_name, config::StoreUrl};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A row of a history query, from either backend.
macro_rules! stored {
    ($row:expr) => {
        Ok::<_, sqlx::Error>(StoredMessage {
            id: $row.try_get("id")?,
            sent_at_ms: $row.try_get("sent_at_ms")?,
            sender: $row.try_get("sender")?,
            text: $row.try_get("body")?,
        })
    };
}

/// SQLite's insert: one row, prepared once per batch and run for each message of it, linked
/// to the conversation's message before it (migration 0004). `recipient_key` is left NULL: a
/// message delivered live was queued for nobody.
const SQLITE_INSERT: &str = "INSERT INTO messages (sent_at_ms, conversation_id, previous_id, \
                             sender, body) VALUES (?1, ?2, ?3, ?4, ?5)";

/// A conversation's row, made the first time it is written to (SQLite; PostgreSQL's takes
/// arrays, see [`Store::postgres_conversations`]). Nothing happens if it is there already.
const SQLITE_ADD_CONVERSATION: &str = "INSERT INTO conversations (kind, key) VALUES (?1, ?2) \
                                       ON CONFLICT (kind, key) DO NOTHING";
const SQLITE_CONVERSATION: &str =
    "SELECT id, last_id FROM conversations WHERE kind = ?1 AND key = ?2";
/// Where a conversation's chain now ends, once per conversation a batch wrote to. Never back
/// (here and in every other statement that moves it): a write given up on after a timeout may
/// still commit later (PostgreSQL), and must not undo the end a later write moved past it.
const SQLITE_SET_LAST: &str =
    "UPDATE conversations SET last_id = ?2 WHERE id = ?1 AND last_id < ?2";

/// PostgreSQL's insert: a whole batch as six arrays, and the new ends of its conversations'
/// chains as two more, one statement (so one transaction and one round trip) whatever its
/// size, prepared once. The ids were taken from the table's sequence first
/// ([`POSTGRES_NEXT_IDS`]), so that each message can name the one before it.
const POSTGRES_INSERT: &str = "WITH added AS (INSERT INTO messages (id, previous_id, \
                               sent_at_ms, conversation_id, sender, body) SELECT * FROM \
                               UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], \
                               $5::text[], $6::text[])) UPDATE conversations AS c SET last_id \
                               = u.last_id FROM UNNEST($7::int8[], $8::int8[]) AS u (id, \
                               last_id) WHERE c.id = u.id AND c.last_id < u.last_id";
/// `$1` ids from the sequence that `id BIGSERIAL` made (named by PostgreSQL's rule), in
/// increasing order. The name is a literal so that it is resolved once per statement:
/// `pg_get_serial_sequence` would look it up in the catalogue for every row, and did take a
/// third of PostgreSQL's CPU.
const POSTGRES_NEXT_IDS: &str = "SELECT nextval('messages_id_seq') AS id FROM \
                                 generate_series(1, $1) ORDER BY 1";

/// Most conversation ids a writer remembers ([`ConversationIds`]), give or take a batch; past
/// it, it starts again. About a hundred bytes each.
const MAX_KNOWN_CONVERSATIONS: usize = 100_000;

/// How long connecting to the store may take before start-up gives up: a database that does
/// not answer should stop the server with a sentence, not hang it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long its migrations may take, separately: one that rebuilds a table takes time in
/// proportion to what is kept (0003 on SQLite: about 3.5 µs a message, 2.1 s for 600,000), and
/// giving up half-way only rolls it back, to be started again at the next start-up.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database has a migration this binary does not: it was written by a newer version,
    /// and an older binary writing to it could damage it.
    #[error(
        "the store {url} was made by a newer actor-chat (it has schema version {found}, this \
         binary knows up to {known}): run the newer binary, or point store.url elsewhere"
    )]
    Newer { url: String, found: i64, known: i64 },
    #[error("cannot open the store {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("store error: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer's own calls (see [`Store::insert`]).
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store did not answer in time")]
    TimedOut,
    /// `history|TARGET|N|BEFORE_ID` with an id of another conversation's message: a page
    /// starts from one of the conversation's own (see [`Store::history`]).
    #[error("message {0} is not one of this conversation's")]
    NotInConversation(i64),
    /// The SQLite file was removed, replaced or made read-only under the running server:
    /// SQLite would go on writing to the file it has open, which is gone or not to be written.
    #[error("the store's file {0}")]
    FileChanged(String),
}

/// Whether a message went to a room or to one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Room,
    Direct,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Direct => "direct",
        }
    }
}

/// One conversation, as history looks it up: a room, or the two parties of direct messages.
/// The key is folded, so `Rust` and `rust` are one room and `Bob`/`bob` one person. In the
/// database, a row of `conversations`, which messages point at by its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conversation {
    kind: Kind,
    key: String,
}

impl Conversation {
    /// The room called `name` (any spelling).
    pub fn room(name: &str) -> Conversation {
        Conversation {
            kind: Kind::Room,
            key: fold_name(name).into_owned(),
        }
    }

    /// The direct messages between `a` and `b`, either way round.
    pub fn direct(a: &str, b: &str) -> Conversation {
        let (a, b) = (fold_name(a), fold_name(b));
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Conversation {
            kind: Kind::Direct,
            // No name contains `|`, so the pair is unambiguous.
            key: format!("{first}|{second}"),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// A message to keep, as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// When the server delivered it: milliseconds since the Unix epoch, UTC.
    pub sent_at_ms: i64,
    pub conversation: Conversation,
    pub sender: String,
    /// The recipient's name as the sender wrote it (for a direct message): whom
    /// [`Store::queue`] keeps it for. Not stored (the conversation names both parties).
    pub recipient: Option<String>,
    pub text: String,
}

impl NewMessage {
    /// A `say` to `room` from `sender`, delivered now.
    pub fn room(room: &str, sender: &str, text: &str) -> NewMessage {
        NewMessage {
            sent_at_ms: now_ms(),
            conversation: Conversation::room(room),
            sender: sender.to_owned(),
            recipient: None,
            text: text.to_owned(),
        }
    }

    /// A `talk` from `sender` to `recipient`, delivered now.
    pub fn direct(sender: &str, recipient: &str, text: &str) -> NewMessage {
        NewMessage {
            sent_at_ms: now_ms(),
            conversation: Conversation::direct(sender, recipient),
            sender: sender.to_owned(),
            recipient: Some(recipient.to_owned()),
            text: text.to_owned(),
        }
    }
}

/// A kept message, as history returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Assigned by the database, increasing in the order messages were written.
    pub id: i64,
    pub sent_at_ms: i64,
    pub sender: String,
    pub text: String,
}

impl StoredMessage {
    /// The time as `hist` lines carry it: RFC 3339, UTC, milliseconds
    /// (`2026-12-02T20:31:07.123Z`).
    pub fn time(&self) -> String {
        match jiff::Timestamp::from_millisecond(self.sent_at_ms) {
            Ok(time) => format!("{time:.3}"),
            // Only a row written by something else could hold such a time.
            Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
        }
    }
}

/// A conversation's row as a writer knows it: its id, and its newest message (0 for none),
/// which the next message written to it points back at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chain {
    id: i64,
    last_id: i64,
}

impl Chain {
    /// The previous message of the next one: SQL's NULL for the first.
    fn previous(self) -> Option<i64> {
        (self.last_id > 0).then_some(self.last_id)
    }
}

/// The conversations a writer has already looked up or made, with the newest message of each,
/// so that writing a message costs no query for its conversation. Only what is committed is
/// kept. Forget it all ([`ConversationIds::forget`]) after deleting conversations, or after a
/// write that failed (it may have been committed after all); forget a conversation written to
/// another way ([`Store::queue`]).
#[derive(Debug, Default)]
pub struct ConversationIds(FxHashMap<Conversation, Chain>);

impl ConversationIds {
    /// Forgets every conversation (after [`Store::prune`], which deletes conversations left
    /// empty, or a failed write).
    pub fn forget(&mut self) {
        self.0.clear();
    }

    /// Forgets `conversation`, whose chain was extended by something else than
    /// [`Store::insert_with`].
    pub fn forget_one(&mut self, conversation: &Conversation) {
        self.0.remove(conversation);
    }

    /// Keeps what `found` says (committed).
    fn learn(&mut self, found: impl IntoIterator<Item = (Conversation, Chain)>) {
        self.0.extend(found);
    }

    /// Starts again past [`MAX_KNOWN_CONVERSATIONS`]: before a batch, never during one (whose
    /// conversations must stay known until it is written).
    fn bound(&mut self) {
        if self.0.len() >= MAX_KNOWN_CONVERSATIONS {
            self.0.clear();
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The database, SQLite or PostgreSQL; every operation does the same on both.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Opens (creating a SQLite file and its folder if need be) and migrates the store at
    /// `url`.
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        let connecting = async {
            match url {
                StoreUrl::Sqlite(path) => Self::connect_sqlite(path).await,
                StoreUrl::Postgres(text) => {
                    let options = PgConnectOptions::from_str(text)?;
                    Self::connect_postgres(options).await
                }
            }
        };
        let failed = |reason| StoreError::Open {
            url: url.to_string(),
            reason,
        };
        let store = match tokio::time::timeout(OPEN_TIMEOUT, connecting).await {
            Ok(Ok(store)) => store,
            Ok(Err(error)) => return Err(failed(error.to_string())),
            Err(_) => {
                let waited = OPEN_TIMEOUT.as_secs();
                return Err(failed(format!("no answer within {waited} s")));
            }
        };
        match tokio::time::timeout(MIGRATE_TIMEOUT, store.apply_migrations()).await {
            Ok(Ok(())) => Ok(store),
            Ok(Err(StoreError::Newer { found, known, .. })) => Err(StoreError::Newer {
                url: url.to_string(),
                found,
                known,
            }),
            Ok(Err(error)) => Err(failed(error.to_string())),
            Err(_) => {
                let waited = MIGRATE_TIMEOUT.as_secs();
                Err(failed(format!(
                    "its migrations did not finish within {waited} s"
                )))
            }
        }
    }

    /// A SQLite file in WAL mode, migrated: readers (history) do not wait for the writer, and a
    /// commit is one append to the log rather than a rewrite of the pages.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let store = Self::connect_sqlite(path).await?;
        store.apply_migrations().await?;
        Ok(store)
    }

    /// A PostgreSQL database, migrated (tests pass options with their own `search_path`).
    pub async fn open_postgres(options: PgConnectOptions) -> Result<Store, StoreError> {
        let store = Self::connect_postgres(options).await?;
        store.apply_migrations().await?;
        Ok(store)
    }

    /// [`Store::open_sqlite`] before the migrations.
    async fn connect_sqlite(path: &Path) -> Result<Store, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|error| StoreError::Open {
                url: format!("sqlite://{}", path.display()),
                reason: format!("cannot create {}: {error}", folder.display()),
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses at most the last commits on a power cut, never the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(pool))
    }

    /// [`Store::open_postgres`] before the migrations.
    async fn connect_postgres(options: PgConnectOptions) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        Ok(Store::Postgres(pool))
    }

    /// Applies the migrations the database lacks (see [`migrate`]).
    async fn apply_migrations(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => migrate(&SQLITE_MIGRATIONS, pool).await,
            Store::Postgres(pool) => migrate(&POSTGRES_MIGRATIONS, pool).await,
        }
    }

    /// Writes `messages` in one transaction, in order, so their ids increase in that order.
    /// Looks up (or makes) their conversations as it goes; [`Store::insert_with`] remembers
    /// them from one call to the next.
    pub async fn insert(&self, messages: &[NewMessage]) -> Result<(), StoreError> {
        self.insert_with(messages, &mut ConversationIds::default())
            .await
    }

    /// [`Store::insert`], taking the ids of conversations from `known` and adding those it
    /// looks up or makes (the writer's way: a conversation costs a query once, not per
    /// message).
    ///
    /// Each message points at the one before it in its conversation, and each conversation
    /// written to at its newest message (migration 0004 says why).
    ///
    /// SQLite: on the caller's thread, through one of sqlx's connections locked for the
    /// purpose, one prepared one-row `INSERT` per message (see [`insert_sqlite`]). PostgreSQL:
    /// the conversations it does not know first, then as many ids from the sequence as there
    /// are messages, then the whole batch as one statement of arrays ([`POSTGRES_INSERT`]),
    /// which is one round trip and its own transaction; a statement of arrays wrote about 1.4
    /// times the rows per second of 200-row `INSERT ... VALUES` statements in a transaction
    /// (docs/PERFORMANCE.md).
    pub async fn insert_with(
        &self,
        messages: &[NewMessage],
        known: &mut ConversationIds,
    ) -> Result<(), StoreError> {
        known.bound();
        let written = match self {
            Store::Sqlite(pool) => {
                let mut connection = pool.acquire().await?;
                let mut locked = connection.lock_handle().await?;
                insert_sqlite(locked.as_raw_handle(), messages, known)?
            }
            Store::Postgres(pool) => {
                Self::postgres_conversations(pool, messages, known).await?;
                insert_postgres(pool, messages, known).await?
            }
        };
        known.learn(written);
        Ok(())
    }

    /// Makes the conversations of `messages` that `known` lacks (if they are not in the
    /// database already) and learns their ids: two statements of two arrays each, whatever
    /// their number. Each commits on its own: a conversation made for a batch that then fails
    /// is merely empty, and retention deletes it.
    async fn postgres_conversations(
        pool: &PgPool,
        messages: &[NewMessage],
        known: &mut ConversationIds,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<&Conversation> = Vec::new();
        let mut seen = FxHashSet::default();
        for message in messages {
            let conversation = &message.conversation;
            if !known.0.contains_key(conversation) && seen.insert(conversation) {
                missing.push(conversation);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let kinds: Vec<&str> = missing.iter().map(|c| c.kind.as_str()).collect();
        let keys: Vec<&str> = missing.iter().map(|c| c.key.as_str()).collect();
        sqlx::query(
            "INSERT INTO conversations (kind, key) SELECT * FROM UNNEST($1::text[], $2::text[]) \
             ON CONFLICT (kind, key) DO NOTHING",
        )
        .bind(&kinds)
        .bind(&keys)
        .execute(pool)
        .await?;
        let rows = sqlx::query(
            "SELECT c.id, c.last_id, m.n FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS \
             m (kind, key, n) JOIN conversations AS c ON c.kind = m.kind AND c.key = m.key",
        )
        .bind(&kinds)
        .bind(&keys)
        .fetch_all(pool)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let chain = Chain {
                id: row.try_get("id")?,
                last_id: row.try_get("last_id")?,
            };
            let n: i64 = row.try_get("n")?;
            // `WITH ORDINALITY` counts from 1.
            let Some(conversation) = usize::try_from(n - 1).ok().and_then(|i| missing.get(i))
            else {
                return Err(StoreError::Database(sqlx::Error::RowNotFound));
            };
            found.push(((*conversation).clone(), chain));
        }
        known.learn(found);
        Ok(())
    }

    /// The last `limit` messages of `conversation` with an id below `before` (all, without
    /// it), oldest first: from the newest (or the one `before` points back at) along the
    /// chain, one lookup by id per message.
    ///
    /// `before` is meant to be one of the conversation's own messages (the oldest the asker
    /// has), or any id above its newest. An id that is no message gives an empty page: one
    /// deleted by retention had nothing older left (retention deletes the oldest messages
    /// first), and one never given to a message was never shown to anyone. Another
    /// conversation's message is [`StoreError::NotInConversation`], since finding where it
    /// falls in this one would take a walk along the whole chain.
    pub async fn history(
        &self,
        conversation: &Conversation,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some((id, newest)) = self.page_start(conversation, before).await? else {
            return Ok(Vec::new());
        };
        macro_rules! page {
            ($pool:expr, $sql:literal) => {
                sqlx::query($sql)
                    .bind(newest)
                    .bind(i64::from(limit))
                    .bind(id)
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|row| stored!(row))
                    .collect::<Result<Vec<_>, _>>()?
            };
        }
        // `depth` stops the walk at `limit` rows: a bound that holds on both backends, where
        // an outer `LIMIT` stops PostgreSQL's recursion but not SQLite's. Each step stays in
        // the conversation, so that no link, however it came to be, can show another
        // conversation's messages.
        let messages = match self {
            Store::Sqlite(pool) => page!(
                pool,
                "WITH RECURSIVE page (id, previous_id, sent_at_ms, sender, body, depth) AS ( \
                 SELECT id, previous_id, sent_at_ms, sender, body, CAST(1 AS BIGINT) FROM \
                 messages WHERE id = ?1 AND conversation_id = ?3 UNION ALL SELECT m.id, \
                 m.previous_id, m.sent_at_ms, m.sender, m.body, page.depth + 1 FROM page JOIN \
                 messages AS m ON m.id = page.previous_id AND m.conversation_id = ?3 WHERE \
                 page.depth < ?2) SELECT id, sent_at_ms, sender, body FROM page ORDER BY \
                 depth DESC"
            ),
            Store::Postgres(pool) => page!(
                pool,
                "WITH RECURSIVE page (id, previous_id, sent_at_ms, sender, body, depth) AS ( \
                 SELECT id, previous_id, sent_at_ms, sender, body, CAST(1 AS BIGINT) FROM \
                 messages WHERE id = $1 AND conversation_id = $3 UNION ALL SELECT m.id, \
                 m.previous_id, m.sent_at_ms, m.sender, m.body, page.depth + 1 FROM page JOIN \
                 messages AS m ON m.id = page.previous_id AND m.conversation_id = $3 WHERE \
                 page.depth < $2) SELECT id, sent_at_ms, sender, body FROM page ORDER BY \
                 depth DESC"
            ),
        };
        Ok(messages)
    }

    /// The conversation's id and the newest message of a page of [`Store::history`]:
    /// `conversation`'s newest, or the one before `before` (see there); `None` for an empty
    /// page.
    async fn page_start(
        &self,
        conversation: &Conversation,
        before: Option<i64>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let Some((id, last_id)) = self.chain_end(conversation).await? else {
            return Ok(None);
        };
        let before = match before {
            Some(before) if before <= last_id => before,
            _ => return Ok((last_id > 0).then_some((id, last_id))),
        };
        match self.link(before).await? {
            Some((owner, previous)) if owner == id => Ok(previous.map(|previous| (id, previous))),
            Some(_) => Err(StoreError::NotInConversation(before)),
            None => Ok(None),
        }
    }

    /// `conversation`'s id and newest message (0 for none), if it has a row.
    async fn chain_end(
        &self,
        conversation: &Conversation,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        macro_rules! chain_end {
            ($pool:expr, $sql:expr) => {
                sqlx::query_as($sql)
                    .bind(conversation.kind.as_str())
                    .bind(&conversation.key)
                    .fetch_optional($pool)
                    .await?
            };
        }
        Ok(match self {
            Store::Sqlite(pool) => chain_end!(pool, SQLITE_CONVERSATION),
            Store::Postgres(pool) => chain_end!(
                pool,
                "SELECT id, last_id FROM conversations WHERE kind = $1 AND key = $2"
            ),
        })
    }

    /// The message `id`'s conversation and the message before it there, if it exists.
    async fn link(&self, id: i64) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        macro_rules! link {
            ($pool:expr, $sql:literal) => {
                sqlx::query_as($sql).bind(id).fetch_optional($pool).await?
            };
        }
        Ok(match self {
            Store::Sqlite(pool) => link!(
                pool,
                "SELECT conversation_id, previous_id FROM messages WHERE id = ?1"
            ),
            Store::Postgres(pool) => link!(
                pool,
                "SELECT conversation_id, previous_id FROM messages WHERE id = $1"
            ),
        })
    }

    /// Keeps the direct message `message` for its recipient, who is offline, so that it is
    /// replayed at the recipient's next login — but only if an account by that name exists.
    /// One transaction: the conversation made if need be (one left empty is deleted with
    /// retention), the message as one statement (`INSERT … SELECT … WHERE EXISTS`, so an
    /// account deleted meanwhile cannot leave a message nobody will read), and the
    /// conversation's chain extended to it. Returns whether it was stored (committed). A
    /// writer's [`ConversationIds`] must forget the conversation after this.
    pub async fn queue(&self, message: &NewMessage) -> Result<bool, StoreError> {
        let Some(recipient) = message.recipient.as_deref() else {
            return Ok(false);
        };
        let recipient_key = fold_name(recipient);
        let conversation = &message.conversation;
        macro_rules! queue {
            ($pool:expr, $add_conversation:literal, $add_message:literal, $set_last:literal) => {{
                let mut transaction = $pool.begin().await?;
                sqlx::query($add_conversation)
                    .bind(conversation.kind.as_str())
                    .bind(conversation.key.as_str())
                    .bind(&*recipient_key)
                    .execute(&mut *transaction)
                    .await?;
                let added: Option<i64> = sqlx::query_scalar($add_message)
                    .bind(message.sent_at_ms)
                    .bind(conversation.kind.as_str())
                    .bind(conversation.key.as_str())
                    .bind(message.sender.as_str())
                    .bind(message.text.as_str())
                    .bind(&*recipient_key)
                    .fetch_optional(&mut *transaction)
                    .await?;
                if let Some(id) = added {
                    sqlx::query($set_last)
                        .bind(id)
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await?;
                added.is_some()
            }};
        }
        let stored = match self {
            Store::Sqlite(pool) => queue!(
                pool,
                "INSERT INTO conversations (kind, key) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 \
                 FROM accounts WHERE name_key = ?3) ON CONFLICT (kind, key) DO NOTHING",
                "INSERT INTO messages (sent_at_ms, conversation_id, previous_id, sender, body, \
                 recipient_key) SELECT ?1, c.id, nullif(c.last_id, 0), ?4, ?5, ?6 FROM \
                 conversations AS c WHERE c.kind = ?2 AND c.key = ?3 AND EXISTS (SELECT 1 FROM \
                 accounts WHERE name_key = ?6) RETURNING id",
                "UPDATE conversations SET last_id = ?1 WHERE id = (SELECT conversation_id FROM \
                 messages WHERE id = ?1) AND last_id < ?1"
            ),
            Store::Postgres(pool) => queue!(
                pool,
                "INSERT INTO conversations (kind, key) SELECT $1, $2 WHERE EXISTS (SELECT 1 \
                 FROM accounts WHERE name_key = $3) ON CONFLICT (kind, key) DO NOTHING",
                "INSERT INTO messages (sent_at_ms, conversation_id, previous_id, sender, body, \
                 recipient_key) SELECT $1, c.id, nullif(c.last_id, 0), $4, $5, $6 FROM \
                 conversations AS c WHERE c.kind = $2 AND c.key = $3 AND EXISTS (SELECT 1 FROM \
                 accounts WHERE name_key = $6) RETURNING id",
                "UPDATE conversations SET last_id = $1 WHERE id = (SELECT conversation_id FROM \
                 messages WHERE id = $1) AND last_id < $1"
            ),
        };
        Ok(stored)
    }

    /// The account `name`'s read position: the id of the last queued message its client has
    /// taken (0 before the first). `None` if there is no such account.
    pub async fn read_position(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let key = fold_name(name);
        let row = match self {
            Store::Sqlite(pool) => {
                sqlx::query("SELECT last_read_id FROM accounts WHERE name_key = ?1")
                    .bind(&*key)
                    .fetch_optional(pool)
                    .await?
                    .map(|row| row.try_get::<i64, _>("last_read_id"))
            }
            Store::Postgres(pool) => {
                sqlx::query("SELECT last_read_id FROM accounts WHERE name_key = $1")
                    .bind(&*key)
                    .fetch_optional(pool)
                    .await?
                    .map(|row| row.try_get::<i64, _>("last_read_id"))
            }
        };
        Ok(row.transpose()?)
    }

    /// Up to `limit` messages queued for the account `name` with an id above `after`, oldest
    /// first: one page of the replay at login.
    pub async fn missed(
        &self,
        name: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let key = fold_name(name);
        macro_rules! missed {
            ($pool:expr, $sql:literal) => {
                sqlx::query($sql)
                    .bind(&*key)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|row| stored!(row))
                    .collect::<Result<Vec<_>, _>>()?
            };
        }
        Ok(match self {
            Store::Sqlite(pool) => missed!(
                pool,
                "SELECT id, sent_at_ms, sender, body FROM messages WHERE recipient_key = ?1 \
                 AND id > ?2 ORDER BY id LIMIT ?3"
            ),
            Store::Postgres(pool) => missed!(
                pool,
                "SELECT id, sent_at_ms, sender, body FROM messages WHERE recipient_key = $1 \
                 AND id > $2 ORDER BY id LIMIT $3"
            ),
        })
    }

    /// Moves the account `name`'s read position forward to `id`; never back (a late update
    /// from an earlier connection cannot undo a later one). Returns whether it moved.
    pub async fn mark_read(&self, name: &str, id: i64) -> Result<bool, StoreError> {
        let key = fold_name(name);
        let moved = match self {
            Store::Sqlite(pool) => sqlx::query(
                "UPDATE accounts SET last_read_id = ?2 WHERE name_key = ?1 AND last_read_id < ?2",
            )
            .bind(&*key)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected(),
            Store::Postgres(pool) => sqlx::query(
                "UPDATE accounts SET last_read_id = $2 WHERE name_key = $1 AND last_read_id < $2",
            )
            .bind(&*key)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(moved > 0)
    }

    /// Deletes messages sent before `cutoff_ms`, and the conversations that this leaves
    /// empty; returns how many messages. Messages queued for an offline account go too, read
    /// or not: a message waits for its recipient at most the retention period, like everything
    /// else kept (a bound on what an abandoned account costs), and the replay simply starts at
    /// the oldest one left. A writer's [`ConversationIds`] must forget what it knew after this.
    ///
    /// Messages are deleted by id, up to the first one sent at or after the cutoff, found by
    /// reading in id order from the oldest (so through the rows to delete, and no further):
    /// ids increase with the time of delivery, and there is no index on the time to keep up
    /// on every write. A message out of order by a few milliseconds (two sessions' clocks
    /// read an instant apart) may outlive the cutoff until the next pruning.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        // Retention deletes every id below some id, so a conversation whose newest message is
        // below the oldest one left has none left (or never had one: `last_id` 0).
        const EMPTY_CONVERSATIONS: &str = "DELETE FROM conversations WHERE last_id < coalesce(\
                                           (SELECT min(id) FROM messages), \
                                           9223372036854775807)";
        macro_rules! prune {
            ($pool:expr, $messages:literal) => {{
                let done = sqlx::query($messages)
                    .bind(cutoff_ms)
                    .execute($pool)
                    .await?
                    .rows_affected();
                sqlx::query(EMPTY_CONVERSATIONS).execute($pool).await?;
                done
            }};
        }
        let done = match self {
            Store::Sqlite(pool) => prune!(
                pool,
                "DELETE FROM messages WHERE id < coalesce((SELECT id FROM messages WHERE \
                 sent_at_ms >= ?1 ORDER BY id LIMIT 1), (SELECT max(id) FROM messages) + 1)"
            ),
            Store::Postgres(pool) => prune!(
                pool,
                "DELETE FROM messages WHERE id < coalesce((SELECT id FROM messages WHERE \
                 sent_at_ms >= $1 ORDER BY id LIMIT 1), (SELECT max(id) FROM messages) + 1)"
            ),
        };
        Ok(done)
    }

    /// Asks the database for next to nothing (one row of the messages table, at most): whether
    /// it answers, and with the table the server writes to.
    pub async fn ping(&self) -> Result<(), StoreError> {
        const PING: &str = "SELECT 1 FROM messages LIMIT 1";
        match self {
            Store::Sqlite(pool) => {
                sqlx::query(PING).execute(pool).await?;
            }
            Store::Postgres(pool) => {
                sqlx::query(PING).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// PostgreSQL's write path: as many ids from the sequence as there are messages, then the
/// batch as one statement ([`POSTGRES_INSERT`]) that also moves the chains' ends. `known` must
/// hold every conversation of `messages` ([`Store::postgres_conversations`]). Returns every
/// conversation written to as it now stands, to be learnt (the statement is its own
/// transaction, committed when it returns).
async fn insert_postgres(
    pool: &PgPool,
    messages: &[NewMessage],
    known: &ConversationIds,
) -> Result<Vec<(Conversation, Chain)>, StoreError> {
    let count = i64::try_from(messages.len()).unwrap_or(i64::MAX);
    let ids: Vec<i64> = sqlx::query_scalar(POSTGRES_NEXT_IDS)
        .bind(count)
        .fetch_all(pool)
        .await?;
    if ids.len() != messages.len() {
        return Err(StoreError::Database(sqlx::Error::RowNotFound));
    }
    let mut chains: FxHashMap<&Conversation, Chain> = FxHashMap::default();
    let mut previous = Vec::with_capacity(messages.len());
    let mut sent_at = Vec::with_capacity(messages.len());
    let mut conversations = Vec::with_capacity(messages.len());
    let mut senders = Vec::with_capacity(messages.len());
    let mut bodies = Vec::with_capacity(messages.len());
    for (message, &id) in messages.iter().zip(&ids) {
        let conversation = &message.conversation;
        let chain = match chains.entry(conversation) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => match known.0.get(conversation) {
                Some(&chain) => entry.insert(chain),
                None => return Err(StoreError::Database(sqlx::Error::RowNotFound)),
            },
        };
        previous.push(chain.previous());
        chain.last_id = id;
        sent_at.push(message.sent_at_ms);
        conversations.push(chain.id);
        senders.push(message.sender.as_str());
        bodies.push(message.text.as_str());
    }
    let (touched, ends): (Vec<i64>, Vec<i64>) = chains
        .values()
        .map(|chain| (chain.id, chain.last_id))
        .unzip();
    sqlx::query(POSTGRES_INSERT)
        .bind(&ids)
        .bind(previous)
        .bind(sent_at)
        .bind(conversations)
        .bind(senders)
        .bind(bodies)
        .bind(touched)
        .bind(ends)
        .execute(pool)
        .await?;
    Ok(chains
        .into_iter()
        .map(|(conversation, chain)| (conversation.clone(), chain))
        .collect())
}

/// SQLite's write path: `messages` in one transaction on the connection `handle`, one prepared
/// one-row `INSERT` run per message, all on this thread, each pointing at the message before
/// it in its conversation; then the new end of each conversation's chain. A conversation that
/// `known` lacks is looked up, or made, in the same transaction. Returns every conversation
/// written to as it now stands, to be learnt once committed (what a transaction rolled back
/// wrote is not there).
///
/// Through sqlx, every statement went to its worker thread with a copy of every argument, and a
/// batch was a fresh multi-row statement; that cost about as much CPU as SQLite's own work.
fn insert_sqlite(
    handle: std::ptr::NonNull<rusqlite::ffi::sqlite3>,
    messages: &[NewMessage],
    known: &ConversationIds,
) -> Result<Vec<(Conversation, Chain)>, rusqlite::Error> {
    // SAFETY: `handle` comes from `LockedSqliteHandle::as_raw_handle`, an open connection that
    // sqlx's worker does not touch while the lock is held, and the caller holds it until this
    // returns. `from_handle` borrows it: dropping the rusqlite `Connection` (here, on every
    // path) finalizes the statements it prepared and leaves the connection open; the
    // transaction is committed, or rolled back when dropped on an error, before that.
    let mut connection = unsafe { rusqlite::Connection::from_handle(handle.as_ptr()) }?;
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut written: FxHashMap<&Conversation, Chain> = FxHashMap::default();
    {
        let mut insert = tx.prepare(SQLITE_INSERT)?;
        for message in messages {
            let conversation = &message.conversation;
            let chain = match written.entry(conversation) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => match known.0.get(conversation) {
                    Some(&chain) => entry.insert(chain),
                    None => {
                        let kind = conversation.kind.as_str();
                        tx.execute(SQLITE_ADD_CONVERSATION, (kind, &conversation.key))?;
                        let chain =
                            tx.query_row(SQLITE_CONVERSATION, (kind, &conversation.key), |row| {
                                Ok(Chain {
                                    id: row.get(0)?,
                                    last_id: row.get(1)?,
                                })
                            })?;
                        entry.insert(chain)
                    }
                },
            };
            insert.execute(rusqlite::params![
                message.sent_at_ms,
                chain.id,
                chain.previous(),
                message.sender,
                message.text,
            ])?;
            chain.last_id = tx.last_insert_rowid();
        }
        let mut set_last = tx.prepare(SQLITE_SET_LAST)?;
        for chain in written.values() {
            set_last.execute((chain.id, chain.last_id))?;
        }
    }
    tx.commit()?;
    Ok(written
        .into_iter()
        .map(|(conversation, chain)| (conversation.clone(), chain))
        .collect())
}

/// Applies the migrations the database lacks. One it has that the binary does not means a
/// newer binary wrote it: refused, rather than run an old server against a newer schema.
async fn migrate<'a, A>(migrator: &Migrator, pool: A) -> Result<(), StoreError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(StoreError::Newer {
            url: String::new(),
            found,
            known,
        }),
        Err(MigrateError::Execute(error)) => Err(StoreError::Database(error)),
        Err(error) => Err(StoreError::Open {
            url: String::new(),
            reason: error.to_string(),
        }),
    }
}
