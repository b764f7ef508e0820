//! The messaging workloads, pairs and room, as one engine.
//!
//! Members are numbered `0..groups × size`; member `i` belongs to group `i / size`. In pairs a
//! group is two clients who `talk` to each other; in room it is a room whose members `say` to
//! it. Either way each message is due at the `size − 1` other members of the group, so the
//! counting is the same: `expected = sent × (size − 1)`.
//!
//! Each connection has a reader task and a writer task. The reader frames and parses what
//! arrives, records latencies, reorderings and sequence gaps, and credits the *sender* of each message
//! (`Member::acked`), waking it: that credit is what frees a closed-loop window slot. Readers
//! never write, so a stalled write can never stop a connection from draining what the server
//! sends it (which the server would punish with `bye|too-slow`); a `ping` is handed to the
//! writer instead (`Member::pings`).

use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc,
};
use std::time::Duration;

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::Notify,
    task::JoinHandle,
    time::{interval_at, sleep_until, timeout_at, Instant, MissedTickBehavior},
};
use tokio_util::codec::Decoder;

use super::{
    name_prefix,
    net::{self, Identity},
    progress::Progress,
    report::{Report, TrafficReport},
    stats::{parse_text, write_text, Clock, Latency, Percentiles},
    user_name, BenchError, Options, TrafficOptions,
};
use crate::codec::{Event, Frame, LineCodec, Request};

/// Most lines one open-loop wake-up writes, so a sender that fell behind catches up in bounded
/// bursts rather than one huge write.
const MAX_BATCH: u64 = 1024;

/// Free read-buffer space below which a reader grows its buffer before the next read.
const READ_SPARE: usize = 4 * 1024;

/// How the members are grouped and what they send.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    groups: usize,
    size: usize,
    rooms: bool,
}

impl Shape {
    /// `clients / 2` pairs exchanging direct messages.
    pub fn pairs(clients: usize) -> Shape {
        Shape {
            groups: clients / 2,
            size: 2,
            rooms: false,
        }
    }

    /// `rooms` rooms of `members`.
    pub fn rooms(rooms: usize, members: usize) -> Shape {
        Shape {
            groups: rooms,
            size: members,
            rooms: true,
        }
    }

    fn members(&self) -> usize {
        self.groups * self.size
    }
}

/// Per-member state shared between its writer and the readers that receive its messages.
#[derive(Default)]
struct Member {
    /// Receptions of this member's messages, over all its receivers.
    acked: AtomicU64,
    /// `ping`s from the server that the writer still has to answer.
    pings: AtomicU32,
    /// Wakes the writer: a window slot may be free, or a `pong` is due.
    wake: Notify,
}

/// State of a whole run, shared by every task.
struct Shared {
    clock: Clock,
    closed_loop: bool,
    size: usize,
    /// `bench{run}-`: every member's name is this plus its index.
    name_prefix: String,
    members: Vec<Member>,
    sent: AtomicU64,
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    gaps: AtomicU64,
    unexpected: AtomicU64,
    disconnected: AtomicU64,
    /// Receptions due in all, once every writer is done; `u64::MAX` until then.
    target: AtomicU64,
    all_delivered: Notify,
    writers_left: AtomicUsize,
    writers_done: Notify,
    /// Clock time of the latest reception, for the throughput's time span.
    last_arrival_us: AtomicU64,
    latency: Latency,
}

impl Shared {
    /// The member index behind a user name this run gave out.
    fn member_index(&self, name: &str) -> Option<usize> {
        name.strip_prefix(self.name_prefix.as_str())?.parse().ok()
    }
}

/// How a writer paces itself.
#[derive(Debug, Clone, Copy)]
enum Pace {
    Closed {
        messages: u64,
        window: u64,
    },
    Open {
        /// Messages per second for this one sender.
        rate: f64,
        start: Instant,
        /// When this sender's first tick falls: senders are spread over one period so they do
        /// not all wake at once.
        first_tick: Instant,
        period: Duration,
        /// The end of the sending duration or the run's deadline, whichever comes first.
        stop: Instant,
    },
}

fn room_name(run: &str, group: usize) -> String {
    format!("{}r{group}", name_prefix(run))
}

/// Connects everyone, sends, waits for the deliveries or the deadline, and reports.
pub async fn run(
    options: &Options,
    shape: Shape,
    traffic: &TrafficOptions,
    deadline: Instant,
) -> Result<Report, BenchError> {
    let members = shape.members();
    let run = options.run_id.as_str();
    let who = (0..members)
        .map(|i| Identity {
            name: user_name(run, i),
            room: shape.rooms.then(|| room_name(run, i / shape.size)),
        })
        .collect();
    let conns = net::connect_with_progress(options, who, deadline).await?;

    let shared = Arc::new(Shared {
        clock: Clock::new(),
        closed_loop: traffic.rate.is_none(),
        size: shape.size,
        name_prefix: name_prefix(run),
        members: (0..members).map(|_| Member::default()).collect(),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        disconnected: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        all_delivered: Notify::new(),
        writers_left: AtomicUsize::new(members),
        writers_done: Notify::new(),
        last_arrival_us: AtomicU64::new(0),
        latency: Latency::new(options.threads * 4),
    });
    let per_message = (shape.size - 1) as u64;
    let started_us = shared.clock.now_us();
    let start = Instant::now();
    // Open loop: each sender's share of the rate, and the tick that paces it. Tokio's timers
    // tick at most once a millisecond; a faster sender sends several messages per tick. A
    // sender whose share is less than one message over the whole duration sends only its first
    // (due at once), so its period is capped at the duration: that keeps the ticks below, and
    // the arithmetic on them, within the run.
    let open = traffic.rate.map(|rate| {
        let rate = rate / members as f64;
        let period = Duration::try_from_secs_f64(1.0 / rate)
            .map_or(traffic.duration, |period| period.min(traffic.duration))
            .max(Duration::from_millis(1));
        (rate, period)
    });
    let planned = match traffic.rate {
        None => traffic.messages * members as u64,
        Some(rate) => (rate * traffic.duration.as_secs_f64()) as u64,
    };
    let pace_of = |i: usize| match open {
        None => Pace::Closed {
            messages: traffic.messages,
            window: traffic.window,
        },
        Some((rate, period)) => Pace::Open {
            rate,
            start,
            first_tick: start + period.mul_f64(i as f64 / members as f64),
            period,
            stop: super::not_after(start, traffic.duration, deadline),
        },
    };
    let padding: Arc<str> = "x".repeat(traffic.size).into();
    let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(2 * members);
    for (i, conn) in conns.into_iter().enumerate() {
        let to = if shape.rooms {
            room_name(run, i / shape.size)
        } else {
            user_name(run, i ^ 1)
        };
        tasks.push(tokio::spawn(read_loop(
            shared.clone(),
            i,
            conn.read,
            conn.rbuf,
            conn.codec,
        )));
        let writer = Writer {
            shared: shared.clone(),
            me: i,
            write: conn.write,
            to,
            rooms: shape.rooms,
            padding: padding.clone(),
            deadline,
        };
        tasks.push(tokio::spawn(writer.run(pace_of(i))));
    }

    {
        let watched = shared.clone();
        let _bar = Progress::start(
            options.progress,
            if shape.rooms { "saying" } else { "talking" },
            planned * per_message,
            move || {
                let delivered = watched.delivered.load(Ordering::Relaxed);
                (delivered, format!("{delivered} delivered"))
            },
        );
        while shared.writers_left.load(Ordering::Acquire) > 0 {
            tokio::select! {
                _ = shared.writers_done.notified() => {}
                _ = sleep_until(deadline) => break,
            }
        }
        let expected = shared.sent.load(Ordering::Acquire) * per_message;
        shared.target.store(expected, Ordering::Release);
        while shared.delivered.load(Ordering::Acquire) < expected {
            tokio::select! {
                _ = shared.all_delivered.notified() => {}
                _ = sleep_until(deadline) => break,
            }
        }
    }
    let finished_us = shared.clock.now_us();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await; // cancelled: returns at once
    }

    let sent = shared.sent.load(Ordering::Acquire);
    let expected = sent * per_message;
    let delivered = shared.delivered.load(Ordering::Acquire);
    let last_us = match shared.last_arrival_us.load(Ordering::Acquire) {
        0 => finished_us,
        last => last,
    };
    let elapsed = Duration::from_micros(last_us.saturating_sub(started_us).max(1));
    let latency = Percentiles::of(&shared.latency.merged());
    let closed = traffic.rate.is_none();
    Ok(Report {
        mode: if shape.rooms { "room" } else { "pairs" },
        connections: members,
        elapsed_s: elapsed.as_secs_f64(),
        traffic: Some(TrafficReport {
            pacing: if closed { "closed" } else { "open" },
            groups: shape.groups,
            group_size: shape.size,
            messages_per_sender: closed.then_some(traffic.messages),
            window: closed.then_some(traffic.window),
            rate: traffic.rate,
            duration_s: (!closed).then_some(traffic.duration.as_secs_f64()),
            size: traffic.size,
            sent,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            out_of_order: shared.out_of_order.load(Ordering::Acquire),
            gaps: shared.gaps.load(Ordering::Acquire),
            disconnected: shared.disconnected.load(Ordering::Acquire),
            unexpected: shared.unexpected.load(Ordering::Acquire),
            msgs_per_s: delivered as f64 / elapsed.as_secs_f64(),
            latency_p50_ms: latency.p50_ms,
            latency_p99_ms: latency.p99_ms,
            latency_p999_ms: latency.p999_ms,
            latency_max_ms: latency.max_ms,
            latency_mean_ms: latency.mean_ms,
        }),
        ..Report::default()
    })
}

/// Reads one connection until it closes (or the task is aborted at the end of the run).
async fn read_loop(
    shared: Arc<Shared>,
    me: usize,
    mut read: OwnedReadHalf,
    mut rbuf: BytesMut,
    mut codec: LineCodec,
) {
    let size = shared.size;
    let base = me / size * size;
    // Per sender in my group: the next sequence number due, and receptions not yet credited.
    let mut next_seq = vec![0u64; size];
    let mut credits = vec![0u64; size];
    // The slots with credit, so crediting costs what arrived rather than the room's size.
    let mut credited: Vec<usize> = Vec::new();
    let mut latencies: Vec<u64> = Vec::with_capacity(64);
    loop {
        let now = shared.clock.now_us();
        let (mut got, mut pings, mut unexpected) = (0u64, 0u32, 0u64);
        let (mut out_of_order, mut gaps) = (0u64, 0u64);
        // LineCodec only fails on I/O errors, which cannot come from a buffer.
        while let Ok(Some(frame)) = codec.decode(&mut rbuf) {
            let Frame::Line(line) = frame else {
                unexpected += 1;
                continue;
            };
            let (from, body) = match Event::parse(&line) {
                Ok(Event::Talk { from, text }) => (from, text),
                Ok(Event::Say { from, text, .. }) => (from, text),
                Ok(Event::Ping) => {
                    pings += 1;
                    continue;
                }
                Ok(Event::Error(..)) | Err(_) => {
                    unexpected += 1;
                    continue;
                }
                // Room notices, member lists, `bye` (the close follows): nothing to count.
                Ok(_) => continue,
            };
            let sender = shared
                .member_index(from)
                .and_then(|sender| sender.checked_sub(base))
                .filter(|&slot| slot < size && base + slot != me);
            let (Some(slot), Some((stamp, seq))) = (sender, parse_text(body)) else {
                unexpected += 1;
                continue;
            };
            // Behind what is due: it was overtaken, or it is a duplicate. Ahead: the ones in
            // between are missing here, lost or still to come out of order.
            match seq.cmp(&next_seq[slot]) {
                std::cmp::Ordering::Less => out_of_order += 1,
                std::cmp::Ordering::Greater => gaps += 1,
                std::cmp::Ordering::Equal => {}
            }
            next_seq[slot] = next_seq[slot].max(seq + 1);
            latencies.push(now.saturating_sub(stamp));
            if credits[slot] == 0 {
                credited.push(slot);
            }
            credits[slot] += 1;
            got += 1;
        }
        if got > 0 {
            for slot in credited.drain(..) {
                let sender = &shared.members[base + slot];
                sender
                    .acked
                    .fetch_add(std::mem::take(&mut credits[slot]), Ordering::Release);
                // Open-loop writers do not wait for credit: do not wake them for it.
                if shared.closed_loop {
                    sender.wake.notify_one();
                }
            }
            {
                let mut histogram = shared.latency.shard(me);
                for latency in latencies.drain(..) {
                    histogram.saturating_record(latency.max(1));
                }
            }
            shared.last_arrival_us.fetch_max(now, Ordering::AcqRel);
            let total = shared.delivered.fetch_add(got, Ordering::AcqRel) + got;
            if total >= shared.target.load(Ordering::Acquire) {
                shared.all_delivered.notify_one();
            }
        }
        if out_of_order > 0 {
            shared
                .out_of_order
                .fetch_add(out_of_order, Ordering::Relaxed);
        }
        if gaps > 0 {
            shared.gaps.fetch_add(gaps, Ordering::Relaxed);
        }
        if unexpected > 0 {
            shared.unexpected.fetch_add(unexpected, Ordering::Relaxed);
        }
        if pings > 0 {
            let member = &shared.members[me];
            member.pings.fetch_add(pings, Ordering::Release);
            member.wake.notify_one();
        }
        if rbuf.capacity() - rbuf.len() < READ_SPARE {
            rbuf.reserve(4 * READ_SPARE);
        }
        match read.read_buf(&mut rbuf).await {
            Ok(n) if n > 0 => {}
            _ => {
                shared.disconnected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// One connection's sending side.
struct Writer {
    shared: Arc<Shared>,
    me: usize,
    write: OwnedWriteHalf,
    /// The partner (pairs) or the room (room).
    to: String,
    rooms: bool,
    padding: Arc<str>,
    deadline: Instant,
}

impl Writer {
    /// Sends as paced, reports being done, then answers `ping`s until the run aborts it.
    async fn run(mut self, pace: Pace) {
        let mut out = BytesMut::with_capacity(4096);
        let mut text = String::with_capacity(48 + self.padding.len());
        let mut sent = 0u64;
        let shared = self.shared.clone();
        let member = &shared.members[self.me];
        match pace {
            Pace::Closed { messages, window } => {
                let per_message = (shared.size - 1) as u64;
                while sent < messages {
                    let received = (member.acked.load(Ordering::Acquire) / per_message).min(sent);
                    let n = window.saturating_sub(sent - received).min(messages - sent);
                    let pongs = member.pings.swap(0, Ordering::AcqRel);
                    if n == 0 && pongs == 0 {
                        // A permit stored by a reader since the check above makes this return
                        // at once, so no credit is ever missed.
                        if timeout_at(self.deadline, member.wake.notified())
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    if !self.send(&mut out, &mut text, pongs, sent, n).await {
                        break;
                    }
                    sent += n;
                }
            }
            Pace::Open {
                rate,
                start,
                first_tick,
                period,
                stop,
            } => {
                let mut tick = interval_at(first_tick, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = member.wake.notified() => {}
                    }
                    let now = Instant::now();
                    if now >= stop {
                        break;
                    }
                    // Due so far: one at the start, then one every 1/rate seconds.
                    let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
                    let n = due.saturating_sub(sent).min(MAX_BATCH);
                    let pongs = member.pings.swap(0, Ordering::AcqRel);
                    if n == 0 && pongs == 0 {
                        continue;
                    }
                    if !self.send(&mut out, &mut text, pongs, sent, n).await {
                        break;
                    }
                    sent += n;
                }
            }
        }
        if shared.writers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.writers_done.notify_one();
        }
        // Stay responsive to the server's heartbeat while others finish.
        loop {
            member.wake.notified().await;
            let pongs = member.pings.swap(0, Ordering::AcqRel);
            if pongs > 0 && !self.send(&mut out, &mut text, pongs, sent, 0).await {
                return;
            }
        }
    }

    /// Writes `pongs` pongs and messages `first..first + n` in one write, all stamped now.
    /// Counts the messages as sent before writing, so a failed write shows up as loss.
    async fn send(
        &mut self,
        out: &mut BytesMut,
        text: &mut String,
        pongs: u32,
        first: u64,
        n: u64,
    ) -> bool {
        out.clear();
        for _ in 0..pongs {
            Request::Pong.encode(out);
        }
        let stamp = self.shared.clock.now_us();
        for seq in first..first + n {
            write_text(text, stamp, seq, &self.padding);
            let request = if self.rooms {
                Request::Say {
                    room: &self.to,
                    text,
                }
            } else {
                Request::Talk { to: &self.to, text }
            };
            request.encode(out);
        }
        self.shared.sent.fetch_add(n, Ordering::AcqRel);
        matches!(
            timeout_at(self.deadline, self.write.write_all(out)).await,
            Ok(Ok(()))
        )
    }
}
