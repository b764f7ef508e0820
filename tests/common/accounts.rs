//! What a test of offline delivery writes straight into a store's database: a backlog too
//! large to send line by line in a test's time.

use actor_chat::store::Store;

/// Queues `count` messages from `from` to the account `to` (`text 1` … `text COUNT`), in one
/// transaction, as a `talk` to an offline user would have: a backlog made in a moment.
pub async fn queue_messages(store: &Store, from: &str, to: &str, count: usize, text: &str) {
    let Store::Sqlite(pool) = store else {
        panic!("a SQLite store");
    };
    let (a, b) = if from <= to { (from, to) } else { (to, from) };
    let conversation = format!("{a}|{b}");
    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query(
        "INSERT INTO conversations (kind, key) VALUES ('direct', ?1) \
         ON CONFLICT (kind, key) DO NOTHING",
    )
    .bind(&conversation)
    .execute(&mut *tx)
    .await
    .expect("make the conversation");
    for i in 1..=count {
        sqlx::query(
            "INSERT INTO messages (sent_at_ms, conversation_id, sender, body, recipient_key) \
             SELECT ?1, id, ?3, ?4, ?5 FROM conversations WHERE kind = 'direct' AND key = ?2",
        )
        .bind(jiff::Timestamp::now().as_millisecond())
        .bind(&conversation)
        .bind(from)
        .bind(format!("{text} {i}"))
        .bind(to)
        .execute(&mut *tx)
        .await
        .expect("queue a message");
    }
    tx.commit().await.expect("commit");
}
