//! A room flood on a real network, as an attacker would stage it: clients that read everything
//! as fast as it comes share a room with a thousand connections that never read (4 KiB receive
//! buffers), and eight senders pour 3.9 KB lines into it. No client that reads may be cut off,
//! every line must reach every reader in order, and the server's memory must stay within its
//! outbound budget; the figures (bystander latency, peak memory) are printed for the notes.
//!
//! `ACTOR_CHAT_SERVER_BIN=path` runs it against another build of the server (e.g. an older
//! one, for a before/after comparison).

mod common;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{process::ServerProcess, Client, Lines, READ_TIMEOUT};
use tokio::{net::TcpSocket, sync::Barrier, time::Instant};

/// Clients in the room that read everything.
const READERS: usize = 8;
/// Clients in the room that send the flood (and read too).
const SENDERS: usize = 8;
/// Clients in the room that never read.
const NON_READERS: usize = 1000;
/// Each sender's bursts, in lines.
const BURSTS: [usize; 3] = [100, 50, 50];
/// Bytes of text per line.
const TEXT_BYTES: usize = 3900;
/// The outbound budget the server runs with, and what its memory may exceed it by.
const BUDGET_MIB: u64 = 256;
const OVERHEAD_MIB: u64 = 100;

#[actix::test]
async fn a_room_flood_cuts_off_no_client_that_reads_and_memory_stays_in_budget() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the descriptor limit");
    let mut command = ServerProcess::command("config/default.toml");
    if let Ok(binary) = std::env::var("ACTOR_CHAT_SERVER_BIN") {
        command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
            .env("CHAT__SERVER__BIND", "127.0.0.1:0")
            .env("CHAT__HTTP__BIND", "")
            .env("RUST_LOG", "info");
    }
    // A long grace: a reader that this test's own thread leaves unread for a few seconds on a
    // loaded machine is still a reader; the non-readers are cut by the budget either way.
    command
        .env("CHAT__LIMITS__LINES_PER_SEC", "0")
        .env("CHAT__LIMITS__SLOW_READER_GRACE_SECS", "60")
        .env("CHAT__SERVER__PRESENCE", "none");
    let mut server = ServerProcess::spawn(command);
    let addr = server.addr;
    let before_kib = server.rss_kib();

    // Readers and senders join first; every member's join is a line to the others.
    let mut members = Vec::new();
    for i in 0..READERS + SENDERS {
        let mut client = Client::login(addr, &format!("m{i}")).await;
        client.send("join|big").await;
        client.expect("ok|join|big").await;
        let _members = client.recv().await;
        members.push(client);
    }
    let mut non_readers = Vec::new();
    for i in 0..NON_READERS {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("a small receive buffer");
        let mut client = Client::over(socket.connect(addr).await.expect("connect"));
        client.send(&format!("login|nr{i}\njoin|big")).await;
        non_readers.push(client);
    }
    // Every member has now been told of every later join, in order; the last non-reader's
    // join is the barrier that all of them are in.
    let mut readers = Vec::new();
    for (i, mut client) in members.into_iter().enumerate() {
        let last = format!("join|big|nr{}", NON_READERS - 1);
        while client.recv().await != last {}
        readers.push((i, client));
    }

    // The bystanders run on a thread of their own, so that what they measure is the server,
    // not this thread's turn among the room's readers.
    let flooding = Arc::new(AtomicBool::new(true));
    let (ready, bystanders_ready) = std::sync::mpsc::channel();
    let bystanders = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the bystanders");
            runtime.block_on(direct_messages_while(addr, &flooding, ready))
        })
    };
    bystanders_ready
        .recv_timeout(READ_TIMEOUT)
        .expect("the bystanders are logged in");

    let start = Instant::now();
    let peak_kib = Arc::new(AtomicU64::new(before_kib));
    let sampler = {
        let (flooding, peak_kib, pid) = (flooding.clone(), peak_kib.clone(), server.pid());
        actix_rt::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                if let Ok(rss) = actor_chat::bench::rss_kib(pid) {
                    peak_kib.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Every client in the room reads until it has every other sender's every line.
    let total: usize = BURSTS.iter().sum();
    let burst_barrier = Arc::new(Barrier::new(SENDERS));
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|(i, client)| {
            let barrier = burst_barrier.clone();
            actix_rt::spawn(async move {
                let (lines, mut writer) = client.split();
                let me = format!("m{i}");
                let sender = i >= READERS;
                let expected = if sender { SENDERS - 1 } else { SENDERS } * total;
                let reading = actix_rt::spawn(read_room(lines, me.clone(), expected));
                if sender {
                    let text = "f".repeat(TEXT_BYTES);
                    let mut seq = 0;
                    for burst in BURSTS {
                        let mut lines = String::new();
                        for _ in 0..burst {
                            lines.push_str(&format!("say|big|{me}:{seq}:{text}\n"));
                            seq += 1;
                        }
                        // A sender cut off ends its reader too, which reports it.
                        let _ = writer.try_send_raw(lines.as_bytes()).await;
                        barrier.wait().await;
                    }
                }
                let outcome = reading.await.expect("the reader task");
                (me, outcome, writer)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("a room member's task"));
    }
    let elapsed = start.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let mut latencies = bystanders.join().expect("the bystanders' thread");
    sampler.await.expect("the sampler");

    let mut cut = Vec::new();
    for (me, outcome, _writer) in &outcomes {
        match outcome {
            Ok(()) => {}
            Err(why) => cut.push(format!("{me}: {why}")),
        }
    }
    // Non-readers: how many the server has given up on by now, as its log tells.
    drop(non_readers);
    let non_readers_cut = server.count_in_log("cut off: too slow", NON_READERS);
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let peak_mib = peak_kib.load(Ordering::Relaxed) / 1024;
    eprintln!(
        "room flood: {} of {} reading members cut; {} lines of {TEXT_BYTES} B fanned out to {} \
         members in {elapsed:?}; bystander DM p50 {:?} p99 {:?} max {:?} ({} samples); server \
         RSS {} MiB before, peak {peak_mib} MiB; {non_readers_cut} of {NON_READERS} non-readers \
         cut as too slow",
        cut.len(),
        READERS + SENDERS,
        SENDERS * total,
        READERS + SENDERS + NON_READERS,
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or_default(),
        latencies.len(),
        before_kib / 1024,
    );
    assert!(cut.is_empty(), "reading members cut off: {cut:?}");
    // What the non-readers owe passes the budget many times over: most must have been cut.
    assert!(
        non_readers_cut >= NON_READERS / 2,
        "only {non_readers_cut} of {NON_READERS} non-readers were cut off"
    );
    assert!(
        peak_mib < BUDGET_MIB + OVERHEAD_MIB,
        "server RSS peaked at {peak_mib} MiB"
    );
}

/// Reads room lines until `expected` have come from the other senders, each sender's in order;
/// an error describes how the member was let down.
async fn read_room(mut lines: Lines, me: String, expected: usize) -> Result<(), String> {
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    while received < expected {
        let Some(line) = lines.recv_within(3 * READ_TIMEOUT).await? else {
            return Err(format!("disconnected after {received} lines"));
        };
        if line.starts_with("bye") {
            return Err(format!("{line} after {received} lines"));
        }
        let Some(rest) = line.strip_prefix("say|big|") else {
            continue;
        };
        let mut fields = rest.splitn(3, '|');
        let (Some(_from), Some(body)) = (fields.next(), fields.next()) else {
            return Err(format!("a malformed line: {line:.60}"));
        };
        let mut parts = body.splitn(3, ':');
        let (Some(sender), Some(seq)) = (parts.next(), parts.next()) else {
            return Err(format!("a malformed body: {body:.60}"));
        };
        let seq: usize = seq.parse().map_err(|_| format!("a bad sequence: {seq}"))?;
        let want = next.entry(sender.to_owned()).or_default();
        if seq != *want {
            return Err(format!("{me} got {sender}:{seq}, expected {sender}:{want}"));
        }
        *want += 1;
        received += 1;
    }
    Ok(())
}

/// Two clients outside the room exchange direct messages, one at a time, for as long as
/// `flooding` holds; returns each round trip's time (sent by one, read by the other).
async fn direct_messages_while(
    addr: std::net::SocketAddr,
    flooding: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<Duration> {
    let mut a = Client::login(addr, "bystander_a").await;
    let b = Client::login(addr, "bystander_b").await;
    let (mut b_lines, _b_writer) = b.split();
    a.send("talk|bystander_b|warm-up").await;
    b_lines.expect("talk|bystander_a|warm-up").await;
    let _ = ready.send(());
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while flooding.load(Ordering::Relaxed) {
        let sent = Instant::now();
        a.send(&format!("talk|bystander_b|{n}")).await;
        // A bystander cut off or starved is a result too (an older server's).
        match b_lines.recv_within(READ_TIMEOUT).await {
            Ok(Some(line)) if line == format!("talk|bystander_a|{n}") => {}
            other => {
                eprintln!("bystander_b got {other:?}");
                break;
            }
        }
        latencies.push(sent.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies
}
