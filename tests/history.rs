//! `history`, against a server with a SQLite store in a temporary folder (and without one):
//! paging, who may read what, restarts, a database newer than the binary, and a store that
//! stops working while chat goes on. Every read has a timeout; nothing sleeps to synchronise.

mod common;

use std::path::Path;

use actor_chat::store::Store;
use common::{build, builder, process::ServerProcess, settings, temp::TempDir, Client, TestServer};

async fn server_with_store(dir: &TempDir) -> TestServer {
    TestServer::start_with_store(build(builder().set("store.url", dir.url()))).await
}

/// The `hist` lines and the `end` line of one answer, asserted to be well formed; returns the
/// (id, from, text) of each.
async fn read_history(client: &mut Client, target: &str) -> Vec<(u64, String, String)> {
    let mut found = Vec::new();
    loop {
        let line = client.recv().await;
        if let Some(count) = line.strip_prefix(&format!("end|history|{target}|")) {
            assert_eq!(count, found.len().to_string(), "{line}");
            return found;
        }
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert_eq!(fields[..2], ["hist", target], "{line}");
        let time = fields[3];
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
            "RFC 3339 UTC with milliseconds: {line}"
        );
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
        let id = fields[2].parse().expect("a numeric id");
        found.push((id, fields[4].to_owned(), fields[5].to_owned()));
    }
}

fn texts(found: &[(u64, String, String)]) -> Vec<&str> {
    found.iter().map(|(_, _, text)| text.as_str()).collect()
}

#[actix::test]
async fn room_history_pages_back_oldest_first_for_members_only() {
    let dir = TempDir::new("paging");
    let server = server_with_store(&dir).await;
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]).await;
    alice.send("join|Rust").await;
    alice.expect("ok|join|Rust").await;
    alice.expect("members|Rust|alice").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|Rust").await;
    bob.expect("members|Rust|alice,bob").await;
    alice.expect("join|Rust|bob").await;
    for i in 1..=5 {
        alice.send(&format!("say|rust|line {i} | with a bar")).await;
        bob.expect(&format!("say|Rust|alice|line {i} | with a bar"))
            .await;
    }
    // Asked right after saying: the answer waits for what was queued before it.
    alice.send("history|#rust|3").await;
    let last = read_history(&mut alice, "#rust").await;
    assert_eq!(
        texts(&last),
        [
            "line 3 | with a bar",
            "line 4 | with a bar",
            "line 5 | with a bar"
        ]
    );
    assert!(last.iter().all(|(_, from, _)| from == "alice"));
    bob.send(&format!("history|#RUST|10|{}", last[0].0)).await;
    let before = read_history(&mut bob, "#RUST").await;
    assert_eq!(
        texts(&before),
        ["line 1 | with a bar", "line 2 | with a bar"]
    );
    // Not a member: refused, whether the room exists or not.
    carol.send("history|#rust|3").await;
    carol.expect("error|not-in-room|rust").await;
    carol.send("history|#nowhere|3").await;
    carol.expect("error|not-in-room|nowhere").await;
    // Bad counts.
    for bad in ["history|#rust|0", "history|#rust|201", "history|#rust|x"] {
        alice.send(bad).await;
        alice.expect("error|bad-arguments|history").await;
    }
    alice.send("history|#rust|200|0").await;
    alice.expect("error|bad-arguments|history").await;
    // Paging back from another conversation's message is refused too (unless it is newer
    // than the room's newest: that, like any id past the newest, gives the newest page).
    alice.send("talk|bob|elsewhere").await;
    bob.expect("talk|alice|elsewhere").await;
    alice.send("say|rust|line 6").await;
    bob.expect("say|Rust|alice|line 6").await;
    alice.send("history|bob|1").await;
    let elsewhere = read_history(&mut alice, "bob").await;
    assert_eq!(texts(&elsewhere), ["elsewhere"]);
    alice
        .send(&format!("history|#rust|5|{}", elsewhere[0].0))
        .await;
    alice.expect("error|bad-arguments|history").await;
    alice
        .send(&format!("history|#rust|1|{}", u64::MAX >> 1))
        .await;
    assert_eq!(texts(&read_history(&mut alice, "#rust").await), ["line 6"]);
    alice.send("history|#bad name|3").await;
    alice.expect("error|bad-name|#bad name").await;
    // Other commands go on as before.
    alice.send("who").await;
    alice.expect("users|alice,bob,carol").await;
    server.shutdown().await;
}

#[actix::test]
async fn direct_history_belongs_to_its_two_parties() {
    let dir = TempDir::new("direct");
    let server = server_with_store(&dir).await;
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]).await;
    alice.send("talk|Bob|hi bob").await;
    bob.expect("talk|alice|hi bob").await;
    bob.send("talk|alice|hi alice").await;
    alice.expect("talk|bob|hi alice").await;
    carol.send("talk|alice|hi from carol").await;
    alice.expect("talk|carol|hi from carol").await;
    // Undelivered: not kept.
    alice.send("talk|dave|anyone?").await;
    alice.expect("error|no-such-user|dave").await;

    alice.send("history|bob|10").await;
    let pair = read_history(&mut alice, "bob").await;
    assert_eq!(texts(&pair), ["hi bob", "hi alice"]);
    assert_eq!(pair[0].1, "alice");
    assert_eq!(pair[1].1, "bob");
    bob.send("history|ALICE|10").await;
    assert_eq!(
        texts(&read_history(&mut bob, "ALICE").await),
        ["hi bob", "hi alice"]
    );
    // Carol can only ever ask about her own conversations.
    carol.send("history|bob|10").await;
    assert!(read_history(&mut carol, "bob").await.is_empty());
    carol.send("history|alice|10").await;
    assert_eq!(
        texts(&read_history(&mut carol, "alice").await),
        ["hi from carol"]
    );
    alice.send("history|dave|10").await;
    assert!(read_history(&mut alice, "dave").await.is_empty());
    server.shutdown().await;
}

#[actix::test]
async fn without_a_store_history_says_no_history() {
    let server = TestServer::start(settings()).await;
    let mut alice = server.login("alice").await;
    alice.send("join|rust").await;
    alice.expect("ok|join|rust").await;
    alice.expect("members|rust|alice").await;
    alice.send("history|#rust|5").await;
    alice.expect("error|no-history|#rust").await;
    alice.send("history|bob|5").await;
    alice.expect("error|no-history|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_broken_store_costs_history_not_chat() {
    let dir = TempDir::new("broken");
    let server = server_with_store(&dir).await;
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]).await;
    alice.send("join|rust").await;
    alice.expect("ok|join|rust").await;
    alice.expect("members|rust|alice").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|rust").await;
    bob.expect("members|rust|alice,bob").await;
    alice.expect("join|rust|bob").await;
    alice.send("say|rust|kept").await;
    bob.expect("say|rust|alice|kept").await;
    alice.send("history|#rust|5").await;
    assert_eq!(texts(&read_history(&mut alice, "#rust").await), ["kept"]);

    // Someone else takes the tables away: every write and read fails from now on.
    break_store(&dir.db()).await;
    for i in 0..20 {
        alice.send(&format!("say|rust|live {i}")).await;
        bob.expect(&format!("say|rust|alice|live {i}")).await;
    }
    alice.send("talk|bob|still here").await;
    bob.expect("talk|alice|still here").await;
    bob.send("history|#rust|5").await;
    bob.expect("error|store-unavailable|#rust").await;
    bob.send("history|alice|5").await;
    bob.expect("error|store-unavailable|alice").await;
    bob.send("who").await;
    bob.expect("users|alice,bob").await;
    server.shutdown().await;
}

/// Renames the tables of messages and conversations from a connection of the test's own.
async fn break_store(db: &Path) {
    let store = Store::open_sqlite(db).await.expect("open the same file");
    if let Store::Sqlite(pool) = &store {
        for table in ["messages", "conversations"] {
            sqlx::query(&format!("ALTER TABLE {table} RENAME TO {table}_gone"))
                .execute(pool)
                .await
                .expect("rename the table");
        }
    }
    store.close().await;
}

#[actix::test]
async fn room_history_survives_a_restart_of_the_server_binary() {
    let dir = TempDir::new("restart");
    let url = dir.url();
    let mut server = ServerProcess::spawn(ServerProcess::with_store("config/default.toml", &url));
    let mut alice = Client::login(server.addr, "alice").await;
    alice.send("join|Rust").await;
    alice.expect("ok|join|Rust").await;
    alice.expect("members|Rust|alice").await;
    for text in ["before", "the restart"] {
        alice.send(&format!("say|Rust|{text}")).await;
    }
    // Commands run in order: once `pong` is back, both lines were delivered and handed over.
    alice.send("ping").await;
    alice.expect("pong").await;
    // SIGTERM writes what is queued before exiting.
    server.signal(libc::SIGTERM);
    let lines = alice.expect_closed().await;
    assert_eq!(lines.last().map(String::as_str), Some("bye|shutdown"));
    assert_eq!(server.wait_exit().and_then(|s| s.code()), Some(0));
    assert!(
        dir.db().is_file(),
        "the SQLite file is where store.url says"
    );

    let server = ServerProcess::spawn(ServerProcess::with_store("config/default.toml", &url));
    let mut bob = Client::login(server.addr, "bob").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|rust").await;
    bob.expect("members|rust|bob").await;
    bob.send("history|#rust|10").await;
    let kept = read_history(&mut bob, "#rust").await;
    assert_eq!(texts(&kept), ["before", "the restart"]);
}

#[actix::test]
async fn a_database_from_a_newer_binary_stops_start_up_with_exit_2() {
    let dir = TempDir::new("newer");
    let store = Store::open_sqlite(&dir.db())
        .await
        .expect("create the store");
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
    let output = ServerProcess::with_store("config/default.toml", &dir.url())
        .output()
        .expect("run the server binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let sentences: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let refusal = sentences
        .iter()
        .find(|line| line.starts_with("actor-chat-server: "))
        .unwrap_or_else(|| panic!("one sentence on stderr: {stderr}"));
    assert!(refusal.contains("newer actor-chat"), "{refusal}");
    assert!(refusal.contains("99990101000000"), "{refusal}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}
