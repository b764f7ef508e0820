//! Chaos: about 200 clients doing random valid and invalid things at once, some vanishing and
//! coming back, one that never reads and one that floods. Afterwards the server must still
//! answer, `who` must list exactly the users still connected, and every direct message between
//! clients that stayed connected must have arrived exactly once and in order.
//!
//! Bounded: fixed counts of clients, rounds and messages, and every read has a timeout.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use common::{build, builder, Client, Lines, TestServer, Writer};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use tokio::sync::{mpsc, Barrier};

/// Clients that stay connected and whose direct messages are checked.
const STABLE: usize = 100;
/// Clients that connect, misbehave and vanish, over and over.
const VOLATILE: usize = 100;
const ROUNDS_PER_VOLATILE: usize = 4;
/// Commands each stable client sends.
const COMMANDS_PER_STABLE: usize = 150;

/// Per receiver: for each sender, the sequence numbers received, in arrival order.
type Received = HashMap<String, Vec<u64>>;

#[actix::test]
async fn the_server_survives_chaos_and_loses_nothing_for_well_behaved_clients() {
    // A small outbound cap, so the slow reader is cut off early; it must still hold a list of
    // every user and every room the server may have (about 200 users here, 1,000 allowed).
    let settings = build(
        builder()
            .set("server.presence", "all")
            .set("server.max_connections", 1000)
            .set("server.max_rooms", 1000)
            .set("limits.lines_per_sec", 50)
            .set("limits.burst", 1000)
            .set("limits.max_outbound_bytes", 256 * 1024),
    );
    let server = TestServer::start(settings).await;
    let addr = server.addr();

    // Logged in first, the observer hears every later login and logout.
    let (mut observer_lines, mut observer) = server.login("observer").await.split();
    let (heard, mut observer_rx) = mpsc::unbounded_channel();
    let observing = actix_rt::spawn(async move {
        while let Some(line) = observer_lines.try_recv().await {
            if heard.send(line).is_err() {
                break;
            }
        }
    });

    // The one that never reads, and senders that make sure it falls behind: 27 MB, more than
    // the kernel's socket buffers and the outbox cap together, each sender within its burst.
    let mut sloth = server.login("sloth").await;
    sloth.send("join|lobby").await;
    let blasters: Vec<_> = (0..10)
        .map(|i| {
            actix_rt::spawn(async move {
                let mut blaster = Client::connect(addr).await;
                blaster.send(&format!("login|blaster{i}")).await;
                let (mut lines, mut writer) = blaster.split();
                let drain = actix_rt::spawn(async move { lines.expect_closed().await });
                let big = format!("talk|sloth|{}\n", "z".repeat(3000)).repeat(900);
                writer.send_raw(big.as_bytes()).await;
                writer.send("exit").await;
                drain.await.expect("blaster's reader")
            })
        })
        .collect();

    // The flooder: reads everything, sends far over the rate until thrown out.
    let flooder = actix_rt::spawn(async move {
        let mut flooder = Client::connect(addr).await;
        flooder.send("login|flooder").await;
        let (mut lines, mut writer) = flooder.split();
        let flooding = actix_rt::spawn(async move {
            for _ in 0..20_000 {
                if writer.try_send_raw(b"who\nping\n").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let lines = lines.expect_closed().await;
        flooding.abort();
        lines.last().cloned()
    });

    let volatile: Vec<_> = (0..VOLATILE)
        .map(|i| actix_rt::spawn(volatile_client(addr, i)))
        .collect();

    let barrier = Arc::new(Barrier::new(STABLE));
    let stable: Vec<_> = (0..STABLE)
        .map(|i| actix_rt::spawn(stable_client(addr, i, barrier.clone())))
        .collect();

    // Gather what every stable client sent and received.
    let mut sent: HashMap<(String, String), u64> = HashMap::new();
    let mut received: HashMap<String, Received> = HashMap::new();
    let mut survivors = Vec::new();
    for task in stable {
        let outcome = task.await.expect("stable client task");
        for (to, count) in outcome.sent {
            sent.insert((outcome.name.clone(), to), count);
        }
        received.insert(outcome.name.clone(), outcome.received);
        survivors.push(outcome.client);
    }
    for task in volatile {
        task.await.expect("volatile client task");
    }
    let farewell = flooder.await.expect("flooder task");
    assert_eq!(farewell.as_deref(), Some("bye|flood"));
    for blaster in blasters {
        let lines = blaster.await.expect("blaster task");
        assert_eq!(lines.last().map(String::as_str), Some("bye"));
    }

    // Every direct message between stable clients arrived exactly once, in order.
    let mut checked = 0;
    for ((from, to), count) in &sent {
        let got = received
            .get(to)
            .and_then(|by_sender| by_sender.get(from))
            .cloned()
            .unwrap_or_default();
        let expected: Vec<u64> = (0..*count).collect();
        assert_eq!(got, expected, "messages from {from} to {to}");
        checked += count;
    }
    assert!(checked > 1000, "only {checked} messages were checked");

    // `who` lists exactly the users still connected: the stable ones (the sloth was cut off).
    // Replay the observer's notices until they say so, then ask `who` once.
    let mut expected: BTreeSet<String> = (0..STABLE).map(stable_name).collect();
    expected.insert("observer".to_owned());
    let mut online: BTreeSet<String> = ["observer".to_owned()].into();
    while online != expected {
        let line = next_heard(&mut observer_rx).await;
        if let Some(name) = line.strip_prefix("login|") {
            online.insert(name.to_owned());
        } else if let Some(name) = line.strip_prefix("logout|") {
            online.remove(name);
        }
    }
    observer.send("who").await;
    let users = loop {
        if let Some(list) = next_heard(&mut observer_rx).await.strip_prefix("users|") {
            break sorted_csv(list);
        }
    };
    assert_eq!(users, expected.into_iter().collect::<Vec<_>>().join(","));
    // The reader that never read was cut off (it finds some messages, then the end).
    sloth.expect_closed().await;
    observer.send("ping").await;
    while next_heard(&mut observer_rx).await != "pong" {}
    observing.abort();
    drop(survivors);
    server.shutdown().await;
}

/// The observer's next line, within the read timeout.
async fn next_heard(heard: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(common::READ_TIMEOUT, heard.recv())
        .await
        .expect("the observer hears something in time")
        .expect("the observer's connection stays open")
}

fn stable_name(i: usize) -> String {
    format!("s{i:03}")
}

fn sorted_csv(list: &str) -> String {
    let mut names: Vec<&str> = list.split(',').collect();
    names.sort_unstable_by_key(|name| name.to_ascii_lowercase());
    names.join(",")
}

struct StableOutcome {
    name: String,
    sent: HashMap<String, u64>,
    received: Received,
    /// Kept open until the end: these users must still be listed by `who`.
    client: (Lines, Writer),
}

/// Stays connected, sends numbered direct messages to other stable clients mixed with random
/// other commands, and records every direct message it receives from a stable client.
async fn stable_client(
    addr: std::net::SocketAddr,
    i: usize,
    barrier: Arc<Barrier>,
) -> StableOutcome {
    let name = stable_name(i);
    let client = Client::login(addr, &name).await;
    let (lines, mut writer) = client.split();
    let (pongs, mut pong_rx) = mpsc::unbounded_channel();
    let reader = actix_rt::spawn(record_direct_messages(lines, pongs));
    // Everyone logs in before anyone is messaged, so no message meets "no such user".
    barrier.wait().await;

    let mut rng = SmallRng::seed_from_u64(i as u64);
    let mut sent: HashMap<String, u64> = HashMap::new();
    for _ in 0..COMMANDS_PER_STABLE {
        let roll = rng.random_range(0..100);
        if roll < 60 {
            let to = stable_name(rng.random_range(0..STABLE));
            let seq = sent.entry(to.clone()).or_default();
            writer
                .send(&format!("talk|{to}|dm {seq} from {name}"))
                .await;
            *seq += 1;
        } else {
            writer.send_raw(&random_noise(&mut rng)).await;
        }
        if rng.random_range(0..10) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
    }
    // Phase 1: our own lines are all processed once our `pong` comes back…
    writer.send("ping").await;
    pong_rx.recv().await.expect("pong after our messages");
    barrier.wait().await;
    // …phase 2: everyone's are, so every message to us is queued before this `pong`.
    writer.send("ping").await;
    pong_rx
        .recv()
        .await
        .expect("pong after everyone's messages");
    let (received, lines) = reader.await.expect("reader task");
    StableOutcome {
        name,
        sent,
        received,
        client: (lines, writer),
    }
}

/// Reads until the second `pong` (the client sends exactly two pings).
async fn record_direct_messages(
    mut lines: Lines,
    pongs: mpsc::UnboundedSender<()>,
) -> (Received, Lines) {
    let mut received = Received::new();
    let mut pongs_seen = 0;
    while pongs_seen < 2 {
        let line = lines.recv().await;
        if line == "pong" {
            pongs_seen += 1;
            let _ = pongs.send(());
            continue;
        }
        let Some(rest) = line.strip_prefix("talk|") else {
            continue;
        };
        let Some((from, text)) = rest.split_once('|') else {
            panic!("malformed talk line {line}");
        };
        let mut words = text.split(' ');
        if from.starts_with('s') && words.next() == Some("dm") {
            let seq = words
                .next()
                .and_then(|seq| seq.parse().ok())
                .expect("a sequence number");
            received.entry(from.to_owned()).or_default().push(seq);
        }
    }
    (received, lines)
}

/// Connects, logs in under a name of its own, does random things, then vanishes — sometimes
/// politely, sometimes by dropping the connection mid-line — and comes back.
async fn volatile_client(addr: std::net::SocketAddr, i: usize) {
    let mut rng = SmallRng::seed_from_u64(1000 + i as u64);
    for round in 0..ROUNDS_PER_VOLATILE {
        let mut client = Client::connect(addr).await;
        client.send(&format!("login|v{i}")).await;
        let (mut lines, mut writer) = client.split();
        let drain = actix_rt::spawn(async move { lines.expect_closed().await });
        for _ in 0..rng.random_range(5..40) {
            let line = if rng.random_bool(0.3) {
                // Messages to stable users with a text the checkers ignore.
                format!(
                    "talk|{}|noise {round}\n",
                    stable_name(rng.random_range(0..STABLE))
                )
                .into_bytes()
            } else {
                random_noise(&mut rng)
            };
            if writer.try_send_raw(&line).await.is_err() {
                break;
            }
        }
        match rng.random_range(0..3) {
            0 => {
                let _ = writer.try_send_raw(b"exit\n").await;
                drain.await.expect("drain task");
            }
            1 => {
                let _ = writer.try_send_raw(b"say|lobby|half a li").await;
                drop(writer);
                drain.abort();
            }
            _ => {
                drop(writer);
                drain.abort();
            }
        }
    }
}

/// A random line that is not a direct message: rooms, lists, invalid input of every kind.
fn random_noise(rng: &mut SmallRng) -> Vec<u8> {
    let room = ["lobby", "rust", "Go", "ops"][rng.random_range(0..4)];
    match rng.random_range(0..12) {
        0 => format!("join|{room}\n").into_bytes(),
        1 => format!("leave|{room}\n").into_bytes(),
        2 => format!("say|{room}|hello {}\n", rng.random::<u32>()).into_bytes(),
        3 => b"who\n".to_vec(),
        4 => b"rooms\n".to_vec(),
        5 => b"dance|wildly\n".to_vec(),
        6 => b"talk|nobody-here|hello?\n".to_vec(),
        7 => b"login|someone-else\n".to_vec(),
        8 => b"talk|bad name|x\nsay|rust\n".to_vec(),
        9 => b"\xff\xfe\xfd|\x80\n".to_vec(),
        10 => {
            let mut long = vec![b'q'; rng.random_range(4000..9000)];
            long.push(b'\n');
            long
        }
        _ => b"\r\n\n pong\n".to_vec(),
    }
}
