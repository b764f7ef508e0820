//! The server's metrics: what `/metrics` shows, in the Prometheus text format.
//!
//! One [`Metrics`] per [`Server`](crate::server::Server), never a process-wide registry: several
//! servers can run in one process (the tests do), and each must count only its own traffic.
//! Every piece that sees an event holds it: the gate (connections, refusals), the sessions
//! (lines, departures, direct-message delivery), the `ChatServer` (logins, users, rooms, room
//! delivery), every outbox (events and bytes sent) and, at scrape time, the store's counters.
//!
//! **Why the hot path stays cheap.** What happens per message — a line read, an event queued, a
//! read or write on a socket, a delivery timed — is counted in [`Shard`]s, one per thread, each
//! on cache lines of its own. The first [`OWNED_SHARDS`] threads of the process to count each
//! own a shard that no other thread writes, so an increment there is a plain load and store
//! (no locked instruction, no cache line shared with another core); threads numbered past them
//! share one more shard with atomic adds. No lock, no allocation and no label lookup: every
//! label is an index into an array declared from the wire tables ([`Verb`], [`EventVerb`],
//! [`ErrorKind`]). A counter shared by all threads would bounce its cache line between cores
//! on every message, which is what the outbound budget avoids too (docs/PERFORMANCE.md).
//! Scraping sums the shards ([`Traffic`], a [`Collector`]) and hands the totals to the
//! `prometheus` crate, which encodes them.
//!
//! What changes once per connection or login (connections open, departures, logins, users,
//! rooms) uses the crate's own counters and gauges, each label's child resolved once at start.
//! The store's backlog and totals are read from its handle when scraped.

use std::{
    cell::Cell,
    collections::HashMap,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    sync::Arc,
};

use log::warn;
use prometheus::{
    core::{Collector, Desc},
    proto, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::{
    codec::{ByeReason, ErrorKind, Event, EventVerb, Verb},
    store::StoreHandle,
};

/// Every metric's name starts with `actor_chat_`.
const NAMESPACE: &str = "actor_chat";

/// Threads (numbered process-wide as they first count) that have a shard of their own in each
/// server's metrics: the workers, actix-web's workers, the main thread. Later threads share one.
const OWNED_SHARDS: usize = 64;

/// Upper bounds of the delivery-time histogram's buckets, in nanoseconds: 10 µs to 1 s in
/// 1–2.5–5 steps. A direct message to a cached recipient takes a few microseconds; one that waits
/// for the `ChatServer`, or a room line fanned out to hundreds, takes longer.
const DELIVERY_BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

const VERBS: usize = Verb::ALL.len();
const EVENT_VERBS: usize = EventVerb::ALL.len();
const ERROR_KINDS: usize = ErrorKind::ALL.len();
const BYE_REASONS: usize = ByeReason::ALL.len();
/// A line's kind: a verb, or `unknown`, or `too-long` (see [`LineKind`]).
const LINE_KINDS: usize = VERBS + 2;
/// A departure's reason: a `bye` reason, or `exit`, `peer`, `error` (see [`Departure`]).
const DEPARTURES: usize = BYE_REASONS + 3;

/// How a connection reached the server: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// Plain TCP (`server.bind`).
    Tcp,
    /// TLS (`tls.bind`).
    Tls,
    /// A WebSocket (`GET /ws` on `http.bind`, HTTP or HTTPS).
    Ws,
    /// An in-memory pipe ([`Server::connect_in_memory`](crate::server::Server::connect_in_memory)):
    /// tests and embedding.
    Memory,
}

impl TransportKind {
    /// Every transport, so that each has its series from the start (at 0).
    const ALL: &'static [TransportKind] = &[
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Memory,
    ];

    /// The label's value.
    const fn label(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Memory => "memory",
        }
    }
}

/// What a line from a client was: the `verb` label of `lines_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// A line starting with a known verb, valid or not.
    Verb(Verb),
    /// A line whose verb is not one the server knows, or that is not UTF-8.
    Unknown,
    /// A line over `limits.max_line_bytes`.
    TooLong,
}

impl LineKind {
    fn index(self) -> usize {
        match self {
            LineKind::Verb(verb) => verb as usize,
            LineKind::Unknown => VERBS,
            LineKind::TooLong => VERBS + 1,
        }
    }

    fn label(index: usize) -> &'static str {
        match Verb::ALL.get(index) {
            Some(verb) => verb.as_str(),
            None if index == VERBS => "unknown",
            None => "too-long",
        }
    }
}

/// Why a connection ended: the `reason` label of `disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// The server ended it with `bye|REASON`, or refused it at the door (`server-full`,
    /// `too-many-connections`).
    Bye(ByeReason),
    /// The client said `exit`.
    Exit,
    /// The client closed the connection.
    Peer,
    /// Reading or writing failed, a handshake failed, or the session ended without closing.
    Error,
}

impl Departure {
    fn index(self) -> usize {
        match self {
            Departure::Bye(reason) => reason as usize,
            Departure::Exit => BYE_REASONS,
            Departure::Peer => BYE_REASONS + 1,
            Departure::Error => BYE_REASONS + 2,
        }
    }

    fn label(index: usize) -> &'static str {
        match ByeReason::ALL.get(index) {
            Some(reason) => reason.as_str(),
            None => ["exit", "peer", "error"][(index - BYE_REASONS).min(2)],
        }
    }
}

/// What was delivered: the `verb` label of the delivery-time histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// A direct message (`talk`), queued for its recipient.
    Talk,
    /// A room line (`say`), queued for every other member.
    Say,
}

impl Delivered {
    const ALL: [Delivered; 2] = [Delivered::Talk, Delivered::Say];

    fn verb(self) -> Verb {
        match self {
            Delivered::Talk => Verb::Talk,
            Delivered::Say => Verb::Say,
        }
    }
}

/// One server's metrics (see the module docs).
pub(crate) struct Metrics {
    registry: Registry,
    traffic: Arc<Traffic>,
    connections_open: Vec<IntGauge>,
    connections: Vec<IntCounter>,
    disconnects: Vec<IntCounter>,
    logins: IntCounter,
    login_failures: IntCounter,
    users: IntGauge,
    rooms: IntGauge,
}

impl Metrics {
    /// Metrics for one server, reading the store's counters at scrape time if it has one.
    pub(crate) fn new(store: Option<&StoreHandle>) -> Metrics {
        // The names and labels below are constants: registering them cannot fail unless this
        // file is wrong, which the unit tests would show.
        const VALID: &str = "the metric definitions are valid";
        let registry = Registry::new_custom(Some(NAMESPACE.to_owned()), None).expect(VALID);
        let register = |collector: Box<dyn Collector>| registry.register(collector).expect(VALID);

        let traffic = Arc::new(Traffic::new());
        register(Box::new(Scrape(traffic.clone())));
        if let Some(store) = store {
            register(Box::new(StoreMetrics::new(store.clone())));
        }

        let by_transport = |vec: &IntCounterVec| -> Vec<IntCounter> {
            let children = TransportKind::ALL.iter();
            children
                .map(|kind| vec.with_label_values(&[kind.label()]))
                .collect()
        };
        let open = IntGaugeVec::new(
            Opts::new(
                "connections_open",
                "Connections being served now, by transport.",
            ),
            &["transport"],
        )
        .expect(VALID);
        let connections_open = TransportKind::ALL
            .iter()
            .map(|kind| open.with_label_values(&[kind.label()]))
            .collect();
        register(Box::new(open));
        let accepted = IntCounterVec::new(
            Opts::new(
                "connections_total",
                "Connections admitted (given a slot), by transport.",
            ),
            &["transport"],
        )
        .expect(VALID);
        let connections = by_transport(&accepted);
        register(Box::new(accepted));
        let departed = IntCounterVec::new(
            Opts::new(
                "disconnects_total",
                "Connections ended, by reason: the bye REASON the server gave (refusals at the \
                 door included), or exit, peer (the client closed) or error.",
            ),
            &["reason"],
        )
        .expect(VALID);
        let disconnects = (0..DEPARTURES)
            .map(|index| departed.with_label_values(&[Departure::label(index)]))
            .collect();
        register(Box::new(departed));

        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect(VALID);
            register(Box::new(counter.clone()));
            counter
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect(VALID);
            register(Box::new(gauge.clone()));
            gauge
        };
        let logins = counter("logins_total", "Successful logins.");
        let login_failures = counter(
            "login_failures_total",
            "Logins refused: a name taken, not valid or reserved for an account, a wrong \
             password, a password over plain text from another machine, a throttled account.",
        );
        let users = gauge("users", "Users logged in now.");
        let rooms = gauge(
            "rooms",
            "Rooms that exist now (a room exists while it has members).",
        );
        Metrics {
            registry,
            traffic,
            connections_open,
            connections,
            disconnects,
            logins,
            login_failures,
            users,
            rooms,
        }
    }

    /// Everything, in the Prometheus text format (version 0.0.4), encoded by the `prometheus`
    /// crate.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            warn!("cannot encode the metrics: {error}");
        }
        text
    }

    /// A connection over `transport` has been admitted; it counts as open until the returned
    /// guard is dropped.
    pub(crate) fn connection_opened(&self, transport: TransportKind) -> OpenConnection {
        let index = transport as usize;
        self.connections[index].inc();
        let open = self.connections_open[index].clone();
        open.inc();
        OpenConnection(open)
    }

    /// A connection has ended, or was refused at the door.
    pub(crate) fn departed(&self, departure: Departure) {
        self.disconnects[departure.index()].inc();
    }

    /// A login succeeded; `users` are now logged in.
    pub(crate) fn logged_in(&self, users: usize) {
        self.logins.inc();
        self.set_users(users);
    }

    /// A login was refused.
    pub(crate) fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// `users` are logged in now.
    pub(crate) fn set_users(&self, users: usize) {
        self.users.set(i64::try_from(users).unwrap_or(i64::MAX));
    }

    /// `rooms` exist now.
    pub(crate) fn set_rooms(&self, rooms: usize) {
        self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
    }

    /// A line arrived from a client.
    #[inline]
    pub(crate) fn line_received(&self, kind: LineKind) {
        let (shard, alone) = self.traffic.shard();
        bump(&shard.received[kind.index()], 1, alone);
    }

    /// `event` was queued for one client; an error also counts as a refusal of its kind.
    #[inline]
    pub(crate) fn event_sent(&self, event: &Event<'_>) {
        let (shard, alone) = self.traffic.shard();
        bump(&shard.sent[event.verb() as usize], 1, alone);
        if let Event::Error(kind, _) = event {
            bump(&shard.refused[*kind as usize], 1, alone);
        }
    }

    /// `count` events of `verb` were queued (one line fanned out, a list of lines).
    #[inline]
    pub(crate) fn events_sent(&self, verb: EventVerb, count: usize) {
        let (shard, alone) = self.traffic.shard();
        bump(&shard.sent[verb as usize], count as u64, alone);
    }

    /// `bytes` were read from a client's socket.
    #[inline]
    pub(crate) fn bytes_received(&self, bytes: usize) {
        let (shard, alone) = self.traffic.shard();
        bump(&shard.bytes_in, bytes as u64, alone);
    }

    /// `bytes` were written to a client's socket.
    #[inline]
    pub(crate) fn bytes_sent(&self, bytes: usize) {
        let (shard, alone) = self.traffic.shard();
        bump(&shard.bytes_out, bytes as u64, alone);
    }

    /// A `talk` or `say` read at `read_at` has had its last line queued, just now.
    #[inline]
    pub(crate) fn delivered(&self, what: Delivered, read_at: Instant) {
        let nanos = u64::try_from(read_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (shard, alone) = self.traffic.shard();
        let histogram = &shard.delivery[what as usize];
        // Most deliveries fall in the first few buckets, so a scan from the bottom is short.
        let bucket = DELIVERY_BOUNDS_NS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(DELIVERY_BOUNDS_NS.len());
        bump(&histogram.buckets[bucket], 1, alone);
        bump(&histogram.sum_ns, nanos, alone);
    }
}

/// Adds `by` to `counter`: with a plain load and store when the calling thread is its only
/// writer (`alone`), which a scrape may read at any time but nobody else changes; otherwise
/// with an atomic add.
#[inline]
fn bump(counter: &AtomicU64, by: u64, alone: bool) {
    if alone {
        let value = counter.load(Ordering::Relaxed).wrapping_add(by);
        counter.store(value, Ordering::Relaxed);
    } else {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// An open connection, counted in `connections_open` until dropped.
pub(crate) struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The per-message counters, one [`Shard`] per thread (see the module docs).
struct Traffic {
    /// One per thread numbered below [`OWNED_SHARDS`], written by that thread only.
    owned: Box<[Shard]>,
    /// The threads numbered past them, with atomic adds.
    shared: Shard,
    descs: Vec<Desc>,
}

/// The counters one thread bumps, on cache lines of their own.
#[repr(align(128))]
struct Shard {
    received: [AtomicU64; LINE_KINDS],
    sent: [AtomicU64; EVENT_VERBS],
    refused: [AtomicU64; ERROR_KINDS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    delivery: [Histogram; Delivered::ALL.len()],
}

/// Deliveries per bucket (not cumulative; the last past every bound) and their total time.
struct Histogram {
    buckets: [AtomicU64; DELIVERY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            received: [const { AtomicU64::new(0) }; LINE_KINDS],
            sent: [const { AtomicU64::new(0) }; EVENT_VERBS],
            refused: [const { AtomicU64::new(0) }; ERROR_KINDS],
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            delivery: [(); Delivered::ALL.len()].map(|()| Histogram {
                buckets: [const { AtomicU64::new(0) }; DELIVERY_BOUNDS_NS.len() + 1],
                sum_ns: AtomicU64::new(0),
            }),
        }
    }
}

/// Numbers threads in the order they first count something, process-wide.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number, once it has counted something.
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Family names, without the namespace, and their help.
const LINES_RECEIVED: (&str, &str) = (
    "lines_received_total",
    "Lines received from clients, by verb (unknown: not a known verb; too-long: over \
     limits.max_line_bytes).",
);
const EVENTS_SENT: (&str, &str) = (
    "events_sent_total",
    "Lines queued for clients, by verb (a room line counts once per member it is queued for).",
);
const REFUSALS: (&str, &str) = (
    "refusals_total",
    "Requests answered with error|KIND, by KIND.",
);
const BYTES_RECEIVED: (&str, &str) = (
    "received_bytes_total",
    "Bytes read from clients' connections.",
);
const BYTES_SENT: (&str, &str) = ("sent_bytes_total", "Bytes written to clients' connections.");
const DELIVERY: (&str, &str) = (
    "delivery_seconds",
    "Time from a talk or say being read to its last line being queued, by verb.",
);

impl Traffic {
    fn new() -> Traffic {
        let desc = |(name, help): (&str, &str), label: Option<&str>| {
            let labels = label.map(str::to_owned).into_iter().collect();
            Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())
                .expect("the metric definitions are valid")
        };
        Traffic {
            owned: (0..OWNED_SHARDS).map(|_| Shard::new()).collect(),
            shared: Shard::new(),
            descs: vec![
                desc(LINES_RECEIVED, Some("verb")),
                desc(EVENTS_SENT, Some("verb")),
                desc(REFUSALS, Some("kind")),
                desc(BYTES_RECEIVED, None),
                desc(BYTES_SENT, None),
                desc(DELIVERY, Some("verb")),
            ],
        }
    }

    /// The calling thread's shard, and whether the thread is its only writer.
    #[inline]
    fn shard(&self) -> (&Shard, bool) {
        let thread = THREAD.with(|thread| match thread.get() {
            usize::MAX => {
                let number = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
                thread.set(number);
                number
            }
            number => number,
        });
        match self.owned.get(thread) {
            Some(shard) => (shard, true),
            None => (&self.shared, false),
        }
    }

    /// The total of one counter over every shard.
    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.owned
            .iter()
            .chain([&self.shared])
            .map(|shard| counter(shard).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// The collector that sums the [`Traffic`] shards when scraped.
struct Scrape(Arc<Traffic>);

impl Collector for Scrape {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let traffic = &*self.0;
        let by = |label: &str, values: &mut dyn Iterator<Item = (&'static str, u64)>| {
            values
                .map(|(value, count)| {
                    let mut metric = proto::Metric::from_label(vec![label_pair(label, value)]);
                    metric.set_counter(counter_value(count));
                    metric
                })
                .collect::<Vec<_>>()
        };
        let received = by(
            "verb",
            &mut (0..LINE_KINDS)
                .map(|i| (LineKind::label(i), traffic.sum(|shard| &shard.received[i]))),
        );
        let sent = by(
            "verb",
            &mut EventVerb::ALL.iter().map(|&verb| {
                (
                    verb.as_str(),
                    traffic.sum(|shard| &shard.sent[verb as usize]),
                )
            }),
        );
        let refused = by(
            "kind",
            &mut ErrorKind::ALL.iter().map(|&kind| {
                (
                    kind.as_str(),
                    traffic.sum(|shard| &shard.refused[kind as usize]),
                )
            }),
        );
        let single = |count| {
            let mut metric = proto::Metric::default();
            metric.set_counter(counter_value(count));
            vec![metric]
        };
        let delivery = Delivered::ALL
            .iter()
            .map(|&what| {
                let index = what as usize;
                let mut buckets = Vec::with_capacity(DELIVERY_BOUNDS_NS.len());
                let mut cumulative = 0u64;
                for (i, bound) in DELIVERY_BOUNDS_NS.iter().enumerate() {
                    cumulative += traffic.sum(|shard| &shard.delivery[index].buckets[i]);
                    let mut bucket = proto::Bucket::default();
                    bucket.set_upper_bound(*bound as f64 / 1e9);
                    bucket.set_cumulative_count(cumulative);
                    buckets.push(bucket);
                }
                let past =
                    traffic.sum(|shard| &shard.delivery[index].buckets[DELIVERY_BOUNDS_NS.len()]);
                let mut value = proto::Histogram::default();
                value.set_bucket(buckets);
                value.set_sample_count(cumulative + past);
                value.set_sample_sum(
                    traffic.sum(|shard| &shard.delivery[index].sum_ns) as f64 / 1e9,
                );
                let mut metric =
                    proto::Metric::from_label(vec![label_pair("verb", what.verb().as_str())]);
                metric.set_histogram(value);
                metric
            })
            .collect();
        vec![
            family(LINES_RECEIVED, proto::MetricType::COUNTER, received),
            family(EVENTS_SENT, proto::MetricType::COUNTER, sent),
            family(REFUSALS, proto::MetricType::COUNTER, refused),
            family(
                BYTES_RECEIVED,
                proto::MetricType::COUNTER,
                single(traffic.sum(|shard| &shard.bytes_in)),
            ),
            family(
                BYTES_SENT,
                proto::MetricType::COUNTER,
                single(traffic.sum(|shard| &shard.bytes_out)),
            ),
            family(DELIVERY, proto::MetricType::HISTOGRAM, delivery),
        ]
    }
}

/// The store's backlog and totals, read from its handle when scraped.
struct StoreMetrics {
    store: StoreHandle,
    descs: Vec<Desc>,
}

const STORE_BACKLOG: (&str, &str) = (
    "store_backlog",
    "Delivered messages waiting to be written to the store.",
);
const STORE_WRITTEN: (&str, &str) = ("store_written_total", "Messages written to the store.");
const STORE_DROPPED: (&str, &str) = (
    "store_dropped_total",
    "Delivered messages not kept: past store.max_backlog, or in a batch that failed to write.",
);

impl StoreMetrics {
    fn new(store: StoreHandle) -> StoreMetrics {
        let desc = |(name, help): (&str, &str)| {
            Desc::new(name.to_owned(), help.to_owned(), Vec::new(), HashMap::new())
                .expect("the metric definitions are valid")
        };
        StoreMetrics {
            store,
            descs: [STORE_BACKLOG, STORE_WRITTEN, STORE_DROPPED]
                .into_iter()
                .map(desc)
                .collect(),
        }
    }
}

impl Collector for StoreMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let stats = self.store.stats();
        let mut backlog = proto::Gauge::default();
        backlog.set_value(self.store.backlog() as f64);
        let counter = |count| {
            let mut metric = proto::Metric::default();
            metric.set_counter(counter_value(count));
            vec![metric]
        };
        vec![
            family(
                STORE_BACKLOG,
                proto::MetricType::GAUGE,
                vec![proto::Metric::from_gauge(backlog)],
            ),
            family(
                STORE_WRITTEN,
                proto::MetricType::COUNTER,
                counter(stats.written),
            ),
            family(
                STORE_DROPPED,
                proto::MetricType::COUNTER,
                counter(stats.dropped),
            ),
        ]
    }
}

fn family(
    (name, help): (&str, &str),
    kind: proto::MetricType,
    metrics: Vec<proto::Metric>,
) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn label_pair(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn counter_value(count: u64) -> proto::Counter {
    let mut counter = proto::Counter::default();
    counter.set_value(count as f64);
    counter
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters are indexed by `as usize`: that must be each value's place in `ALL`.
    #[test]
    fn wire_tables_index_their_counters_in_declaration_order() {
        for (i, verb) in Verb::ALL.iter().enumerate() {
            assert_eq!(*verb as usize, i);
            assert_eq!(
                LineKind::label(LineKind::Verb(*verb).index()),
                verb.as_str()
            );
        }
        for (i, verb) in EventVerb::ALL.iter().enumerate() {
            assert_eq!(*verb as usize, i);
        }
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, reason) in ByeReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert_eq!(
                Departure::label(Departure::Bye(*reason).index()),
                reason.as_str()
            );
        }
        for (i, kind) in TransportKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        for (i, what) in Delivered::ALL.iter().enumerate() {
            assert_eq!(*what as usize, i);
        }
        assert_eq!(LineKind::label(LineKind::Unknown.index()), "unknown");
        assert_eq!(LineKind::label(LineKind::TooLong.index()), "too-long");
        assert_eq!(Departure::label(Departure::Exit.index()), "exit");
        assert_eq!(Departure::label(Departure::Peer.index()), "peer");
        assert_eq!(Departure::label(Departure::Error.index()), "error");
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_series_exists_from_the_start_and_counts_from_every_thread() {
        let metrics = Arc::new(Metrics::new(None));
        let text = metrics.render();
        for series in [
            r#"actor_chat_lines_received_total{verb="history"}"#,
            r#"actor_chat_lines_received_total{verb="too-long"}"#,
            r#"actor_chat_events_sent_total{verb="end"}"#,
            r#"actor_chat_refusals_total{kind="store-unavailable"}"#,
            r#"actor_chat_disconnects_total{reason="too-many-connections"}"#,
            r#"actor_chat_connections_open{transport="tls"}"#,
            r#"actor_chat_delivery_seconds_count{verb="say"}"#,
            "actor_chat_users",
            "actor_chat_sent_bytes_total",
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
        }
        assert!(
            !text.contains("store_backlog"),
            "no store, no store metrics"
        );

        // More threads than own a shard: every count still lands, in theirs or the shared one.
        let threads: Vec<_> = (0..OWNED_SHARDS + 8)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        metrics.line_received(LineKind::Verb(Verb::Talk));
                        metrics.event_sent(&Event::Error(ErrorKind::NoSuchUser, "bob"));
                        metrics.bytes_sent(3);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let text = metrics.render();
        let total = ((OWNED_SHARDS + 8) * 100) as f64;
        let talk = r#"actor_chat_lines_received_total{verb="talk"}"#;
        assert_eq!(value(&text, talk), Some(total));
        let errors = r#"actor_chat_events_sent_total{verb="error"}"#;
        assert_eq!(value(&text, errors), Some(total));
        let kind = r#"actor_chat_refusals_total{kind="no-such-user"}"#;
        assert_eq!(value(&text, kind), Some(total));
        assert_eq!(
            value(&text, "actor_chat_sent_bytes_total"),
            Some(3.0 * total)
        );
    }

    #[test]
    fn open_connections_go_back_down_when_their_guard_drops() {
        let metrics = Metrics::new(None);
        let open = r#"actor_chat_connections_open{transport="tcp"}"#;
        let total = r#"actor_chat_connections_total{transport="tcp"}"#;
        let first = metrics.connection_opened(TransportKind::Tcp);
        let second = metrics.connection_opened(TransportKind::Tcp);
        assert_eq!(value(&metrics.render(), open), Some(2.0));
        drop(first);
        drop(second);
        let text = metrics.render();
        assert_eq!(value(&text, open), Some(0.0));
        assert_eq!(value(&text, total), Some(2.0));
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_land_in_the_bucket_of_their_time() {
        let metrics = Metrics::new(None);
        let read_at = Instant::now();
        metrics.delivered(Delivered::Talk, read_at);
        tokio::time::advance(std::time::Duration::from_millis(2)).await;
        metrics.delivered(Delivered::Talk, read_at);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        metrics.delivered(Delivered::Say, read_at);
        let text = metrics.render();
        let bucket = |verb: &str, le: &str| {
            value(
                &text,
                &format!(r#"actor_chat_delivery_seconds_bucket{{verb="{verb}",le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("talk", "0.00001"), Some(1.0));
        assert_eq!(bucket("talk", "0.001"), Some(1.0));
        assert_eq!(bucket("talk", "0.0025"), Some(2.0));
        assert_eq!(bucket("say", "1"), Some(0.0));
        assert_eq!(bucket("say", "+Inf"), Some(1.0));
        let sum = r#"actor_chat_delivery_seconds_sum{verb="talk"}"#;
        assert_eq!(value(&text, sum), Some(0.002));
    }
}
