//! Accounts: `register`, `login` with a password, `passwd`, the reservation of registered
//! names, the plaintext refusal, the throttle and the operator's `account` commands. The
//! servers keep their accounts in a SQLite file in a temporary folder; clients reach them
//! through in-memory pipes, so a test can say where a client connects from and whether its
//! transport is encrypted. Passwords are hashed with the real (OWASP) argon2id parameters.

mod common;

use std::net::SocketAddr;

use actor_chat::{config::StoreUrl, server::Security, store::Store};
use common::{build, builder, temp::TempDir, Client, TestServer};

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);
/// An address on another machine (TEST-NET-3).
const REMOTE: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)),
    50_000,
);

async fn server(dir: &TempDir) -> TestServer {
    server_with(dir, &[]).await
}

async fn server_with(dir: &TempDir, keys: &[(&str, &str)]) -> TestServer {
    let mut settings = builder()
        .set("store.url", dir.url())
        .set("server.presence", "none");
    for (key, value) in keys {
        settings = settings.set(key, value);
    }
    TestServer::start_in_memory_with_store(build(settings)).await
}

/// A client from this machine over plain text (where passwords are allowed).
fn local(server: &TestServer) -> Client {
    server.connect_with(LOOPBACK, Security::Plain)
}

/// Registers `name` with `password` on a new connection, which stays logged in.
async fn registered(server: &TestServer, name: &str, password: &str) -> Client {
    let mut client = local(server);
    client.send(&format!("register|{name}|{password}")).await;
    client.expect(&format!("ok|login|{name}")).await;
    client
}

#[actix::test]
async fn a_registered_name_is_reserved_for_its_password() {
    let dir = TempDir::new("reserved");
    let server = server(&dir).await;
    let mut alice = registered(&server, "alice", "correct horse").await;

    // Online: taken, as any name.
    let mut other = local(&server);
    other.send("login|alice").await;
    other.expect("error|name-taken|alice").await;
    other.send("register|ALICE|something else").await;
    other.expect("error|name-taken|ALICE").await;
    alice.send("exit").await;
    assert_eq!(alice.expect_closed().await, ["bye"]);

    // Offline: reserved, and the password opens it.
    other.send("login|alice").await;
    other.expect("error|password-required|alice").await;
    other.send("login|Alice|wrong horse").await;
    other.expect("error|bad-password|Alice").await;
    other.send("register|alice|correct horse").await;
    other.expect("error|name-taken|alice").await;
    other.send("login|ALICE|correct horse").await;
    other.expect("ok|login|ALICE").await;
    // A login to an account replays what it missed (nothing, here).
    other.expect("end|missed|0").await;
    other.send("who").await;
    other.expect("users|ALICE").await;
    other.send("register|bob|correct horse").await;
    other.expect("error|already-logged-in|ALICE").await;

    // An unknown account gets the very answer a wrong password does.
    let mut stranger = local(&server);
    stranger.send("login|nobody|whatever99").await;
    stranger.expect("error|bad-password|nobody").await;
    // Unregistered names work as they always did.
    stranger.send("login|nobody").await;
    stranger.expect("ok|login|nobody").await;
    server.shutdown().await;
}

#[actix::test]
async fn register_refuses_bad_names_weak_passwords_and_a_closed_registration() {
    let dir = TempDir::new("refusals");
    let server = server(&dir).await;
    let mut client = local(&server);
    client.send("register|bad name|correct horse").await;
    client.expect("error|bad-name|bad name").await;
    client.send("register|bob|short").await;
    client.expect("error|weak-password|bob").await;
    client
        .send(&format!("register|bob|{}", "x".repeat(257)))
        .await;
    client.expect("error|weak-password|bob").await;
    client.send("register|bob|has|a|bar|in|it").await;
    client.expect("error|weak-password|bob").await;
    client.send("register|bob").await;
    client.expect("error|bad-arguments|register").await;
    client.send("passwd|correct horse|battery staple").await;
    client.expect("error|not-logged-in|passwd").await;
    client
        .send(&format!("register|bob|{}", "x".repeat(256)))
        .await;
    client.expect("ok|login|bob").await;
    server.shutdown().await;

    let dir = TempDir::new("closed");
    let server = server_with(&dir, &[("auth.registration", "closed")]).await;
    let mut client = local(&server);
    client.send("register|bob|correct horse").await;
    client.expect("error|registration-closed|bob").await;
    client.send("login|bob").await;
    client.expect("ok|login|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn without_a_store_there_is_no_registration_and_no_account() {
    let server = TestServer::start_paused(common::settings_without_presence()).await;
    let mut client = server.connect().await;
    client.send("register|bob|correct horse").await;
    client.expect("error|registration-closed|bob").await;
    client.send("login|bob|correct horse").await;
    client.expect("error|bad-password|bob").await;
    client.send("login|bob").await;
    client.expect("ok|login|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn passwd_changes_the_password_of_the_account_logged_in_to() {
    let dir = TempDir::new("passwd");
    let server = server(&dir).await;
    let mut bob = registered(&server, "bob", "first password").await;
    bob.send("passwd|not it at all|second password").await;
    bob.expect("error|bad-password|bob").await;
    bob.send("passwd|first password|short").await;
    bob.expect("error|weak-password|bob").await;
    bob.send("passwd|first password|second password").await;
    bob.expect("ok|passwd").await;
    bob.send("exit").await;
    bob.expect_closed().await;

    let mut again = local(&server);
    again.send("login|bob|first password").await;
    again.expect("error|bad-password|bob").await;
    again.send("login|bob|second password").await;
    again.expect("ok|login|bob").await;

    // A guest has no password to change.
    let mut guest = local(&server);
    guest.send("login|carol").await;
    guest.expect("ok|login|carol").await;
    guest.send("passwd|first password|second password").await;
    guest.expect("error|not-logged-in|passwd").await;
    server.shutdown().await;
}

#[actix::test]
async fn passwords_over_plain_text_from_another_machine_are_refused() {
    let dir = TempDir::new("tls-required");
    let server = server(&dir).await;
    registered(&server, "alice", "correct horse").await;

    let mut remote = server.connect_with(REMOTE, Security::Plain);
    remote.send("register|bob|correct horse").await;
    remote.expect("error|tls-required|register").await;
    remote.send("login|alice|correct horse").await;
    remote.expect("error|tls-required|login").await;
    // Without a password, nothing is refused that was not before.
    remote.send("login|alice").await;
    remote.expect("error|password-required|alice").await;
    remote.send("login|carol").await;
    remote.expect("ok|login|carol").await;
    remote.send("passwd|correct horse|battery staple").await;
    remote.expect("error|tls-required|passwd").await;

    // The same address over an encrypted transport.
    let mut secure = server.connect_with(REMOTE, Security::Encrypted);
    secure.send("login|alice|correct horse").await;
    secure.expect("ok|login|alice").await;
    secure.expect("end|missed|0").await;
    secure.send("passwd|correct horse|battery staple").await;
    secure.expect("ok|passwd").await;
    server.shutdown().await;

    let dir = TempDir::new("plaintext-allowed");
    let server = server_with(&dir, &[("auth.allow_plaintext_passwords", "true")]).await;
    let mut remote = server.connect_with(REMOTE, Security::Plain);
    remote.send("register|bob|correct horse").await;
    remote.expect("ok|login|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn in_accounts_mode_every_login_needs_an_account() {
    let dir = TempDir::new("accounts-mode");
    let server = server_with(&dir, &[("auth.mode", "accounts")]).await;
    let mut client = local(&server);
    client.send("login|bob").await;
    client.expect("error|password-required|bob").await;
    client.send("register|bob|correct horse").await;
    client.expect("ok|login|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn accounts_outlive_the_server_and_only_a_hash_is_kept() {
    let dir = TempDir::new("restart");
    let server = server(&dir).await;
    registered(&server, "dave", "correct horse").await;
    server.shutdown().await;

    let server = server_with(&dir, &[]).await;
    let mut client = local(&server);
    client.send("login|dave").await;
    client.expect("error|password-required|dave").await;
    client.send("login|dave|correct horse").await;
    client.expect("ok|login|dave").await;
    server.shutdown().await;

    let store = Store::open(&StoreUrl::Sqlite(dir.db()))
        .await
        .expect("the store opens");
    let account = store
        .account("DAVE")
        .await
        .expect("a query")
        .expect("dave's account");
    assert_eq!(account.name, "dave");
    assert!(
        account
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "a PHC string"
    );
    assert!(!account.password_hash.contains("horse"));
    store.close().await;
    assert!(dir.path().exists());
}

#[actix::test]
async fn wrong_passwords_are_throttled_per_account_and_per_address() {
    let dir = TempDir::new("throttle");
    let server = server(&dir).await;
    registered(&server, "alice", "correct horse").await;
    let mut guesser = local(&server);
    for _ in 0..5 {
        guesser.send("login|alice|wrong guess").await;
        guesser.expect("error|bad-password|alice").await;
    }
    // Refused before the password is even looked at: the right one too, from anywhere.
    guesser.send("login|alice|correct horse").await;
    guesser.expect("error|rate-limited|login").await;
    let mut elsewhere = server.connect_with(REMOTE, Security::Encrypted);
    elsewhere.send("login|alice|correct horse").await;
    elsewhere.expect("error|rate-limited|login").await;
    // Other accounts, from other addresses, go on.
    registered(&server, "bob", "battery staple")
        .await
        .send("exit")
        .await;
    let mut bob = server.connect_with(REMOTE, Security::Encrypted);
    bob.send("login|bob|battery staple").await;
    bob.expect("ok|login|bob").await;

    // One address trying many names is throttled as well.
    let spray: SocketAddr = "198.51.100.9:4000".parse().expect("an address");
    let mut sprayer = server.connect_with(spray, Security::Encrypted);
    for name in ["n1", "n2", "n3", "n4", "n5"] {
        sprayer.send(&format!("login|{name}|password1")).await;
        sprayer.expect(&format!("error|bad-password|{name}")).await;
    }
    sprayer.send("login|bob|battery staple").await;
    sprayer.expect("error|rate-limited|login").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_removed_account_logs_its_user_out_and_frees_the_name() {
    let dir = TempDir::new("removed");
    let server = server(&dir).await;
    let mut alice = registered(&server, "alice", "correct horse").await;
    let mut guest = local(&server);
    guest.send("login|carol").await;
    guest.expect("ok|login|carol").await;

    // The operator's command, as `actor-chat-server account remove` runs it: on the store.
    let store = Store::open(&StoreUrl::Sqlite(dir.db()))
        .await
        .expect("the store opens");
    actor_chat::accounts::admin::remove(&store, "ALICE")
        .await
        .expect("alice's account is removed");
    store.close().await;
    server.refresh_accounts();
    assert_eq!(alice.expect_closed().await, ["bye|account-removed"]);
    // Guests are not touched.
    guest.expect_nothing_pending().await;

    let mut again = local(&server);
    again.send("login|alice|correct horse").await;
    again.expect("error|bad-password|alice").await;
    again.send("login|alice").await;
    again.expect("ok|login|alice").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_guest_may_register_the_name_it_uses_and_no_other() {
    let dir = TempDir::new("upgrade");
    let server = server(&dir).await;
    let mut erin = local(&server);
    erin.send("login|erin").await;
    erin.expect("ok|login|erin").await;
    erin.send("register|frank|correct horse").await;
    erin.expect("error|already-logged-in|erin").await;
    erin.send("passwd|correct horse|battery staple").await;
    erin.expect("error|not-logged-in|passwd").await;
    erin.send("register|ERIN|correct horse").await;
    erin.expect("ok|login|erin").await;
    // Logged in to the account now: it can change its password, and is logged out if the
    // account goes.
    erin.send("passwd|correct horse|battery staple").await;
    erin.expect("ok|passwd").await;
    let store = Store::open(&StoreUrl::Sqlite(dir.db()))
        .await
        .expect("the store opens");
    actor_chat::accounts::admin::remove(&store, "erin")
        .await
        .expect("erin's account is removed");
    store.close().await;
    server.refresh_accounts();
    assert_eq!(erin.expect_closed().await, ["bye|account-removed"]);
    server.shutdown().await;
}

/// The back-off end to end, under paused time: the clock jumps ahead whenever nothing is left to
/// do (the hashing runs on blocking threads, which hold the clock while they work). No store:
/// every name is unknown, and an unknown account is throttled exactly as a real one, so the
/// throttle tells nothing about which names exist.
/// A refusal holds the connection's input until the back-off is over, for a second at most:
/// a client that guesses again as soon as it is refused is answered about once a second, not
/// as fast as it can send. Paused time, so the waits are exact.
#[actix::test]
async fn a_throttled_connection_is_read_again_only_after_a_pause() {
    use std::time::Duration;
    use tokio::time::{sleep, Instant};

    let server = TestServer::start_paused(common::settings_without_presence()).await;
    let mut guesser = server.connect().await;
    for _ in 0..4 {
        guesser.send("login|ghost|guess one").await;
        guesser.expect("error|bad-password|ghost").await;
    }
    let struck = Instant::now();
    guesser.send("login|ghost|guess one").await;
    guesser.expect("error|bad-password|ghost").await;
    // The fifth wrong password starts a back-off of one second: the refusal comes at once, and
    // the line after it is read when the back-off is over.
    guesser.send("login|ghost|guess two").await;
    guesser.expect("error|rate-limited|login").await;
    guesser.send("ping").await;
    guesser.expect("pong").await;
    assert!(
        struck.elapsed() >= Duration::from_secs(1),
        "read again after {:?}",
        struck.elapsed()
    );

    // The next wrong password doubles the back-off to two seconds; the pause stays at one.
    guesser.send("login|ghost|guess three").await;
    guesser.expect("error|bad-password|ghost").await;
    guesser.send("login|ghost|guess four").await;
    let refused = Instant::now();
    guesser.expect("error|rate-limited|login").await;
    guesser.send("ping").await;
    guesser.expect("pong").await;
    let held = refused.elapsed();
    assert!(
        held >= Duration::from_secs(1) && held < Duration::from_millis(1500),
        "held for {held:?}"
    );
    // Still within the back-off: refused again, and held again.
    guesser.send("login|ghost|guess five").await;
    guesser.expect("error|rate-limited|login").await;
    sleep(Duration::from_secs(2)).await;
    guesser.send("login|ghost|guess six").await;
    guesser.expect("error|bad-password|ghost").await;
    server.shutdown().await;
}

#[actix::test]
async fn the_back_off_doubles_with_each_further_wrong_password() {
    use std::time::Duration;
    use tokio::time::{sleep, Instant};

    let server = TestServer::start_paused(common::settings_without_presence()).await;
    let mut guesser = server.connect().await;
    for _ in 0..5 {
        guesser.send("login|ghost|guess one").await;
        guesser.expect("error|bad-password|ghost").await;
    }
    let started = Instant::now();
    guesser.send("login|ghost|guess two").await;
    guesser.expect("error|rate-limited|login").await;
    sleep(Duration::from_millis(1000) - started.elapsed()).await;
    // One second on: one more guess, and a back-off of two.
    guesser.send("login|ghost|guess three").await;
    guesser.expect("error|bad-password|ghost").await;
    let started = Instant::now();
    sleep(Duration::from_millis(1500)).await;
    guesser.send("login|ghost|guess four").await;
    guesser.expect("error|rate-limited|login").await;
    sleep(Duration::from_millis(2000) - started.elapsed()).await;
    guesser.send("login|ghost|guess five").await;
    guesser.expect("error|bad-password|ghost").await;
    let started = Instant::now();
    sleep(Duration::from_millis(3900)).await;
    guesser.send("login|ghost|guess six").await;
    guesser.expect("error|rate-limited|login").await;
    sleep(Duration::from_millis(4000) - started.elapsed()).await;
    guesser.send("login|ghost|guess seven").await;
    guesser.expect("error|bad-password|ghost").await;
    // A name without a password is not a guess: it is not held up.
    guesser.send("login|someone").await;
    guesser.expect("ok|login|someone").await;
    server.shutdown().await;
}
