//! Offline delivery, shown by tests of what can go wrong: a `talk` to a registered user who is
//! offline is answered `queued|NAME` only once it is stored, and replayed at their next login as
//! `missed` lines, once; the read position follows what the socket took; a store that fails
//! refuses `queued` (`error|store-unavailable|NAME`) while live chat goes on.
//!
//! Accounts are made with `register|NAME|PASSWORD` and logged in to with
//! `login|NAME|PASSWORD` (from loopback, where passwords may travel in plain text); a large
//! backlog is written straight into the database ([`common::accounts::queue_messages`]).

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use actor_chat::store::Store;
use common::{
    accounts::queue_messages, build, builder, process::ServerProcess, temp::TempDir, Client,
    TestServer,
};
use tokio::net::TcpSocket;

const PASSWORD: &str = "correct horse";

/// Registers `name` (with [`PASSWORD`]) and leaves.
async fn register(addr: SocketAddr, name: &str) {
    let mut client = Client::connect(addr).await;
    client.send(&format!("register|{name}|{PASSWORD}")).await;
    client.expect(&format!("ok|login|{name}")).await;
    client.send("exit").await;
    client.expect_closed().await;
}

/// Logs in to the account `name`, consuming `ok|login|NAME` (the replay follows).
async fn log_in(client: &mut Client, name: &str) {
    client.send(&format!("login|{name}|{PASSWORD}")).await;
    client.expect(&format!("ok|login|{name}")).await;
}

async fn account_login(addr: SocketAddr, name: &str) -> Client {
    let mut client = Client::connect(addr).await;
    log_in(&mut client, name).await;
    client
}

/// One `missed|ID|TIME|FROM|TEXT` line, checked; its id, sender and text.
fn parse_missed(line: &str) -> (u64, String, String) {
    let fields: Vec<&str> = line.splitn(5, '|').collect();
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(fields[0], "missed", "{line}");
    let time = fields[2];
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.parse::<jiff::Timestamp>().is_ok(),
        "RFC 3339 UTC with milliseconds: {line}"
    );
    (
        fields[1].parse().expect("a numeric id"),
        fields[3].to_owned(),
        fields[4].to_owned(),
    )
}

/// The replay after `ok|login`: every `missed` line up to `end|missed|COUNT`, whose count is
/// checked.
async fn read_replay(client: &mut Client) -> Vec<(u64, String, String)> {
    let mut missed = Vec::new();
    loop {
        let line = client.recv().await;
        if line.starts_with("login|") {
            continue; // who else is online, from the greeting
        }
        if let Some(count) = line.strip_prefix("end|missed|") {
            assert_eq!(count, missed.len().to_string(), "{line}");
            return missed;
        }
        missed.push(parse_missed(&line));
    }
}

#[actix::test]
async fn queued_means_stored_even_through_kill_9() {
    let dir = TempDir::new("kill");
    let mut command = ServerProcess::with_store("config/default.toml", &dir.url());
    // A thousand lines at once is a flood by the default limits.
    command.env("CHAT__LIMITS__LINES_PER_SEC", "0");
    let mut server = ServerProcess::spawn(command);
    register(server.addr, "alice").await;
    let bob = Client::login(server.addr, "bob").await;
    let (mut lines, mut writer) = bob.split();
    let sending = actix_rt::spawn(async move {
        for i in 1..=1000 {
            writer.send(&format!("talk|alice|note {i}")).await;
        }
        writer
    });
    for _ in 1..=1000 {
        lines.expect("queued|alice").await;
    }
    // Right after the last `queued`: no flush, no goodbye.
    server.signal(libc::SIGKILL);
    server.wait_exit().expect("killed");
    drop(sending.await.expect("the sender finished"));

    let server = ServerProcess::spawn(ServerProcess::with_store("config/default.toml", &dir.url()));
    let mut alice = account_login(server.addr, "alice").await;
    let missed = read_replay(&mut alice).await;
    let texts: Vec<String> = missed.iter().map(|(_, _, text)| text.clone()).collect();
    let expected: Vec<String> = (1..=1000).map(|i| format!("note {i}")).collect();
    assert_eq!(texts, expected, "all 1,000, in order, once");
    assert!(missed.iter().all(|(_, from, _)| from == "bob"));
    assert!(missed.windows(2).all(|w| w[0].0 < w[1].0));
    alice.send("exit").await;
    alice.expect_closed().await;

    let mut again = account_login(server.addr, "alice").await;
    again.expect("end|missed|0").await;
}

/// A client whose socket takes little at a time, so that most of a large replay is still on
/// the server's side when it goes.
async fn narrow_client(addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let stream = tokio::time::timeout(common::READ_TIMEOUT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    Client::over(stream)
}

#[actix::test]
async fn a_client_that_drops_mid_replay_gets_the_rest_once() {
    let dir = TempDir::new("drop");
    let server = TestServer::start_with_store(build(builder().set("store.url", dir.url()))).await;
    register(server.addr(), "alice").await;
    // Long lines: 10,000 of them are megabytes, far more than socket buffers hold.
    let padding = "x".repeat(200);
    let store = Store::open_sqlite(&dir.db()).await.expect("open the store");
    queue_messages(&store, "bob", "alice", 10_000, &padding).await;
    store.close().await;
    // carol sees alice come and go, so the next login follows the server's goodbye.
    let mut carol = server.login("carol").await;

    let mut alice = narrow_client(server.addr()).await;
    log_in(&mut alice, "alice").await;
    alice.expect("login|carol").await;
    let mut read = Vec::new();
    for _ in 0..100 {
        read.push(parse_missed(&alice.recv().await).0);
    }
    drop(alice);
    carol.expect("login|alice").await;
    carol.expect("logout|alice").await;

    let mut alice = account_login(server.addr(), "alice").await;
    alice.expect("login|carol").await;
    carol.expect("login|alice").await;
    let rest = read_replay(&mut alice).await;
    assert!(!rest.is_empty(), "the remainder is replayed");
    let last_read = *read.last().expect("read some");
    assert!(
        rest[0].0 > last_read,
        "nothing read is replayed: read up to {last_read}, replayed from {}",
        rest[0].0
    );
    assert!(
        rest.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "the remainder is whole and in order"
    );
    assert_eq!(
        rest.last().map(|(_, _, text)| text.as_str()),
        Some(&*format!("{padding} 10000"))
    );
    alice.send("exit").await;
    alice.expect_closed().await;
    carol.expect("logout|alice").await;

    let mut again = account_login(server.addr(), "alice").await;
    again.expect("login|carol").await;
    again.expect("end|missed|0").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_removed_sqlite_file_refuses_queued_but_not_live_chat() {
    let dir = TempDir::new("removed");
    let mut server =
        ServerProcess::spawn(ServerProcess::with_store("config/default.toml", &dir.url()));
    register(server.addr, "alice").await;
    let mut bob = Client::login(server.addr, "bob").await;
    let mut carol = Client::login(server.addr, "carol").await;
    carol.expect("login|bob").await;
    bob.expect("login|carol").await;
    bob.send("talk|alice|before").await;
    bob.expect("queued|alice").await;

    // Made read-only: an open descriptor keeps its right to write (and root ignores the
    // mode anyway), so the server looks at the file before promising `queued`.
    let mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(mode))
            .expect("chmod the database");
    };
    mode(0o444);
    bob.send("talk|alice|read-only").await;
    bob.expect("error|store-unavailable|alice").await;
    server
        .wait_for_log("cannot keep a message for an offline user")
        .expect("the failure is logged");
    mode(0o644);
    bob.send("talk|alice|writable again").await;
    bob.expect("queued|alice").await;

    // The file (and its log) removed under the running server.
    for suffix in ["", "-wal", "-shm"] {
        let mut path = dir.db().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    bob.send("talk|alice|after").await;
    bob.expect("error|store-unavailable|alice").await;
    bob.send("talk|carol|still here").await;
    carol.expect("talk|bob|still here").await;
    carol.send("talk|bob|and here").await;
    bob.expect("talk|carol|and here").await;
    // A name nobody registered is known not to be one without the store.
    bob.send("talk|nobody|hello").await;
    bob.expect("error|no-such-user|nobody").await;
}

/// A PostgreSQL server of the test's own, in a temporary folder, on a free port: stopped and
/// started by the test without touching the machine's shared one.
struct PrivatePostgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (after saying why) when the binaries are not there, unless they are required.
    fn start() -> Option<PrivatePostgres> {
        let required = std::env::var_os("ACTOR_CHAT_REQUIRE_POSTGRES").is_some();
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|version| version.path().join("bin"))
                    .find(|bin| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file())
            });
        let runuser =
            Path::new("/usr/sbin/runuser").is_file() || Path::new("/sbin/runuser").is_file();
        // initdb refuses root, so it runs as `postgres` through runuser, which needs root.
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let Some(bin) = bin.filter(|_| runuser && root) else {
            assert!(
                !required,
                "ACTOR_CHAT_REQUIRE_POSTGRES is set but there is no initdb/pg_ctl under \
                 /usr/lib/postgresql, no runuser, or the tests do not run as root"
            );
            println!(
                "skipped: a private PostgreSQL needs initdb and pg_ctl under /usr/lib/postgresql, \
                 runuser, and root"
            );
            return None;
        };
        let dir = TempDir::new("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = PrivatePostgres { bin, dir, port };
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&server.dir.0)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown the folder to postgres");
        server.as_postgres("initdb", &["-A", "trust", "-U", "postgres", "-D"], true);
        server.ctl("start");
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn as_postgres(&self, tool: &str, args: &[&str], data_last: bool) {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args);
        if data_last {
            command.arg(self.data());
        }
        let output = command.output().expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.0.display()
        );
        let data = self.data();
        let data = data.to_string_lossy();
        let log = self.dir.0.join("log");
        let log = log.to_string_lossy();
        let mut args = vec!["-D", &*data, "-l", &*log, "-w", "-t", "30", "-o", &options];
        if action == "stop" {
            args = vec!["-D", &*data, "-w", "-t", "30", "-m", "fast"];
        }
        args.insert(0, action);
        self.as_postgres("pg_ctl", &args, false);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[actix::test]
async fn postgresql_stopped_and_started_again_refuses_queued_then_recovers() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let mut server = ServerProcess::spawn(ServerProcess::with_store(
        "config/default.toml",
        &postgres.url(),
    ));
    register(server.addr, "alice").await;
    let mut bob = Client::login(server.addr, "bob").await;
    let mut carol = Client::login(server.addr, "carol").await;
    carol.expect("login|bob").await;
    bob.expect("login|carol").await;
    bob.send("talk|alice|before").await;
    bob.expect("queued|alice").await;

    postgres.ctl("stop");
    bob.send("talk|alice|while down").await;
    bob.expect("error|store-unavailable|alice").await;
    server
        .wait_for_log("cannot keep a message for an offline user")
        .expect("the failure is logged");
    bob.send("talk|carol|still here").await;
    carol.expect("talk|bob|still here").await;

    postgres.ctl("start");
    // The pool connects again on its own; the first attempts may still find it starting.
    let mut recovered = false;
    for attempt in 0..20 {
        bob.send(&format!("talk|alice|after {attempt}")).await;
        match bob.recv().await.as_str() {
            "queued|alice" => {
                recovered = true;
                break;
            }
            "error|store-unavailable|alice" => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        recovered,
        "the store recovers without a restart of the chat server"
    );
    let mut alice = account_login(server.addr, "alice").await;
    let missed = read_replay(&mut alice).await;
    let texts: Vec<&str> = missed.iter().map(|(_, _, text)| text.as_str()).collect();
    assert_eq!(texts.first(), Some(&"before"));
    assert!(
        texts.last().is_some_and(|t| t.starts_with("after ")),
        "{texts:?}"
    );
    assert!(!texts.contains(&"while down"), "never a false queued");
}
