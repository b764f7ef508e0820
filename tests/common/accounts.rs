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
