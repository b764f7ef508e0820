//! TLS end to end, against the server binary: chat between a TLS and a plain client, what the
//! TLS port does with plain text and with a handshake that never comes, a certificate reloaded
//! on SIGHUP, the client binary's `--tls`/`--ca`, and `gen-cert`. Certificates are made here by
//! rcgen (through `actor_chat::tls::self_signed`) in a temporary folder; everything is loopback.

mod common;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use actor_chat::tls;
use common::{
    process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT},
    Client, READ_TIMEOUT,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// A folder of its own for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("actor-chat-tls-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary folder");
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a new self-signed certificate for `names` and its key to `dir/cert.pem` and
/// `dir/key.pem` (each replaced in one rename, as a renewal tool would); returns the
/// certificate as DER, to compare with what a server presents.
fn write_certificate(dir: &TempDir, names: &[&str]) -> CertificateDer<'static> {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let (cert, key) = tls::self_signed(&names).expect("rcgen makes a certificate");
    for (file, pem) in [("key.pem", &key), ("cert.pem", &cert)] {
        let new = dir.join(&format!("{file}.new"));
        std::fs::write(&new, pem).expect("write the PEM file");
        std::fs::rename(&new, dir.join(file)).expect("move it in place");
    }
    CertificateDer::from_pem_slice(cert.as_bytes()).expect("the PEM parses")
}

/// The server binary on the default config, listening on plain TCP and on TLS with the
/// certificate in `dir`.
fn tls_server(dir: &TempDir) -> Command {
    let mut command = ServerProcess::command("config/default.toml");
    command
        .env("CHAT__TLS__BIND", "127.0.0.1:0")
        .env("CHAT__TLS__CERT", dir.join("cert.pem"))
        .env("CHAT__TLS__KEY", dir.join("key.pem"));
    command
}

/// Connects over TLS to `addr`, checking the certificate against `name` with `ca` as the only
/// trust root; returns the client and the certificate the server presented.
async fn connect_tls(addr: SocketAddr, ca: &Path, name: &str) -> (Client, CertificateDer<'static>) {
    let config = tls::client_config(Some(ca)).expect("the CA file loads");
    let tcp = timeout(READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let name = ServerName::try_from(name.to_owned()).expect("a valid server name");
    let stream = timeout(READ_TIMEOUT, tls::connector(config).connect(name, tcp))
        .await
        .expect("the handshake finishes in time")
        .expect("the handshake succeeds");
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presents a certificate")
        .clone()
        .into_owned();
    (Client::over(stream), presented)
}

/// [`connect_tls`], then `login|NAME`.
async fn login_tls(addr: SocketAddr, ca: &Path, name: &str) -> (Client, CertificateDer<'static>) {
    let (mut client, presented) = connect_tls(addr, ca, "localhost").await;
    client.send(&format!("login|{name}")).await;
    client.expect(&format!("ok|login|{name}")).await;
    (client, presented)
}

/// Reads a raw TCP connection until the server closes it (end of stream or a reset); returns
/// what was read. Fails if the server keeps it open past [`READ_TIMEOUT`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let closed = timeout(READ_TIMEOUT, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    seen
}

/// Runs a binary to its end, bounded; returns its output.
fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let status = wait_with_deadline(&mut child, PROCESS_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("collect the output");
    assert!(status.is_some(), "did not exit in time: {output:?}");
    output
}

/// The client binary, logging in as `name` over TLS to `server` with `ca` as its trust root.
fn client_binary(name: &str, server: &str, ca: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"));
    command
        .args([name, "--tls", "--server", server, "--ca"])
        .arg(ca);
    command
}

#[actix::test]
async fn a_tls_client_and_a_plain_client_chat_both_ways() {
    let dir = TempDir::new("chat");
    write_certificate(&dir, &["localhost"]);
    let mut server = ServerProcess::spawn(tls_server(&dir));
    let tls_addr = server.tls_addr();
    assert_ne!(tls_addr, server.addr, "two ports");

    let (mut alice, _) = login_tls(tls_addr, &dir.join("cert.pem"), "alice").await;
    let mut bob = Client::login(server.addr, "bob").await;
    bob.expect("login|alice").await;
    alice.expect("login|bob").await;
    alice.send("talk|bob|over TLS").await;
    bob.expect("talk|alice|over TLS").await;
    bob.send("talk|alice|over plain TCP").await;
    alice.expect("talk|bob|over plain TCP").await;

    // Shutdown reaches the TLS client as it does the plain one.
    server.signal(libc::SIGTERM);
    assert_eq!(alice.expect_closed().await, ["bye|shutdown"]);
    assert_eq!(bob.expect_closed().await, ["bye|shutdown"]);
    let status = server.wait_exit().expect("exits within the grace period");
    assert_eq!(status.code(), Some(0));
}

#[actix::test]
async fn plain_text_on_the_tls_port_is_closed_and_the_server_goes_on() {
    let dir = TempDir::new("plain-text");
    write_certificate(&dir, &["localhost"]);
    let mut server = ServerProcess::spawn(tls_server(&dir));
    let tls_addr = server.tls_addr();

    let mut stream = TcpStream::connect(tls_addr).await.expect("connect");
    stream
        .write_all(b"login|mallory\n")
        .await
        .expect("the server takes the bytes");
    let answer = read_until_closed(&mut stream).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("ok|login"),
        "{answer:?}"
    );

    let (mut alice, _) = login_tls(tls_addr, &dir.join("cert.pem"), "alice").await;
    let mut bob = Client::login(server.addr, "bob").await;
    alice.expect("login|bob").await;
    bob.send("talk|alice|still here").await;
    alice.expect("talk|bob|still here").await;
}

#[actix::test]
async fn a_stalled_handshake_holds_a_slot_until_the_login_timeout() {
    let dir = TempDir::new("stalled");
    write_certificate(&dir, &["localhost"]);
    let mut command = tls_server(&dir);
    command
        .env("CHAT__HEARTBEAT__LOGIN_TIMEOUT_SECS", "0.5")
        .env("CHAT__SERVER__MAX_CONNECTIONS", "1")
        .env("RUST_LOG", "info,actor_chat=debug");
    let mut server = ServerProcess::spawn(command);
    let tls_addr = server.tls_addr();

    let started = Instant::now();
    let mut stalled = TcpStream::connect(tls_addr).await.expect("connect");
    server
        .wait_for_log("accepted on the TLS port")
        .expect("the server takes the connection");
    // The handshake that never starts counts against server.max_connections like a session.
    let mut refused = Client::connect(server.addr).await;
    assert_eq!(refused.expect_closed().await, ["bye|server-full"]);
    let answer = read_until_closed(&mut stalled).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed after {:?}, before the login timeout",
        started.elapsed()
    );
    let why = server
        .wait_for_log("cannot open the connection")
        .expect("the close is logged at debug");
    assert!(why.contains("TLS handshake not finished"), "{why}");
}

#[actix::test]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = TempDir::new("reload");
    let first = write_certificate(&dir, &["localhost"]);
    let mut server = ServerProcess::spawn(tls_server(&dir));
    let tls_addr = server.tls_addr();
    let ca = dir.join("ca.pem");

    std::fs::copy(dir.join("cert.pem"), &ca).expect("trust the first certificate");
    let (mut alice, presented) = login_tls(tls_addr, &ca, "alice").await;
    assert_eq!(presented, first);

    let second = write_certificate(&dir, &["localhost"]);
    assert_ne!(first, second);
    server.signal(libc::SIGHUP);
    server
        .wait_for_log("SIGHUP received: reloaded the TLS certificate")
        .expect("the reload is logged");
    std::fs::copy(dir.join("cert.pem"), &ca).expect("trust the second certificate");
    let (mut bob, presented) = login_tls(tls_addr, &ca, "bob").await;
    assert_eq!(
        presented, second,
        "a new connection gets the new certificate"
    );
    // The connection made before goes on with the old one.
    alice.expect("login|bob").await;
    bob.expect("login|alice").await;
    alice.send("talk|bob|made before the reload").await;
    bob.expect("talk|alice|made before the reload").await;

    // A broken file on reload is a warning; the certificate in use stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").expect("break the file");
    server.signal(libc::SIGHUP);
    let warning = server
        .wait_for_log("SIGHUP received: kept the old TLS certificate")
        .expect("the failed reload is logged");
    assert!(warning.contains("tls.cert"), "{warning}");
    let (_carol, presented) = login_tls(tls_addr, &ca, "carol").await;
    assert_eq!(presented, second);
}

#[test]
fn the_client_binary_refuses_a_certificate_for_another_name() {
    let dir = TempDir::new("other-name");
    write_certificate(&dir, &["localhost"]);
    let mut server = ServerProcess::spawn(tls_server(&dir));
    // The certificate is for "localhost" only; 127.0.0.1 is not one of its names.
    let server_arg = server.tls_addr().to_string();
    let output = run_bounded(client_binary("alice", &server_arg, &dir.join("cert.pem")));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "the certificate of {server_arg} is not accepted: it is for another host name (the \
             HOST in --server must be one of its names)\n"
        )
    );
    // And one signed by nobody it trusts is refused as such.
    let other = TempDir::new("other-ca");
    write_certificate(&other, &["localhost"]);
    let server_arg = format!("localhost:{}", server.tls_addr().port());
    let output = run_bounded(client_binary("alice", &server_arg, &other.join("cert.pem")));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "the certificate of {server_arg} is not accepted: it is not signed by an authority"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn gen_cert_writes_a_pair_the_server_and_the_client_use() {
    let dir = TempDir::new("gen-cert");
    let out = dir.join("certs");
    let mut gen_cert = Command::new(env!("CARGO_BIN_EXE_actor-chat-server"));
    gen_cert.arg("gen-cert").arg("--out").arg(&out);
    let output = run_bounded(gen_cert);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let advice = String::from_utf8_lossy(&output.stdout);
    assert!(advice.contains("[tls]"), "{advice}");
    assert!(advice.contains("--ca"), "{advice}");
    let mode = std::fs::metadata(out.join("key.pem"))
        .expect("the key is written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Writing again would clobber the pair: refused.
    let mut again = Command::new(env!("CARGO_BIN_EXE_actor-chat-server"));
    again.arg("gen-cert").arg("--out").arg(&out);
    let output = run_bounded(again);
    assert_eq!(output.status.code(), Some(1), "{output:?}");

    // A TLS-only server on the pair, and the client binary trusting it with --ca.
    let mut command = ServerProcess::command("config/default.toml");
    command
        .env("CHAT__SERVER__BIND", "")
        .env("CHAT__TLS__BIND", "127.0.0.1:0")
        .env("CHAT__TLS__CERT", out.join("cert.pem"))
        .env("CHAT__TLS__KEY", out.join("key.pem"));
    let mut server = ServerProcess::spawn(command);
    let server_arg = format!("localhost:{}", server.tls_addr().port());
    let output = run_bounded(client_binary("alice", &server_arg, &out.join("cert.pem")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("* logged in as alice"), "{output:?}");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start() {
    let dir = TempDir::new("bad-start");
    write_certificate(&dir, &["localhost"]);
    let mut command = tls_server(&dir);
    command.env("CHAT__TLS__KEY", dir.join("missing.pem"));
    let output = run_bounded(command);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("actor-chat-server: tls.key ") && stderr.contains("cannot be read"),
        "{stderr}"
    );
}

#[test]
fn the_bench_tool_runs_pairs_over_tls() {
    let dir = TempDir::new("bench");
    write_certificate(&dir, &["localhost"]);
    let mut command = ServerProcess::command("config/bench.toml");
    command
        .env("CHAT__TLS__BIND", "127.0.0.1:0")
        .env("CHAT__TLS__CERT", dir.join("cert.pem"))
        .env("CHAT__TLS__KEY", dir.join("key.pem"))
        .env("RUST_LOG", "info");
    let mut server = ServerProcess::spawn(command);
    let mut bench = Command::new(env!("CARGO_BIN_EXE_actor-chat-bench"));
    bench
        .args([
            "pairs", "-n", "4", "-m", "200", "--json", "--tls", "--server",
        ])
        .arg(server.tls_addr().to_string())
        .arg("--ca")
        .arg(dir.join("cert.pem"));
    let output = run_bounded(bench);
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(report.contains("\"delivered\":800"), "{report}");
    assert!(report.contains("\"lost\":0"), "{report}");
}
