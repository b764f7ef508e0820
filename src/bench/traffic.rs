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
//!
//! A server with flood control on answers lines over its budget with `error|rate-limited|VERB`
//! and drops them. The readers count those (`Shared::rate_limited`), and the first one stops
//! every writer: the measurement is void, and a message that was refused will never arrive, so
//! waiting for it would only hold the run until its deadline. The run then waits for the
//! messages still in flight, each of which either arrives or is refused too.

use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc,
};
use std::time::Duration;

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
    task::JoinHandle,
    time::{interval_at, sleep_until, timeout_at, Instant, Interval, MissedTickBehavior},
};
use tokio_util::codec::Decoder;

use super::{
    name_prefix,
    net::{self, Conn, Identity},
    progress::Progress,
    report::{Figures, Measured, Offered, TrafficReport},
    stats::{parse_text, write_text, Clock, Latency, Percentiles},
    user_name, BenchError, Loop, Options, Pacing, TrafficOptions,
};
use crate::codec::{ErrorKind, Event, Frame, LineCodec, Request, Verb};

/// Most lines one open-loop wake-up writes, so a sender that fell behind catches up in bounded
/// bursts rather than one huge write.
const MAX_BATCH: u64 = 1024;

/// Free read-buffer space below which a reader grows its buffer before the next read.
const READ_SPARE: usize = 4 * 1024;

/// How the members are grouped, which also says what they send: pairs `talk` to each other,
/// rooms `say` to themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// `pairs` pairs exchanging direct messages.
    Pairs { pairs: usize },
    /// `rooms` rooms of `members` each.
    Rooms { rooms: usize, members: usize },
}

impl Grouping {
    /// `clients / 2` pairs.
    pub(crate) fn pairs(clients: usize) -> Grouping {
        Grouping::Pairs { pairs: clients / 2 }
    }

    /// How many pairs or rooms.
    pub(crate) fn groups(&self) -> usize {
        match *self {
            Grouping::Pairs { pairs } => pairs,
            Grouping::Rooms { rooms, .. } => rooms,
        }
    }

    /// Members of each group.
    pub(crate) fn size(&self) -> usize {
        match *self {
            Grouping::Pairs { .. } => 2,
            Grouping::Rooms { members, .. } => members,
        }
    }

    /// Members in all, one connection each.
    fn members(&self) -> usize {
        self.groups() * self.size()
    }

    /// Who member `i` of run `run` logs in as, and the room it joins.
    fn identity(&self, run: &str, i: usize) -> Identity {
        Identity {
            name: user_name(run, i),
            room: match self {
                Grouping::Pairs { .. } => None,
                Grouping::Rooms { .. } => Some(room_name(run, i / self.size())),
            },
        }
    }

    /// Where member `i`'s messages go: its partner (`i ^ 1`: 0 with 1, 2 with 3, …) or its
    /// room.
    fn recipient(&self, run: &str, i: usize) -> Recipient {
        match self {
            Grouping::Pairs { .. } => Recipient::Partner(user_name(run, i ^ 1)),
            Grouping::Rooms { .. } => Recipient::Room(room_name(run, i / self.size())),
        }
    }

    /// The progress bar's label while messages flow.
    fn activity(&self) -> &'static str {
        match self {
            Grouping::Pairs { .. } => "talking",
            Grouping::Rooms { .. } => "saying",
        }
    }

    /// The report's `shape` row, for a run of `connections` connections.
    pub(crate) fn describe(&self, connections: usize) -> String {
        match *self {
            Grouping::Pairs { pairs } => format!("{connections} clients in {pairs} pairs"),
            Grouping::Rooms { rooms, members } => format!("{rooms} rooms of {members} members"),
        }
    }
}

fn room_name(run: &str, group: usize) -> String {
    format!("{}r{group}", name_prefix(run))
}

/// Where one member's messages go; the variant picks the request that carries them.
enum Recipient {
    /// `talk|PARTNER|TEXT`.
    Partner(String),
    /// `say|ROOM|TEXT`.
    Room(String),
}

impl Recipient {
    fn request<'a>(&'a self, text: &'a str) -> Request<'a> {
        match self {
            Recipient::Partner(to) => Request::Talk { to, text },
            Recipient::Room(room) => Request::Say { room, text },
        }
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
    /// Only closed-loop writers wait for credit, so only they are woken for it.
    pacing: Loop,
    /// Members per group.
    size: usize,
    /// `bench{run}-`: every member's name is this plus its index.
    name_prefix: String,
    members: Vec<Member>,
    sent: AtomicU64,
    delivered: AtomicU64,
    out_of_order: AtomicU64,
    gaps: AtomicU64,
    unexpected: AtomicU64,
    /// `error|rate-limited|…` lines, whatever line the server refused.
    rate_limited: AtomicU64,
    /// Messages among them (`talk` and `say` refused): receptions that will never come.
    refused: AtomicU64,
    /// Set at the first rate-limited line: writers stop sending.
    stopping: AtomicBool,
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
    fn new(grouping: Grouping, pacing: Loop, run: &str, threads: usize) -> Shared {
        let members = grouping.members();
        Shared {
            clock: Clock::new(),
            pacing,
            size: grouping.size(),
            name_prefix: name_prefix(run),
            members: (0..members).map(|_| Member::default()).collect(),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            disconnected: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            all_delivered: Notify::new(),
            writers_left: AtomicUsize::new(members),
            writers_done: Notify::new(),
            last_arrival_us: AtomicU64::new(0),
            // A few shards per thread keep the locks uncontended (see `Latency`).
            latency: Latency::new(threads * 4),
        }
    }

    /// The member index behind a user name this run gave out.
    fn member_index(&self, name: &str) -> Option<usize> {
        name.strip_prefix(self.name_prefix.as_str())?.parse().ok()
    }

    /// Receptions each message is due: everyone else in its group.
    fn receivers(&self) -> u64 {
        (self.size - 1) as u64
    }

    /// Whether every one of `expected` receptions has arrived or will never come (its message
    /// was refused).
    fn settled(&self, expected: u64) -> bool {
        let refused = self
            .refused
            .load(Ordering::Acquire)
            .saturating_mul(self.receivers());
        self.delivered
            .load(Ordering::Acquire)
            .saturating_add(refused)
            >= expected
    }

    /// Whether writers should stop sending: the server has started refusing lines.
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Stops every writer (once): the server rate-limits, so the run is void.
    fn stop_sending(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            for member in &self.members {
                member.wake.notify_one();
            }
        }
    }

    /// A writer has sent all it will; the last one wakes the run.
    fn writer_done(&self) {
        if self.writers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.writers_done.notify_one();
        }
    }

    /// The figures of a run whose sending began at `started_us` and whose waiting ended at
    /// `finished_us` (clock times).
    fn measure(
        &self,
        grouping: Grouping,
        traffic: TrafficOptions,
        started_us: u64,
        finished_us: u64,
    ) -> Measured {
        let sent = self.sent.load(Ordering::Acquire);
        let expected = sent * self.receivers();
        let delivered = self.delivered.load(Ordering::Acquire);
        let elapsed = self.sending_span(started_us, finished_us);
        let latency = Percentiles::of(&self.latency.merged());
        let traffic = TrafficReport {
            offered: Offered { grouping, traffic },
            sent,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            out_of_order: self.out_of_order.load(Ordering::Acquire),
            gaps: self.gaps.load(Ordering::Acquire),
            disconnected: self.disconnected.load(Ordering::Acquire),
            unexpected: self.unexpected.load(Ordering::Acquire),
            rate_limited: self.rate_limited.load(Ordering::Acquire),
            msgs_per_s: delivered as f64 / elapsed.as_secs_f64(),
            latency_p50_ms: latency.p50_ms,
            latency_p99_ms: latency.p99_ms,
            latency_p999_ms: latency.p999_ms,
            latency_max_ms: latency.max_ms,
            latency_mean_ms: latency.mean_ms,
        };
        Measured {
            connections: grouping.members(),
            elapsed,
            figures: Figures::Traffic(traffic),
        }
    }

    /// From the first send to the last arrival, or to the end of the wait if nothing arrived;
    /// never zero, since throughput divides by it.
    fn sending_span(&self, started_us: u64, finished_us: u64) -> Duration {
        let last_us = match self.last_arrival_us.load(Ordering::Acquire) {
            0 => finished_us,
            last => last,
        };
        Duration::from_micros(last_us.saturating_sub(started_us).max(1))
    }
}

/// How one writer paces itself.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// `messages` in all, at most `window` of them not yet received.
    Closed { messages: u64, window: u64 },
    /// On a timetable, whatever the receptions.
    Open(Schedule),
}

impl Pace {
    /// The pace of sender `i` of `senders` in a run paced by `pacing` that starts sending at
    /// `start`.
    fn of_sender(
        pacing: Pacing,
        i: usize,
        senders: usize,
        start: Instant,
        deadline: Instant,
    ) -> Pace {
        match pacing {
            Pacing::Closed { messages, window } => Pace::Closed { messages, window },
            Pacing::Open { rate, duration } => Pace::Open(Schedule::new(
                rate / senders as f64,
                duration,
                i as f64 / senders as f64,
                start,
                deadline,
            )),
        }
    }
}

/// One open-loop sender's timetable.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Messages per second for this one sender.
    rate: f64,
    start: Instant,
    /// When this sender's first tick falls: senders are spread over one period so they do
    /// not all wake at once.
    first_tick: Instant,
    period: Duration,
    /// The end of the sending duration or the run's deadline, whichever comes first.
    stop: Instant,
}

impl Schedule {
    /// A sender's timetable at `rate` for `duration`, its first tick `offset` (a fraction) of
    /// a period after `start`.
    ///
    /// Tokio's timers tick at most once a millisecond; a faster sender sends several messages
    /// per tick. A sender whose share is less than one message over the whole duration sends
    /// only its first (due at once), so its period is capped at the duration: that keeps the
    /// ticks, and the arithmetic on them, within the run.
    fn new(
        rate: f64,
        duration: Duration,
        offset: f64,
        start: Instant,
        deadline: Instant,
    ) -> Schedule {
        let period = Duration::try_from_secs_f64(1.0 / rate)
            .map_or(duration, |period| period.min(duration))
            .max(Duration::from_millis(1));
        Schedule {
            rate,
            start,
            first_tick: start + period.mul_f64(offset),
            period,
            stop: super::not_after(start, duration, deadline),
        }
    }

    /// The ticks that wake the sender; late ones are skipped, since [`Schedule::due`] catches
    /// up by itself.
    fn ticks(&self) -> Interval {
        let mut tick = interval_at(self.first_tick, self.period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        tick
    }

    /// Messages due by `now`: one at the start, then one every 1/rate seconds.
    fn due(&self, now: Instant) -> u64 {
        ((now - self.start).as_secs_f64() * self.rate) as u64 + 1
    }
}

/// Receptions the progress bar counts towards: what the pacing plans to send, times the
/// receivers of each. (Display only, so saturating.)
fn planned_receptions(pacing: Pacing, grouping: Grouping) -> u64 {
    let messages = match pacing {
        Pacing::Closed { messages, .. } => messages.saturating_mul(grouping.members() as u64),
        Pacing::Open { rate, duration } => (rate * duration.as_secs_f64()) as u64,
    };
    messages.saturating_mul((grouping.size() - 1) as u64)
}

/// Connects everyone, sends, waits for the deliveries or the deadline, and reports.
pub(crate) async fn run(
    options: &Options,
    grouping: Grouping,
    traffic: &TrafficOptions,
    deadline: Instant,
) -> Result<Measured, BenchError> {
    let conns = connect_members(options, grouping, deadline).await?;
    let shared = Arc::new(Shared::new(
        grouping,
        traffic.pacing.kind(),
        &options.run_id,
        options.threads,
    ));
    let started_us = shared.clock.now_us();
    let tasks = start_members(&shared, conns, grouping, traffic, &options.run_id, deadline);
    watch(
        &shared,
        options.progress,
        grouping,
        traffic.pacing,
        deadline,
    )
    .await;
    let finished_us = shared.clock.now_us();
    stop(tasks).await;
    Ok(shared.measure(grouping, *traffic, started_us, finished_us))
}

/// Logs every member in (and into its room), behind a progress bar.
async fn connect_members(
    options: &Options,
    grouping: Grouping,
    deadline: Instant,
) -> Result<Vec<Conn>, BenchError> {
    let who = (0..grouping.members())
        .map(|i| grouping.identity(&options.run_id, i))
        .collect();
    net::connect_with_progress(options, who, deadline).await
}

/// Starts a reader and a writer on every connection; the writers start sending at once.
fn start_members(
    shared: &Arc<Shared>,
    conns: Vec<Conn>,
    grouping: Grouping,
    traffic: &TrafficOptions,
    run: &str,
    deadline: Instant,
) -> Vec<JoinHandle<()>> {
    let start = Instant::now();
    let senders = conns.len();
    let padding: Arc<str> = "x".repeat(traffic.size).into();
    let mut tasks = Vec::with_capacity(2 * senders);
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(read_loop(
            shared.clone(),
            i,
            conn.read,
            conn.rbuf,
            conn.codec,
        )));
        let writer = Writer::new(
            shared.clone(),
            i,
            conn.write,
            grouping.recipient(run, i),
            padding.clone(),
            deadline,
        );
        let pace = Pace::of_sender(traffic.pacing, i, senders, start, deadline);
        tasks.push(tokio::spawn(writer.run(pace)));
    }
    tasks
}

/// Shows progress until every writer is done and everything they sent has arrived, or until
/// the deadline.
async fn watch(
    shared: &Arc<Shared>,
    progress: bool,
    grouping: Grouping,
    pacing: Pacing,
    deadline: Instant,
) {
    let watched = shared.clone();
    let _bar = Progress::start(
        progress,
        grouping.activity(),
        planned_receptions(pacing, grouping),
        move || {
            let delivered = watched.delivered.load(Ordering::Relaxed);
            (delivered, format!("{delivered} delivered"))
        },
    );
    wait_for_writers(shared, deadline).await;
    // Only now is the number of receptions due known; from here on, the reader that brings the
    // count to it wakes this task.
    let expected = shared.sent.load(Ordering::Acquire) * shared.receivers();
    shared.target.store(expected, Ordering::Release);
    wait_for_deliveries(shared, expected, deadline).await;
}

/// Until every writer has sent all it will, or the deadline.
async fn wait_for_writers(shared: &Shared, deadline: Instant) {
    while shared.writers_left.load(Ordering::Acquire) > 0 {
        tokio::select! {
            _ = shared.writers_done.notified() => {}
            _ = sleep_until(deadline) => break,
        }
    }
}

/// Until `expected` receptions have been counted or refused, or the deadline.
async fn wait_for_deliveries(shared: &Shared, expected: u64, deadline: Instant) {
    while !shared.settled(expected) {
        tokio::select! {
            _ = shared.all_delivered.notified() => {}
            _ = sleep_until(deadline) => break,
        }
    }
}

/// Ends every reader and writer: what has not arrived by now is lost.
async fn stop(tasks: Vec<JoinHandle<()>>) {
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await; // cancelled: returns at once
    }
}

/// Reads one connection until it closes (or the task is aborted at the end of the run).
async fn read_loop(
    shared: Arc<Shared>,
    me: usize,
    mut read: net::Reader,
    mut rbuf: BytesMut,
    mut codec: LineCodec,
) {
    let mut inbox = Inbox::new(shared, me);
    loop {
        // The buffer may already hold lines that followed the login reply: those go first.
        let tally = inbox.take_lines(&mut codec, &mut rbuf);
        inbox.publish(&tally);
        if !refill(&mut read, &mut rbuf).await {
            inbox.shared.disconnected.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Reads what has arrived into `rbuf`, growing it first if little room is left; false once
/// the connection is closed or broken.
async fn refill(read: &mut net::Reader, rbuf: &mut BytesMut) -> bool {
    if rbuf.capacity() - rbuf.len() < READ_SPARE {
        rbuf.reserve(4 * READ_SPARE);
    }
    matches!(read.read_buf(rbuf).await, Ok(n) if n > 0)
}

/// What a server line is to a reader.
enum Line<'a> {
    /// A message from `from`: to check against what is due from that sender, and count.
    Message { from: &'a str, text: &'a str },
    /// The server's heartbeat: the writer must answer it.
    Ping,
    /// `error|rate-limited|VERB`: the server's flood control refused one of my lines, a
    /// message if VERB is `talk` or `say`.
    RateLimited { message: bool },
    /// Any other error, a line that does not parse, or one too long to frame.
    Unexpected,
    /// Room notices, member lists, `bye` (the close follows): nothing to count.
    Ignored,
}

impl<'a> Line<'a> {
    fn classify(frame: &'a Frame) -> Line<'a> {
        let Frame::Line(line) = frame else {
            return Line::Unexpected;
        };
        match Event::parse(line) {
            Ok(Event::Talk { from, text }) | Ok(Event::Say { from, text, .. }) => {
                Line::Message { from, text }
            }
            Ok(Event::Ping) => Line::Ping,
            Ok(Event::Error(ErrorKind::RateLimited, verb)) => Line::RateLimited {
                message: matches!(Verb::from_wire(verb), Some(Verb::Talk | Verb::Say)),
            },
            Ok(Event::Error(..)) | Err(_) => Line::Unexpected,
            Ok(_) => Line::Ignored,
        }
    }
}

/// What one pass over the buffered lines found. Published to the shared counters once per
/// pass rather than once per line, so a busy reader touches shared cache lines rarely.
#[derive(Default)]
struct Tally {
    /// Clock time of the pass: the arrival time of every line in it.
    now: u64,
    got: u64,
    pings: u32,
    unexpected: u64,
    rate_limited: u64,
    refused: u64,
    out_of_order: u64,
    gaps: u64,
}

/// One connection's receiving side: what it has seen from each sender in its group.
struct Inbox {
    shared: Arc<Shared>,
    me: usize,
    /// Index of the first member of my group; a sender's slot is its index minus this.
    base: usize,
    /// Per sender slot: the next sequence number due.
    next_seq: Vec<u64>,
    /// Per sender slot: receptions not yet credited.
    credits: Vec<u64>,
    /// The slots with credit, so crediting costs what arrived rather than the room's size.
    credited: Vec<usize>,
    /// This pass's latencies (µs), recorded under one lock.
    latencies: Vec<u64>,
}

impl Inbox {
    fn new(shared: Arc<Shared>, me: usize) -> Inbox {
        let size = shared.size;
        Inbox {
            shared,
            me,
            base: me / size * size,
            next_seq: vec![0; size],
            credits: vec![0; size],
            credited: Vec::new(),
            latencies: Vec::with_capacity(64),
        }
    }

    /// Frames, classifies and checks every complete line in `rbuf`, all stamped with one
    /// clock reading.
    fn take_lines(&mut self, codec: &mut LineCodec, rbuf: &mut BytesMut) -> Tally {
        let mut tally = Tally {
            now: self.shared.clock.now_us(),
            ..Tally::default()
        };
        // LineCodec only fails on I/O errors, which cannot come from a buffer.
        while let Ok(Some(frame)) = codec.decode(rbuf) {
            match Line::classify(&frame) {
                Line::Message { from, text } => self.receive(from, text, &mut tally),
                Line::Ping => tally.pings += 1,
                Line::RateLimited { message } => {
                    tally.rate_limited += 1;
                    tally.refused += u64::from(message);
                }
                Line::Unexpected => tally.unexpected += 1,
                Line::Ignored => {}
            }
        }
        tally
    }

    /// Checks one message against what is due from its sender, and notes the sender's credit.
    /// A message from outside my group, from myself, or with a text the tool did not write is
    /// unexpected.
    fn receive(&mut self, from: &str, text: &str, tally: &mut Tally) {
        let (Some(slot), Some((stamp, seq))) = (self.slot_of(from), parse_text(text)) else {
            tally.unexpected += 1;
            return;
        };
        self.check_order(slot, seq, tally);
        self.latencies.push(tally.now.saturating_sub(stamp));
        if self.credits[slot] == 0 {
            self.credited.push(slot);
        }
        self.credits[slot] += 1;
        tally.got += 1;
    }

    /// The slot of sender `from` in my group, if it is a member of my group other than me.
    fn slot_of(&self, from: &str) -> Option<usize> {
        self.shared
            .member_index(from)
            .and_then(|sender| sender.checked_sub(self.base))
            .filter(|&slot| slot < self.shared.size && self.base + slot != self.me)
    }

    /// Behind what is due: it was overtaken, or it is a duplicate. Ahead: the ones in between
    /// are missing here, lost or still to come out of order.
    fn check_order(&mut self, slot: usize, seq: u64, tally: &mut Tally) {
        match seq.cmp(&self.next_seq[slot]) {
            std::cmp::Ordering::Less => tally.out_of_order += 1,
            std::cmp::Ordering::Greater => tally.gaps += 1,
            std::cmp::Ordering::Equal => {}
        }
        self.next_seq[slot] = self.next_seq[slot].max(seq.saturating_add(1));
    }

    /// Makes a pass's findings visible to the rest of the run.
    fn publish(&mut self, tally: &Tally) {
        if tally.got > 0 {
            self.credit_senders();
            self.record_latencies();
            self.count_delivered(tally);
        }
        let shared = &self.shared;
        add(&shared.out_of_order, tally.out_of_order);
        add(&shared.gaps, tally.gaps);
        add(&shared.unexpected, tally.unexpected);
        if tally.rate_limited > 0 {
            self.count_rate_limited(tally);
        }
        if tally.pings > 0 {
            // Readers never write (see the module doc): the writer answers.
            let member = &shared.members[self.me];
            member.pings.fetch_add(tally.pings, Ordering::Release);
            member.wake.notify_one();
        }
    }

    /// Hands each sender its receptions: that credit is what frees a closed-loop window slot.
    fn credit_senders(&mut self) {
        for slot in self.credited.drain(..) {
            let sender = &self.shared.members[self.base + slot];
            sender
                .acked
                .fetch_add(std::mem::take(&mut self.credits[slot]), Ordering::Release);
            // Open-loop writers do not wait for credit: do not wake them for it.
            if self.shared.pacing == Loop::Closed {
                sender.wake.notify_one();
            }
        }
    }

    /// Moves this pass's latencies into the shared histograms, under one lock.
    fn record_latencies(&mut self) {
        let mut histogram = self.shared.latency.shard(self.me);
        for latency in self.latencies.drain(..) {
            histogram.saturating_record(latency.max(1));
        }
    }

    /// Adds this pass's receptions to the total, waking the run if that completes it.
    fn count_delivered(&self, tally: &Tally) {
        let shared = &self.shared;
        shared
            .last_arrival_us
            .fetch_max(tally.now, Ordering::AcqRel);
        shared.delivered.fetch_add(tally.got, Ordering::AcqRel);
        self.wake_if_settled();
    }

    /// Counts lines the server refused, stops the writers, and wakes the run if the refused
    /// messages were all it was still waiting for.
    fn count_rate_limited(&self, tally: &Tally) {
        let shared = &self.shared;
        shared
            .rate_limited
            .fetch_add(tally.rate_limited, Ordering::AcqRel);
        shared.refused.fetch_add(tally.refused, Ordering::AcqRel);
        shared.stop_sending();
        self.wake_if_settled();
    }

    /// Wakes the run once every reception due has arrived or been refused.
    fn wake_if_settled(&self) {
        let shared = &self.shared;
        if shared.settled(shared.target.load(Ordering::Acquire)) {
            shared.all_delivered.notify_one();
        }
    }
}

/// Adds `n` to `counter`, skipping the shared write when there is nothing to add.
fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One connection's sending side.
struct Writer {
    shared: Arc<Shared>,
    me: usize,
    write: net::Writer,
    recipient: Recipient,
    padding: Arc<str>,
    deadline: Instant,
    /// The bytes of one write, reused so sending allocates nothing per message.
    out: BytesMut,
    /// One message text, reused likewise.
    text: String,
}

impl Writer {
    fn new(
        shared: Arc<Shared>,
        me: usize,
        write: net::Writer,
        recipient: Recipient,
        padding: Arc<str>,
        deadline: Instant,
    ) -> Writer {
        Writer {
            shared,
            me,
            write,
            recipient,
            text: String::with_capacity(48 + padding.len()),
            padding,
            deadline,
            out: BytesMut::with_capacity(4096),
        }
    }

    /// Sends as paced, reports being done, then answers `ping`s until the run aborts it.
    async fn run(mut self, pace: Pace) {
        match pace {
            Pace::Closed { messages, window } => self.send_closed(messages, window).await,
            Pace::Open(schedule) => self.send_open(schedule).await,
        }
        self.shared.writer_done();
        self.answer_pings().await;
    }

    /// Closed loop: sends whenever the window has room, until `messages` are sent, a write
    /// fails or the deadline passes.
    async fn send_closed(&mut self, messages: u64, window: u64) {
        let shared = self.shared.clone();
        let member = &shared.members[self.me];
        let mut sent = 0u64;
        while sent < messages && !shared.stopping() {
            // Credit counts receptions; a message is received once all its receivers have it.
            let received = (member.acked.load(Ordering::Acquire) / shared.receivers()).min(sent);
            let n = window.saturating_sub(sent - received).min(messages - sent);
            let pongs = member.pings.swap(0, Ordering::AcqRel);
            if n == 0 && pongs == 0 {
                // A permit stored by a reader since the check above makes this return at once,
                // so no credit is ever missed.
                if timeout_at(self.deadline, member.wake.notified())
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            if !self.send(pongs, sent, n).await {
                break;
            }
            sent += n;
        }
    }

    /// Open loop: on each tick, sends what the schedule says is due by now, until its stop
    /// or a failed write.
    async fn send_open(&mut self, schedule: Schedule) {
        let shared = self.shared.clone();
        let member = &shared.members[self.me];
        let mut tick = schedule.ticks();
        let mut sent = 0u64;
        loop {
            // Woken early only to answer a `ping`.
            tokio::select! {
                _ = tick.tick() => {}
                _ = member.wake.notified() => {}
            }
            let now = Instant::now();
            if now >= schedule.stop || shared.stopping() {
                break;
            }
            let n = schedule.due(now).saturating_sub(sent).min(MAX_BATCH);
            let pongs = member.pings.swap(0, Ordering::AcqRel);
            if n == 0 && pongs == 0 {
                continue;
            }
            if !self.send(pongs, sent, n).await {
                break;
            }
            sent += n;
        }
    }

    /// Stays responsive to the server's heartbeat while others finish, so the server does not
    /// time this connection out.
    async fn answer_pings(&mut self) {
        let shared = self.shared.clone();
        let member = &shared.members[self.me];
        loop {
            member.wake.notified().await;
            let pongs = member.pings.swap(0, Ordering::AcqRel);
            if pongs > 0 && !self.send(pongs, 0, 0).await {
                return;
            }
        }
    }

    /// Writes `pongs` pongs and messages `first..first + n` in one write, all stamped now.
    /// Counts the messages as sent before writing, so a failed write shows up as loss.
    async fn send(&mut self, pongs: u32, first: u64, n: u64) -> bool {
        self.out.clear();
        for _ in 0..pongs {
            Request::Pong.encode(&mut self.out);
        }
        let stamp = self.shared.clock.now_us();
        for seq in first..first + n {
            write_text(&mut self.text, stamp, seq, &self.padding);
            self.recipient.request(&self.text).encode(&mut self.out);
        }
        self.shared.sent.fetch_add(n, Ordering::AcqRel);
        // Flushed for TLS, which may keep what the socket did not take; free for TCP.
        let write = async {
            self.write.write_all(&self.out).await?;
            self.write.flush().await
        };
        matches!(timeout_at(self.deadline, write).await, Ok(Ok(())))
    }
}
