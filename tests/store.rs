//! The store's test suite, run against both backends: SQLite in a temporary folder, and
//! PostgreSQL at `CHAT_TEST_POSTGRES_URL`, each test in a schema of its own (so they can run
//! in parallel). Without the variable the PostgreSQL tests print
//! `skipped: CHAT_TEST_POSTGRES_URL is not set` and pass, unless `ACTOR_CHAT_REQUIRE_POSTGRES`
//! is set (as `.ci/run` does), when a missing variable or an unreachable server fails them.

use std::{path::PathBuf, str::FromStr, time::Duration};

use actor_chat::store::{Conversation, ConversationIds, NewMessage, Store, StoreError};
use sqlx::{postgres::PgConnectOptions, Connection, Executor, PgConnection};

/// A folder of its own for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "actor-chat-store-{name}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh SQLite store; the folder lives as long as the store is used.
async fn sqlite(name: &str) -> (Store, TempDir) {
    let dir = TempDir::new(name);
    let store = Store::open_sqlite(&dir.0.join("nested/chat.db"))
        .await
        .expect("open a SQLite store");
    (store, dir)
}

/// A fresh PostgreSQL store in a schema of its own, or `None` (after saying so) when no
/// server is configured and none is required.
async fn postgres(name: &str) -> Option<(Store, Schema)> {
    let (options, schema) = postgres_schema(name).await?;
    let store = Store::open_postgres(options)
        .await
        .expect("open the PostgreSQL store");
    Some((store, schema))
}

/// An empty schema of its own and options that connect to it, or `None` as for [`postgres`].
async fn postgres_schema(name: &str) -> Option<(PgConnectOptions, Schema)> {
    let required = std::env::var_os("ACTOR_CHAT_REQUIRE_POSTGRES").is_some();
    let Ok(url) = std::env::var("CHAT_TEST_POSTGRES_URL") else {
        assert!(
            !required,
            "ACTOR_CHAT_REQUIRE_POSTGRES is set but CHAT_TEST_POSTGRES_URL is not"
        );
        println!("skipped: CHAT_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!(
        "t_{name}_{}_{}",
        std::process::id(),
        jiff::Timestamp::now().as_microsecond()
    );
    let mut admin = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("cannot reach PostgreSQL at {url}: {error}"));
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create the test's schema");
    let options = PgConnectOptions::from_str(&url)
        .expect("a PostgreSQL URL")
        .options([("search_path", schema.as_str())]);
    Some((options, Schema { url, name: schema }))
}

/// A test's PostgreSQL schema, dropped when the test is done with it.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn drop_it(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.url).await {
            let _ = admin
                .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
                .await;
        }
    }
}

/// Runs each test body against SQLite and, when configured, PostgreSQL.
macro_rules! both_backends {
    ($($name:ident => $body:ident;)+) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite(stringify!($name)).await;
                    super::$body(store).await;
                }
            )+
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some((store, schema)) = super::postgres(stringify!($name)).await {
                        super::$body(store.clone()).await;
                        store.close().await;
                        schema.drop_it().await;
                    }
                }
            )+
        }
    };
}

both_backends! {
    history_is_oldest_first_and_pages_back => paging;
    conversations_are_kept_apart => separation;
    pruning_deletes_only_old_messages => pruning;
    opening_twice_applies_migrations_once => reopening;
    offline_messages_queue_replay_and_keep_a_read_position => offline_queue;
    accounts_are_made_found_changed_listed_and_removed => accounts;
    history_follows_each_conversation_across_batches_and_queued_messages => chains;
}

/// Creates the account `name` as the accounts feature does (the hash is not looked at here).
async fn add_account(store: &Store, name: &str) {
    let key = name.to_ascii_lowercase();
    match store {
        Store::Sqlite(pool) => sqlx::query(
            "INSERT INTO accounts (name_key, name, password_hash, created_at_ms) \
             VALUES (?1, ?2, 'x', 0)",
        )
        .bind(&key)
        .bind(name)
        .execute(pool)
        .await
        .map(drop),
        Store::Postgres(pool) => sqlx::query(
            "INSERT INTO accounts (name_key, name, password_hash, created_at_ms) \
             VALUES ($1, $2, 'x', 0)",
        )
        .bind(&key)
        .bind(name)
        .execute(pool)
        .await
        .map(drop),
    }
    .expect("create an account");
}

async fn offline_queue(store: Store) {
    let to_alice = |text: &str| NewMessage::direct("bob", "Alice", text);
    assert!(
        !store.queue(&to_alice("nobody's")).await.expect("queue"),
        "no account, nothing kept"
    );
    assert_eq!(store.read_position("alice").await.expect("read"), None);
    add_account(&store, "Alice").await;
    assert_eq!(store.read_position("ALICE").await.expect("read"), Some(0));
    for i in 1..=5 {
        assert!(store
            .queue(&to_alice(&format!("m{i}")))
            .await
            .expect("queue"));
    }
    // A message delivered live is history, not something missed.
    store
        .insert(&[NewMessage::direct("bob", "alice", "live")])
        .await
        .expect("insert");
    let first = store.missed("alice", 0, 3).await.expect("a page");
    let texts: Vec<&str> = first.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m2", "m3"]);
    assert!(first.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(first[0].sender, "bob");
    let rest = store
        .missed("alice", first[2].id, 10)
        .await
        .expect("a page");
    let texts: Vec<&str> = rest.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m4", "m5"]);
    assert!(store.mark_read("alice", first[1].id).await.expect("mark"));
    assert!(
        !store.mark_read("alice", first[0].id).await.expect("mark"),
        "a read position never goes back"
    );
    assert_eq!(
        store.read_position("alice").await.expect("read"),
        Some(first[1].id)
    );
    // Queued messages are also the conversation's history.
    let both = Conversation::direct("alice", "bob");
    assert_eq!(
        store.history(&both, 10, None).await.expect("history").len(),
        6
    );
    // Retention prunes queued messages like any other.
    assert_eq!(store.prune(i64::MAX).await.expect("prune"), 6);
    assert!(store
        .missed("alice", 0, 10)
        .await
        .expect("a page")
        .is_empty());
}

async fn accounts(store: Store) {
    assert!(store
        .create_account("Alice", "$argon2id$first")
        .await
        .expect("insert"));
    assert!(!store
        .create_account("ALICE", "$argon2id$other")
        .await
        .expect("insert"));
    assert!(store
        .create_account("bob", "$argon2id$bob")
        .await
        .expect("insert"));
    let alice = store.account("alice").await.expect("query").expect("found");
    assert_eq!(alice.name, "Alice");
    assert_eq!(alice.password_hash, "$argon2id$first");
    assert_eq!(store.account("carol").await.expect("query"), None);
    assert!(store
        .set_password("aLiCe", "$argon2id$second")
        .await
        .expect("update"));
    assert!(!store
        .set_password("carol", "$argon2id$x")
        .await
        .expect("update"));
    let alice = store.account("Alice").await.expect("query").expect("found");
    assert_eq!(alice.password_hash, "$argon2id$second");
    let names: Vec<String> = store
        .accounts()
        .await
        .expect("list")
        .into_iter()
        .map(|account| account.name)
        .collect();
    assert_eq!(names, ["Alice", "bob"]);
    let mut keys = store.account_keys().await.expect("keys");
    keys.sort();
    assert_eq!(keys, ["alice", "bob"]);
    assert!(store.remove_account("ALICE").await.expect("delete"));
    assert!(!store.remove_account("alice").await.expect("delete"));
    assert_eq!(store.account_keys().await.expect("keys"), ["bob"]);
}

fn say(room: &str, from: &str, text: &str) -> NewMessage {
    NewMessage::room(room, from, text)
}

async fn paging(store: Store) {
    let batch: Vec<NewMessage> = (1..=10)
        .map(|i| say("Rust", "alice", &format!("line {i}")))
        .collect();
    store.insert(&batch[..4]).await.expect("a first batch");
    store.insert(&batch[4..]).await.expect("a second batch");
    let room = Conversation::room("rust");
    let last = store.history(&room, 3, None).await.expect("history");
    let texts: Vec<&str> = last.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["line 8", "line 9", "line 10"]);
    assert!(last.windows(2).all(|w| w[0].id < w[1].id), "{last:?}");
    let before = store
        .history(&room, 3, Some(last[0].id))
        .await
        .expect("the page before");
    let texts: Vec<&str> = before.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["line 5", "line 6", "line 7"]);
    let all = store.history(&room, 100, None).await.expect("everything");
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].sender, "alice");
    assert!(all[0].time().ends_with('Z') && all[0].time().len() == 24);
    let none = store
        .history(&room, 5, Some(all[0].id))
        .await
        .expect("nothing before the first");
    assert!(none.is_empty());
}

/// Each conversation's messages, however they were written: interleaved with others in one
/// batch, over several batches, queued for an offline account between them, and after the
/// writer has forgotten what it knew.
async fn chains(store: Store) {
    add_account(&store, "bob").await;
    let mut known = ConversationIds::default();
    let old: Vec<NewMessage> = ["old", "old too"]
        .iter()
        .map(|text| NewMessage {
            sent_at_ms: 1_000,
            ..say("Rust", "alice", text)
        })
        .collect();
    store.insert_with(&old, &mut known).await.expect("insert");
    let old_ids: Vec<i64> = store
        .history(&Conversation::room("rust"), 2, None)
        .await
        .expect("history")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(old_ids.len(), 2);
    let batch = |from: usize, to: usize| -> Vec<NewMessage> {
        (from..to)
            .flat_map(|i| {
                [
                    say("Rust", "alice", &format!("r{i}")),
                    NewMessage::direct("alice", "bob", &format!("d{i}")),
                    say("Go", "carol", &format!("g{i}")),
                ]
            })
            .collect()
    };
    store
        .insert_with(&batch(0, 100), &mut known)
        .await
        .expect("a first batch");
    let queued = NewMessage::direct("carol", "bob", "queued");
    assert!(store.queue(&queued).await.expect("queue"));
    assert!(store
        .queue(&NewMessage::direct("alice", "bob", "d100"))
        .await
        .expect("queue"));
    known.forget_one(&Conversation::direct("alice", "bob"));
    store
        .insert_with(&batch(101, 200), &mut known)
        .await
        .expect("a second batch");
    known.forget();
    store
        .insert_with(&batch(200, 250), &mut known)
        .await
        .expect("a third batch");
    let texts = |page: &[actor_chat::store::StoredMessage]| -> Vec<String> {
        page.iter().map(|m| m.text.clone()).collect()
    };
    let direct = Conversation::direct("bob", "alice");
    let newest = store.history(&direct, 200, None).await.expect("history");
    let expected: Vec<String> = (50..250).map(|i| format!("d{i}")).collect();
    assert_eq!(texts(&newest), expected);
    assert!(newest.windows(2).all(|w| w[0].id < w[1].id));
    let older = store
        .history(&direct, 200, Some(newest[0].id))
        .await
        .expect("the page before");
    let expected: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
    assert_eq!(texts(&older), expected);
    let go = store
        .history(&Conversation::room("go"), 3, None)
        .await
        .expect("history");
    assert_eq!(texts(&go), ["g247", "g248", "g249"]);
    let queued_only = store
        .history(&Conversation::direct("bob", "carol"), 10, None)
        .await
        .expect("history");
    assert_eq!(texts(&queued_only), ["queued"]);
    // Paging back from past the newest is the newest page; from another conversation's
    // message, refused; from a message deleted by retention, empty.
    let past = store
        .history(&Conversation::room("go"), 1, Some(i64::MAX))
        .await
        .expect("history");
    assert_eq!(texts(&past), ["g249"]);
    match store.history(&direct, 10, Some(go[0].id)).await {
        Err(StoreError::NotInConversation(id)) => assert_eq!(id, go[0].id),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Retention deletes by id up to the first recent message: the two old ones here.
    assert_eq!(store.prune(2_000).await.expect("prune"), 2);
    let rust = Conversation::room("rust");
    let gone = store
        .history(&rust, 10, Some(old_ids[1]))
        .await
        .expect("history");
    assert!(gone.is_empty(), "{gone:?}");
    let left = store.history(&rust, 1000, None).await.expect("history");
    let expected: Vec<String> = (0..250)
        .filter(|&i| i != 100)
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(texts(&left), expected);
}

async fn separation(store: Store) {
    store
        .insert(&[
            // A tab and a backslash are text like any other.
            NewMessage::direct("alice", "Bob", "hi\tbob \\o/ \\N"),
            NewMessage::direct("bob", "alice", "hi alice"),
            NewMessage::direct("alice", "carol", "hi carol"),
            say("alice", "bob", "a room called alice"),
        ])
        .await
        .expect("insert");
    let pair = store
        .history(&Conversation::direct("BOB", "alice"), 10, None)
        .await
        .expect("history");
    let texts: Vec<&str> = pair.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hi\tbob \\o/ \\N", "hi alice"]);
    let room = store
        .history(&Conversation::room("alice"), 10, None)
        .await
        .expect("history");
    assert_eq!(room.len(), 1);
    assert_eq!(room[0].text, "a room called alice");
}

async fn pruning(store: Store) {
    let mut old = say("r", "a", "old");
    old.sent_at_ms = 1_000;
    store
        .insert(&[old, say("r", "a", "new")])
        .await
        .expect("insert");
    let deleted = store.prune(2_000).await.expect("prune");
    assert_eq!(deleted, 1);
    let left = store
        .history(&Conversation::room("r"), 10, None)
        .await
        .expect("history");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].text, "new");
    // Everything past its retention goes, its conversation too; ids are not given again.
    assert_eq!(conversation_rows(&store).await, 1);
    assert_eq!(store.prune(i64::MAX).await.expect("prune"), 1);
    assert_eq!(conversation_rows(&store).await, 0);
    store
        .insert(&[say("r", "a", "later")])
        .await
        .expect("insert");
    let later = store
        .history(&Conversation::room("r"), 10, None)
        .await
        .expect("history");
    assert_eq!(later.len(), 1);
    assert!(later[0].id > left[0].id, "{later:?} after {left:?}");
}

/// How many conversations have a row.
async fn conversation_rows(store: &Store) -> i64 {
    const COUNT: &str = "SELECT count(*) FROM conversations";
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
        Store::Postgres(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
    }
    .expect("count the conversations")
}

async fn reopening(store: Store) {
    store
        .insert(&[say("r", "a", "kept")])
        .await
        .expect("insert");
    // The migrator runs again on an up-to-date database and changes nothing.
    let again = match &store {
        Store::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
        Store::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
    };
    assert!(again.is_ok(), "{again:?}");
    let kept = store
        .history(&Conversation::room("r"), 10, None)
        .await
        .expect("history");
    assert_eq!(kept.len(), 1);
}

/// Leaves the database behind `pool` as a binary with migrations 0001 and 0002 only (of
/// `all`, this binary's) would have: migrated that far, with [`WRITTEN_BY_0002`] in it.
async fn written_by_0002<DB>(all: sqlx::migrate::Migrator, pool: sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version <= 2)
            .cloned()
            .collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    }
    .run(&pool)
    .await
    .expect("migrations 0001 and 0002");
    sqlx::raw_sql(WRITTEN_BY_0002)
        .execute(&pool)
        .await
        .expect("old rows");
    pool.close().await;
}

/// What a server with migrations 0001 and 0002 wrote (literal values, so the same SQL runs on
/// both backends): a room line, a live direct message, one queued for the account `b`, and a
/// fourth message deleted since (so the largest id given out, 4, is above every id left).
const WRITTEN_BY_0002: &str = "\
    INSERT INTO accounts (name_key, name, password_hash, created_at_ms) VALUES ('b', 'B', 'x', 0);
    INSERT INTO messages (sent_at_ms, kind, conversation, room, sender, recipient, body, \
        recipient_key) VALUES
        (1000, 'room', 'r', 'R', 'A', NULL, 'in r', NULL),
        (2000, 'direct', 'a|b', NULL, 'A', 'B', 'live', NULL),
        (3000, 'direct', 'a|b', NULL, 'A', 'B', 'queued', 'b'),
        (4000, 'room', 'r', 'R', 'A', NULL, 'deleted', NULL);
    DELETE FROM messages WHERE body = 'deleted';";

/// After migrations 0003 (conversations in a table of their own) and 0004 (history follows a
/// chain of previous ids, made from what was there), everything written before reads back the
/// same, with the same ids, pages back along the chain, and a new message gets an id above
/// every id given out before, even one since deleted: a read position never points past a
/// later message.
async fn migrated_from_0002(store: Store) {
    let room = store
        .history(&Conversation::room("R"), 10, None)
        .await
        .expect("history");
    assert_eq!(room.len(), 1);
    assert_eq!((room[0].id, room[0].sent_at_ms), (1, 1000));
    assert_eq!(
        (room[0].sender.as_str(), room[0].text.as_str()),
        ("A", "in r")
    );
    let pair = store
        .history(&Conversation::direct("b", "a"), 10, None)
        .await
        .expect("history");
    let texts: Vec<(i64, &str)> = pair.iter().map(|m| (m.id, m.text.as_str())).collect();
    assert_eq!(texts, [(2, "live"), (3, "queued")]);
    let before = store
        .history(&Conversation::direct("a", "b"), 10, Some(3))
        .await
        .expect("history");
    assert_eq!(before.len(), 1);
    assert_eq!((before[0].id, before[0].text.as_str()), (2, "live"));
    let missed = store.missed("b", 0, 10).await.expect("missed");
    assert_eq!(missed.len(), 1);
    assert_eq!((missed[0].id, missed[0].text.as_str()), (3, "queued"));
    store
        .insert(&[say("r", "a", "after")])
        .await
        .expect("insert");
    let room = store
        .history(&Conversation::room("r"), 10, None)
        .await
        .expect("history");
    let ids: Vec<i64> = room.iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 5]);
}

#[tokio::test]
async fn sqlite_migrations_from_0002_keep_messages_ids_and_history() {
    let dir = TempDir::new("migrate");
    let path = dir.0.join("chat.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("a SQLite file");
    written_by_0002(sqlx::migrate!("migrations/sqlite"), pool).await;
    let store = Store::open_sqlite(&path).await.expect("open and migrate");
    migrated_from_0002(store).await;
}

#[tokio::test]
async fn postgres_migrations_from_0002_keep_messages_ids_and_history() {
    let Some((options, schema)) = postgres_schema("migrate").await else {
        return;
    };
    let pool = sqlx::PgPool::connect_with(options.clone())
        .await
        .expect("connect");
    written_by_0002(sqlx::migrate!("migrations/postgres"), pool).await;
    let store = Store::open_postgres(options)
        .await
        .expect("open and migrate");
    migrated_from_0002(store.clone()).await;
    store.close().await;
    schema.drop_it().await;
}

/// A database with a migration this binary does not have is refused with one sentence.
#[tokio::test]
async fn a_newer_sqlite_database_is_refused() {
    let dir = TempDir::new("newer");
    let path = dir.0.join("chat.db");
    let store = Store::open_sqlite(&path).await.expect("open");
    if let Store::Sqlite(pool) = &store {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99990101000000, 'from the future', TRUE, X'00', 0)",
        )
        .execute(pool)
        .await
        .expect("pretend a newer binary migrated it");
    }
    store.close().await;
    let url = actor_chat::config::StoreUrl::Sqlite(path);
    match Store::open(&url).await {
        Err(StoreError::Newer { found, known, .. }) => {
            assert_eq!(found, 99990101000000);
            assert_eq!(known, 4, "the migrations this binary has");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A write-behind handle on a SQLite file in `dir` that keeps at most `max_backlog` messages
/// waiting, and the file's URL.
async fn sqlite_handle(
    dir: &TempDir,
    max_backlog: i64,
) -> (actor_chat::store::StoreHandle, String) {
    let url = format!("sqlite://{}", dir.0.join("chat.db").display());
    let settings = actor_chat::config::Settings::builder()
        .set("store.url", &url)
        .set("store.max_backlog", max_backlog)
        .build()
        .expect("settings");
    let handle = actor_chat::store::StoreHandle::start(settings.store())
        .await
        .expect("open")
        .expect("a store");
    (handle, url)
}

/// The write-behind handle: messages are kept in order, history waits for what was queued
/// before it, and a backlog past its limit drops (and counts) rather than waits.
#[actix_rt::test]
async fn the_handle_writes_behind_and_history_sees_what_was_queued() {
    let dir = TempDir::new("handle");
    let (handle, _) = sqlite_handle(&dir, 5000).await;
    for i in 0..3000 {
        handle.keep(say("r", "a", &format!("m{i}")));
    }
    let last = handle
        .history(Conversation::room("r"), 2, None, Duration::from_secs(10))
        .await
        .expect("history");
    let texts: Vec<&str> = last.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m2998", "m2999"]);
    let stats = handle.stats();
    assert_eq!(stats.written, 3000);
    assert_eq!(stats.dropped, 0);
    assert!(stats.batches >= 3, "at most 1000 a batch: {stats:?}");
    handle.stop(Duration::from_secs(10)).await;
}

/// The writer's own bookkeeping of where each conversation ends: a message queued for an
/// offline account between two written behind, in one conversation, is in its history between
/// them (the writer forgets the conversation's end after queueing, and reads it again).
#[actix_rt::test]
async fn the_handle_chains_queued_and_written_messages_in_order() {
    let dir = TempDir::new("handle-chain");
    let (handle, _) = sqlite_handle(&dir, 100_000).await;
    let wait = Duration::from_secs(10);
    assert!(handle
        .create_account("bob", "$argon2id$x".to_owned(), wait)
        .await
        .expect("an account"));
    handle.keep(NewMessage::direct("alice", "bob", "live before"));
    assert!(handle
        .queue(NewMessage::direct("alice", "bob", "queued"))
        .outcome(wait)
        .await
        .expect("queued"));
    handle.keep(NewMessage::direct("alice", "bob", "live after"));
    let all = handle
        .history(Conversation::direct("bob", "alice"), 10, None, wait)
        .await
        .expect("history");
    let texts: Vec<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["live before", "queued", "live after"]);
    handle.stop(wait).await;
}

/// Past `store.max_backlog` waiting messages, `keep` drops and counts instead of waiting: here
/// the database is locked by another connection, so nothing can be written meanwhile.
#[actix_rt::test]
async fn a_full_backlog_drops_and_counts_rather_than_waits() {
    let dir = TempDir::new("backlog");
    let (handle, url) = sqlite_handle(&dir, 10).await;
    let mut lock = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("a second connection");
    lock.execute("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");
    let started = std::time::Instant::now();
    for i in 0..100 {
        handle.keep(say("r", "a", &format!("m{i}")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "keep never waits"
    );
    lock.execute("ROLLBACK").await.expect("release the lock");
    assert!(
        handle.flush(Duration::from_secs(10)).await,
        "the writer answers"
    );
    let stats = handle.stats();
    assert_eq!(stats.written + stats.dropped, 100, "{stats:?}");
    assert!(stats.dropped >= 90, "at most 10 waited: {stats:?}");
    handle.stop(Duration::from_secs(10)).await;
}
