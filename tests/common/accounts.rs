//! Accounts made directly in a store's database, for tests of offline delivery. (Until
//! `register|NAME|PASSWORD` exists, this is how a test has a registered user; `login|NAME`
//! then logs in to that account.)

use actor_chat::store::Store;

/// Creates the account `name` (its hash is never looked at by these tests).
pub async fn add_account(store: &Store, name: &str) {
    let key = name.to_ascii_lowercase();
    let sql = "INSERT INTO accounts (name_key, name, password_hash, created_at_ms) \
               VALUES ($1, $2, 'not-a-hash', 0)";
    match store {
        Store::Sqlite(pool) => sqlx::query(sql)
            .bind(&key)
            .bind(name)
            .execute(pool)
            .await
            .map(drop),
        Store::Postgres(pool) => sqlx::query(sql)
            .bind(&key)
            .bind(name)
            .execute(pool)
            .await
            .map(drop),
    }
    .expect("create an account");
}

/// Queues `count` messages from `from` to the account `to` (`text 1` … `text COUNT`), in one
/// transaction, as a `talk` to an offline user would have: a backlog made in a moment.
pub async fn queue_messages(store: &Store, from: &str, to: &str, count: usize, text: &str) {
    let Store::Sqlite(pool) = store else {
        panic!("a SQLite store");
    };
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    let conversation = format!("{a}|{b}");
    let mut tx = pool.begin().await.expect("a transaction");
    for i in 1..=count {
        sqlx::query(
            "INSERT INTO messages (sent_at_ms, kind, conversation, sender, recipient, body, \
             recipient_key) VALUES (?1, 'direct', ?2, ?3, ?4, ?5, ?4)",
        )
        .bind(jiff::Timestamp::now().as_millisecond())
        .bind(&conversation)
        .bind(from)
        .bind(to)
        .bind(format!("{text} {i}"))
        .execute(&mut *tx)
        .await
        .expect("queue a message");
    }
    tx.commit().await.expect("commit");
}
