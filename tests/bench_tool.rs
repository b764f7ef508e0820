//! actor-chat-bench, end to end: the real server binary on an ephemeral loopback port, the real
//! bench binary in each mode with small numbers and `--json`, and checks on the figures it
//! reports. Every wait has a timeout, and every server is killed when its test ends.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT};
use serde_json::Value;

/// A server on the bench configuration, killed when the test ends.
fn server() -> ServerProcess {
    ServerProcess::start("config/bench.toml")
}

/// What a bench run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `--json` report.
    fn json(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "bench failed: {}{}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(self.stdout.trim()).expect("stdout is one JSON object")
    }
}

/// Runs actor-chat-bench with `args`, killing it if it outlives [`PROCESS_TIMEOUT`] (longer
/// than any `--timeout` given below, so the tool's own deadline is what normally ends a run).
fn bench(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_actor-chat-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start actor-chat-bench");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let Some(status) = wait_with_deadline(&mut child, PROCESS_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("actor-chat-bench {args:?} ran longer than {PROCESS_TIMEOUT:?}");
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `mode` against `server` with `args` after `--server ADDR`.
fn bench_on(server: &ServerProcess, mode: &str, args: &[&str]) -> Run {
    let addr = server.addr.to_string();
    bench(&[&[mode, "--server", &addr], args].concat())
}

/// The `--json` report of a successful `mode` run against `server`, with a 20 s deadline.
fn report_on(server: &ServerProcess, mode: &str, args: &[&str]) -> Value {
    bench_on(
        server,
        mode,
        &[args, &["--timeout", "20", "--json"]].concat(),
    )
    .json()
}

fn u64_of(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

fn f64_of(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

#[test]
fn pairs_closed_loop_delivers_every_message_in_order() {
    let server = server();
    let report = report_on(
        &server,
        "pairs",
        &[
            "--server-pid",
            &server.pid().to_string(),
            "-n",
            "6",
            "-m",
            "300",
            "-w",
            "8",
        ],
    );
    assert_eq!(report["mode"], "pairs");
    assert_eq!(report["pacing"], "closed");
    // Each of the 6 clients sends 300 messages to its partner.
    assert_eq!(u64_of(&report, "sent"), 6 * 300);
    assert_eq!(u64_of(&report, "delivered"), 6 * 300);
    assert_eq!(u64_of(&report, "lost"), 0);
    assert_eq!(u64_of(&report, "out_of_order"), 0);
    assert_eq!(u64_of(&report, "unexpected"), 0);
    assert_eq!(report["passed"], true);
    assert!(f64_of(&report, "msgs_per_s") > 0.0);
    let (p50, p99, max) = (
        f64_of(&report, "latency_p50_ms"),
        f64_of(&report, "latency_p99_ms"),
        f64_of(&report, "latency_max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(f64_of(&report, "server_cpu_pct").is_finite(), "{report}");
}

#[test]
fn pairs_open_loop_sends_at_the_rate_for_the_duration() {
    let server = server();
    let report = report_on(
        &server,
        "pairs",
        &["-n", "4", "--rate", "2000", "--duration", "0.5"],
    );
    assert_eq!(report["pacing"], "open");
    let sent = u64_of(&report, "sent");
    // 2000/s for 0.5 s: each of the 4 senders sends one at once, then 500/s for 0.5 s. A
    // slow box may send fewer, never more.
    assert!(sent <= 4 * (1 + 250), "sent {sent}");
    assert_eq!(u64_of(&report, "delivered"), sent);
    assert_eq!(u64_of(&report, "lost"), 0);
    assert_eq!(u64_of(&report, "out_of_order"), 0);
}

#[test]
fn room_delivers_every_line_to_every_other_member() {
    let server = server();
    let report = report_on(
        &server,
        "room",
        &["--rooms", "2", "--members", "4", "-m", "50"],
    );
    assert_eq!(report["mode"], "room");
    // 2 rooms × 4 members × 50 lines, each to the 3 others.
    assert_eq!(u64_of(&report, "sent"), 2 * 4 * 50);
    assert_eq!(u64_of(&report, "delivered"), 2 * 4 * 50 * 3);
    assert_eq!(u64_of(&report, "lost"), 0);
    assert_eq!(u64_of(&report, "out_of_order"), 0);
}

#[test]
fn churn_logs_in_and_out_repeatedly() {
    let server = server();
    let report = report_on(&server, "churn", &["--workers", "2", "--duration", "0.3"]);
    assert_eq!(report["mode"], "churn");
    assert!(u64_of(&report, "logins") > 0, "{report}");
    assert_eq!(u64_of(&report, "incomplete"), 0);
    assert!(f64_of(&report, "logins_per_s") > 0.0);
}

#[test]
fn idle_reports_server_memory_per_connection() {
    let server = server();
    let report = report_on(
        &server,
        "idle",
        &[
            "--server-pid",
            &server.pid().to_string(),
            "-n",
            "300",
            "--settle",
            "0.2",
        ],
    );
    assert_eq!(u64_of(&report, "connections"), 300);
    assert_eq!(u64_of(&report, "closed"), 0);
    assert!(u64_of(&report, "rss_after_kib") > u64_of(&report, "rss_before_kib"));
    assert!(f64_of(&report, "rss_per_conn_bytes") > 0.0, "{report}");
}

#[test]
fn table_is_printed_without_json() {
    let server = server();
    let run = bench_on(
        &server,
        "pairs",
        &["-n", "2", "-m", "10", "--timeout", "20"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("delivered    20 of 20 expected"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("result       ok"), "{}", run.stdout);
}

#[test]
fn non_loopback_server_is_refused_before_connecting() {
    // 10.1.2.3 is not reachable from here: a connect attempt would hang until the tool's
    // deadline and then report a timeout, not the loopback rule.
    let run = bench(&["pairs", "--server", "10.1.2.3:9999", "--timeout", "20"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("loopback"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn unreachable_server_is_one_sentence_and_exit_1() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }; // dropped: nothing listens there now
    let addr = format!("127.0.0.1:{port}");
    let run = bench(&["churn", "--server", &addr, "--timeout", "20"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("cannot connect to {addr}")),
        "{}",
        run.stderr
    );
}

#[test]
fn refused_login_is_one_sentence_and_exit_1() {
    let server = server();
    // Take the name the bench's first client will want.
    let mut squatter = TcpStream::connect(server.addr).expect("connect");
    squatter
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    squatter.write_all(b"login|benchtaken-0\n").expect("login");
    let mut reply = [0u8; 64];
    let n = squatter.read(&mut reply).expect("login reply");
    assert!(reply[..n].starts_with(b"ok|login|benchtaken-0"));

    let run = bench_on(
        &server,
        "pairs",
        &["--run-id", "taken", "-n", "2", "--timeout", "20"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("name-taken"), "{}", run.stderr);
}

#[test]
fn a_run_too_long_for_its_timeout_stops_at_the_deadline() {
    let server = server();
    let run = bench_on(
        &server,
        "pairs",
        &["-n", "2", "-m", "1000000000", "--timeout", "0.5", "--json"],
    );
    let report: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON report");
    let (sent, delivered) = (u64_of(&report, "sent"), u64_of(&report, "delivered"));
    assert!(0 < sent && sent < 2 * 1_000_000_000, "{report}");
    // What was still in flight at the deadline counts as lost, and losing fails the run.
    assert_eq!(u64_of(&report, "lost"), sent - delivered);
    let passed = report["passed"] == true;
    assert_eq!(passed, sent == delivered);
    assert_eq!(run.code, Some(if passed { 0 } else { 1 }));
}

#[test]
fn absurd_times_and_rates_are_one_sentence_and_exit_1() {
    for args in [
        &["pairs", "--timeout", "1e19"][..],
        &["pairs", "--rate", "1e300", "--duration", "1"],
        &["pairs", "--rate", "2000", "--duration", "1e12"],
        &["churn", "--duration", "1e12"],
        &["idle", "--server-pid", "1", "--settle", "1e12"],
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn a_rate_too_low_for_a_second_message_sends_one_per_sender() {
    let server = server();
    let report = report_on(
        &server,
        "pairs",
        &["-n", "2", "--rate", "1e-300", "--duration", "0.2"],
    );
    let sent = u64_of(&report, "sent");
    assert!(sent <= 2, "{report}");
    assert_eq!(u64_of(&report, "delivered"), sent);
}
