//! The write side of one connection: a byte queue with a cap that counts what the client owes,
//! and the future that drains it into the socket.
//!
//! Why not `actix::io::FramedWrite`? Its high-water mark never triggers on tokio sockets, so its
//! buffer grows without bound for a peer that stops reading; it has no length getter; and its
//! `Drop` does not flush, so a `bye` written just before closing can be lost. Why not the
//! session's mailbox? `do_send` ignores mailbox capacity, and each message costs an allocation.
//!
//! An [`Outbox`] is a cheap, cloneable handle that anyone holding it (the session itself, the
//! `ChatServer`, other sessions that cached it) uses to append encoded lines. It never blocks
//! and never waits on the peer. The one [`OutboxWriter`] takes the whole queue on each wake-up
//! and writes it with as few syscalls as the socket allows (vectored writes), so a busy
//! connection gets its lines in batches.
//!
//! What is queued is a list of chunks: small lines (replies, direct messages) are encoded into
//! one growing buffer, and a line fanned out to a room is one reference-counted [`Bytes`] that
//! every member's queue shares, so a room line costs its length once plus a handle per member,
//! not its length per member. Each queue still counts every byte its own client owes.
//!
//! **Too slow means not taking bytes.** By the per-client rule, a client is cut off with
//! `bye|too-slow` only when it owes more than the cap *and* its socket has accepted nothing for
//! the grace period (NATS's slow-consumer rule): a client that reads as fast as the network
//! allows is not cut because the server fell behind — its writer's thread busy for a moment —
//! unless that lasts the whole grace period. And since a queue may pass its cap during the
//! grace period, all queues together answer to one [`Budget`] of what they owe (each client's
//! first [`UNCOUNTED_BYTES`] aside, so the common case touches no shared counter; a shared room
//! line counts once per member that owes it, which overstates memory rather than understates
//! it): past it, debtors are cut — first those over their cap, then the rest, largest first in
//! each — so memory stays bounded whatever the clients do.
//!
//! **What has the socket taken?** The queue counts the bytes the socket has accepted since the
//! connection opened. A caller that must know when its lines are out — the replay of missed
//! messages, which moves a read position only as far as the client was actually sent — queues
//! them with [`Outbox::send_line_marked`], which returns the offset just past them, and awaits
//! [`Outbox::written_past`] (one waiter, woken by the writer when the count passes the mark, or
//! when the connection ends short of it). Nobody else pays for it: a counter and a waiter slot per queue.
//!
//! The queue sits behind a `Mutex` held only to append or take chunks — it *is* the channel,
//! not state shared between actors — which keeps the owed byte count exact and lets an idle
//! connection hold no buffer at all.

use std::{
    collections::VecDeque,
    future::{poll_fn, Future},
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError, Weak,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use slab::Slab;
use tokio::{
    io::AsyncWrite,
    time::{sleep_until, Instant, Sleep},
};

use crate::{
    codec::{ByeReason, Event, EventVerb},
    metrics::Metrics,
};

/// Writes per poll before the writer yields to the other tasks on its thread.
const BATCHES_PER_POLL: usize = 16;
/// Bytes written per poll before the writer yields: a connection with megabytes to write (a
/// room flood) must not keep its thread from the others' small lines for long.
const BYTES_PER_POLL: usize = 64 * 1024;
/// Chunks handed to one vectored write.
const MAX_SLICES: usize = 64;
/// A shared line shorter than this is copied into the queue's buffer instead: a handle costs
/// about as much, and fewer chunks mean fewer slices per write.
const SHARE_FROM_BYTES: usize = 64;
/// What each client may owe before the [`Budget`] hears of it. Most queues never hold this
/// much (a few replies, a burst of direct messages), so the hot path touches no counter shared
/// between threads; the budget's error is at most this much per connection.
const UNCOUNTED_BYTES: usize = 4096;

/// What every outbox of one server answers to: the most bytes all clients together may owe.
pub(crate) struct Budget {
    limit: usize,
    owed: AtomicUsize,
    /// Every live queue, so that the largest debtors can be found when the budget is passed.
    queues: Mutex<Slab<Weak<Shared>>>,
    /// Someone is already cutting debtors.
    relieving: AtomicBool,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            owed: AtomicUsize::new(0),
            queues: Mutex::new(Slab::new()),
            relieving: AtomicBool::new(false),
        })
    }

    /// Bytes owed by all clients together.
    pub(crate) fn owed(&self) -> usize {
        self.owed.load(Ordering::Relaxed)
    }

    fn queues(&self) -> MutexGuard<'_, Slab<Weak<Shared>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, bytes: usize) {
        self.owed.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.owed.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Past the limit: cuts debtors until all owe at most seven eighths of it (some room, so
    /// that one more line does not start it all over again). Clients over their cap — whose
    /// grace clock runs — go first, largest first; then the others, largest first. A client's debt is looked at again when its turn comes (it
    /// may have been paid meanwhile), and one whose debt the budget does not count is never
    /// cut: that would free nothing.
    fn relieve(&self) {
        if self.owed() <= self.limit || self.relieving.swap(true, Ordering::Acquire) {
            return;
        }
        let queues: Vec<Arc<Shared>> = self
            .queues()
            .iter()
            .filter_map(|(_, q)| q.upgrade())
            .collect();
        // Over the cap first, then the rest; largest first in each. Among clients that get
        // the same lines (a room), one that reads always owes less than one that does not.
        // (Ordering by how long each has gone without taking a byte was tried: a reader
        // that paused just before the others passed their cap would then go first.)
        let mut debtors: Vec<(bool, usize, Arc<Shared>)> = queues
            .into_iter()
            .map(|queue| {
                let (over, owed) = {
                    let queue = queue.lock();
                    (queue.over_cap_since.is_some(), queue.owed)
                };
                (over, owed, queue)
            })
            .collect();
        debtors.sort_unstable_by_key(|(over, owed, _)| std::cmp::Reverse((*over, *owed)));
        let target = self.limit / 8 * 7;
        for (_, _, queue) in debtors {
            if self.owed() <= target {
                break;
            }
            if queue.lock().owed > UNCOUNTED_BYTES {
                abort(&queue, ByeReason::TooSlow);
            }
        }
        self.relieving.store(false, Ordering::Release);
    }
}

/// How an outbox judges its client (see the module docs).
#[derive(Clone)]
pub(crate) struct Limits {
    /// Bytes a client may owe before it is judged by whether it is taking them.
    pub(crate) cap: usize,
    /// How long a client over the cap may go without its socket accepting a write.
    pub(crate) grace: Duration,
    pub(crate) budget: Arc<Budget>,
    /// The server's metrics: every outbox counts the events it queues and the bytes it writes.
    pub(crate) metrics: Arc<Metrics>,
}

/// Creates the two ends for one connection. The limits are shared by every connection of a
/// server (one pointer each, not a copy: idle connections are counted in bytes).
pub(crate) fn outbox(limits: Arc<Limits>) -> (Outbox, OutboxWriter) {
    let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
        let key = limits.budget.queues().insert(weak.clone());
        Shared {
            limits,
            key,
            queue: Mutex::new(Queue {
                chunks: VecDeque::new(),
                tail: BytesMut::new(),
                owed: 0,
                counted: 0,
                over_cap_since: None,
                state: State::Open,
                writer: None,
                end: None,
                watcher: None,
                written: 0,
                flushed: None,
            }),
        }
    });
    let writer = OutboxWriter {
        shared: shared.clone(),
        batch: VecDeque::new(),
        own: BytesMut::new(),
        at_line_start: true,
        stall: None,
        end: None,
    };
    (Outbox { shared }, writer)
}

/// The connection is closing or closed: nothing more will be written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub(crate) struct Closed;

/// A handle for queueing lines to one connection.
#[derive(Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Arc<Limits>,
    /// This queue's place in the budget's list.
    key: usize,
    queue: Mutex<Queue>,
}

struct Queue {
    /// Chunks not yet taken by the writer, oldest first; `tail` follows them.
    chunks: VecDeque<Bytes>,
    /// Small lines, encoded in place, not yet taken by the writer.
    tail: BytesMut,
    /// Bytes queued or taken by the writer, and not yet written: what the client owes.
    owed: usize,
    /// How much of `owed` the budget knows of (all but [`UNCOUNTED_BYTES`]).
    counted: usize,
    /// While the client owes more than the cap: since when its socket has taken nothing (the
    /// later of the last write and the moment the cap was passed). The clock is read only
    /// then, never on the hot path.
    over_cap_since: Option<Instant>,
    state: State,
    /// The writer's waker, when it waits for bytes or for the socket.
    writer: Option<Waker>,
    /// How the writer ended, once it has, for [`Outbox::poll_writer_end`].
    end: Option<WriterEnd>,
    /// Whoever waits for the writer's end.
    watcher: Option<Waker>,
    /// Bytes the socket has accepted since the connection opened. While the queue is open,
    /// `written + owed` is the offset just past the last byte queued, so a caller that notes
    /// it after queueing a line ([`Outbox::send_line_marked`]) knows the line is on the socket
    /// once `written` reaches it ([`Outbox::written_past`]).
    written: u64,
    /// Whoever waits for `written` to reach an offset, and that offset.
    flushed: Option<(u64, Waker)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Closing gracefully: everything queued (farewell included) is written, then the write
    /// side is shut down.
    Closing,
    /// Closing at once: the queue is dropped and only a best-effort `bye|REASON` is attempted.
    Aborted(ByeReason),
    /// The writer has ended; nothing more can be written.
    Finished,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// Whether a client over the cap has gone `grace` without taking a byte.
    fn stalled(&self, limits: &Limits, now: Instant) -> bool {
        self.over_cap_since
            .is_some_and(|since| now.saturating_duration_since(since) >= limits.grace)
    }

    /// Tells the budget of the change in what this client owes, beyond its uncounted part.
    fn settle(&mut self, budget: &Budget) {
        let counted = self.owed.saturating_sub(UNCOUNTED_BYTES);
        if counted > self.counted {
            budget.add(counted - self.counted);
        } else if counted < self.counted {
            budget.sub(self.counted - counted);
        }
        self.counted = counted;
    }

    /// After the client took bytes: under the cap the clock stops; over it, it starts again.
    fn progressed(&mut self, cap: usize) {
        self.over_cap_since = (self.owed > cap).then(Instant::now);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; if something ever did, the queue is still
        // consistent (chunks and counters), so carry on rather than poison every sender.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.limits.budget.queues().try_remove(self.key);
    }
}

/// Wakes the writer, if it was waiting, after the lock is released (a woken writer on another
/// thread would otherwise contend for it at once).
fn release_and_wake(mut queue: MutexGuard<'_, Queue>) {
    let waker = queue.writer.take();
    drop(queue);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Drops what is queued and ends the connection with `bye|REASON` (best effort), unless it
/// has already ended. What the client owed leaves the budget at once.
fn abort(shared: &Shared, reason: ByeReason) {
    let mut queue = shared.lock();
    if matches!(queue.state, State::Aborted(_) | State::Finished) {
        return;
    }
    queue.chunks = VecDeque::new();
    queue.tail = BytesMut::new();
    queue.state = State::Aborted(reason);
    queue.owed = 0;
    queue.over_cap_since = None;
    queue.settle(&shared.limits.budget);
    // Nothing more will be written: whoever waits for bytes to go out must look again.
    if let Some((_, waker)) = queue.flushed.take() {
        waker.wake();
    }
    release_and_wake(queue);
}

impl Outbox {
    /// Queues one event. Fails if the connection is closing, or if the client is judged too
    /// slow (see the module docs) — in which case the connection is aborted with `bye|too-slow`.
    pub(crate) fn send(&self, event: &Event<'_>) -> Result<(), Closed> {
        let metrics = &self.shared.limits.metrics;
        self.push(|queue| {
            let before = queue.tail.len();
            event.encode(&mut queue.tail);
            // Counted while the line cannot be written yet, so that a client that has read it
            // finds it counted.
            metrics.event_sent(event);
            queue.tail.len() - before
        })
        .map(drop)
    }

    /// Queues one event of `verb` already encoded (for fan-out: encode once, send to many). The
    /// bytes are shared, not copied, unless they are few.
    pub(crate) fn send_shared(&self, lines: &Bytes, verb: EventVerb) -> Result<(), Closed> {
        let metrics = &self.shared.limits.metrics;
        self.push(|queue| {
            metrics.events_sent(verb, 1);
            if lines.len() < SHARE_FROM_BYTES {
                queue.tail.put_slice(lines);
            } else {
                if !queue.tail.is_empty() {
                    let small = queue.tail.split().freeze();
                    queue.chunks.push_back(small);
                }
                queue.chunks.push_back(lines.clone());
            }
            lines.len()
        })
        .map(drop)
    }

    /// Queues a copy of `lines` (one or more complete lines).
    pub(crate) fn send_line(&self, lines: &[u8]) -> Result<(), Closed> {
        self.push(|queue| {
            queue.tail.put_slice(lines);
            lines.len()
        })
        .map(drop)
    }

    /// Queues a copy of `lines` and returns their mark: the offset, in bytes since the
    /// connection opened, just past them. Once [`Outbox::written_past`] reports the socket has
    /// taken that many bytes, these lines — and everything queued before them — are written.
    pub(crate) fn send_line_marked(&self, lines: &[u8]) -> Result<u64, Closed> {
        self.push(|queue| {
            queue.tail.put_slice(lines);
            lines.len()
        })
    }

    /// Bytes the socket has accepted since the connection opened.
    pub(crate) fn written(&self) -> u64 {
        self.shared.lock().written
    }

    /// Resolves, with [`Outbox::written`], once the socket has taken `mark` bytes — or once
    /// nothing more will be written (aborted or finished), whatever was written by then.
    /// One waiter at a time (the replay of missed messages).
    pub(crate) fn written_past(&self, mark: u64) -> impl Future<Output = u64> {
        let shared = self.shared.clone();
        poll_fn(move |cx| {
            let mut queue = shared.lock();
            if queue.written >= mark || matches!(queue.state, State::Aborted(_) | State::Finished) {
                queue.flushed = None;
                return Poll::Ready(queue.written);
            }
            queue.flushed = Some((mark, cx.waker().clone()));
            Poll::Pending
        })
    }

    /// Appends with `append` (which returns the bytes it added) and settles the accounts.
    /// Returns the offset just past what was appended (see [`Queue::written`]).
    fn push(&self, append: impl FnOnce(&mut Queue) -> usize) -> Result<u64, Closed> {
        let shared = &*self.shared;
        let limits = &shared.limits;
        let mut queue = shared.lock();
        if queue.state != State::Open {
            return Err(Closed);
        }
        let was_empty = queue.is_empty();
        let added = append(&mut queue);
        queue.owed += added;
        let mark = queue.written + queue.owed as u64;
        if queue.owed > UNCOUNTED_BYTES {
            queue.settle(&limits.budget);
        }
        let mut crossed = false;
        if queue.owed > limits.cap {
            let now = Instant::now();
            match queue.over_cap_since {
                None => {
                    queue.over_cap_since = Some(now);
                    crossed = true;
                }
                Some(_) if queue.stalled(limits, now) => {
                    drop(queue);
                    abort(shared, ByeReason::TooSlow);
                    return Err(Closed);
                }
                Some(_) => {}
            }
        }
        // Wake an idle writer; and one that waits on a full socket when the cap is first
        // passed, so that it starts the grace period's timer.
        if was_empty || crossed {
            release_and_wake(queue);
        } else {
            drop(queue);
        }
        if limits.budget.owed() > limits.budget.limit {
            limits.budget.relieve();
        }
        Ok(mark)
    }

    /// Closes gracefully: what is queued is written, then `farewell` if given, then the write
    /// side is shut down. Later sends fail. Does nothing if already closing.
    pub(crate) fn close(&self, farewell: Option<Event<'_>>) {
        let mut queue = self.shared.lock();
        if queue.state != State::Open {
            return;
        }
        if let Some(farewell) = farewell {
            let before = queue.tail.len();
            farewell.encode(&mut queue.tail);
            self.shared.limits.metrics.event_sent(&farewell);
            queue.owed += queue.tail.len() - before;
            queue.settle(&self.shared.limits.budget);
        }
        queue.state = State::Closing;
        release_and_wake(queue);
    }

    /// Closes at once: what is queued is dropped and `bye|REASON` is attempted without waiting.
    /// Also cuts short a graceful close that is taking too long.
    pub(crate) fn abort(&self, reason: ByeReason) {
        abort(&self.shared, reason);
    }

    /// How the writer ended, once it has (ready once). The connection's owner learns it this
    /// way rather than through a channel of its own, which would cost every connection another
    /// allocation.
    pub(crate) fn poll_writer_end(&self, cx: &mut Context<'_>) -> Poll<WriterEnd> {
        let mut queue = self.shared.lock();
        match queue.end.take() {
            Some(end) => Poll::Ready(end),
            None => {
                register(&mut queue.watcher, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Whether sends to this connection now fail.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().state != State::Open
    }

    /// Bytes queued and not yet written to the socket.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.shared.lock().owed
    }
}

/// How a connection's writer ended.
#[derive(Debug, Clone)]
pub(crate) enum WriterEnd {
    /// Closed gracefully: everything queued was written and the write side shut down.
    Closed,
    /// Aborted, e.g. too slow; the queue was dropped.
    Aborted(ByeReason),
    /// The socket failed (the peer reset the connection, …).
    Failed(Arc<io::Error>),
}

/// Drains one connection's [`Outbox`] into its socket.
pub(crate) struct OutboxWriter {
    shared: Arc<Shared>,
    /// The chunks taken from the queue and being written; the first may be partly written.
    batch: VecDeque<Bytes>,
    /// The queue's buffer of small lines, taken after `batch` and written after it. It is
    /// swapped with the queue's (empty) one, so a busy connection reuses two buffers and
    /// allocates nothing per batch.
    own: BytesMut,
    /// Whether the last byte written ended a line, so a farewell never lands mid-line.
    at_line_start: bool,
    /// While the client owes more than the cap and its socket is full: the end of its grace.
    stall: Option<Pin<Box<Sleep>>>,
    /// How it ended, handed to the outbox when the writer is dropped.
    end: Option<WriterEnd>,
}

impl OutboxWriter {
    /// Writes until the outbox is closed or aborted, or the socket fails; the outcome is also
    /// left for [`Outbox::poll_writer_end`].
    pub(crate) async fn run<W: AsyncWrite + Unpin>(mut self, mut sink: W) -> WriterEnd {
        let end = poll_fn(|cx| self.poll_drive(cx, &mut sink)).await;
        self.end = Some(end.clone());
        end
        // Dropping `self` marks the outbox finished and hands over the end.
    }

    fn poll_drive<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut W,
    ) -> Poll<WriterEnd> {
        let mut budget = BYTES_PER_POLL;
        for _ in 0..BATCHES_PER_POLL {
            if budget == 0 {
                break;
            }
            {
                let mut queue = self.shared.lock();
                if let State::Aborted(reason) = queue.state {
                    drop(queue);
                    return Poll::Ready(self.farewell(cx, sink, reason));
                }
                if self.batch.is_empty() && self.own.is_empty() {
                    if queue.is_empty() {
                        if queue.state == State::Closing {
                            // A shutdown may take a while (a TLS close_notify, a WebSocket
                            // close frame); the close's timer must still be able to wake us.
                            register(&mut queue.writer, cx.waker());
                            drop(queue);
                            return Pin::new(sink).poll_shutdown(cx).map(|result| match result {
                                Ok(()) => WriterEnd::Closed,
                                Err(error) => WriterEnd::Failed(Arc::new(error)),
                            });
                        }
                        register(&mut queue.writer, cx.waker());
                        // Idle: hold no buffer at all, so that thousands of quiet connections
                        // cost next to nothing (the next line allocates one again).
                        queue.tail = BytesMut::new();
                        self.own = BytesMut::new();
                        self.batch = VecDeque::new();
                        self.stall = None;
                        drop(queue);
                        // A transport that buffers (TLS keeps what the socket would not take)
                        // must send it before the writer sleeps, or it would wait for the next
                        // line. For TCP this does nothing; if it is pending, the socket wakes us.
                        return match Pin::new(sink).poll_flush(cx) {
                            Poll::Ready(Err(error)) => {
                                Poll::Ready(WriterEnd::Failed(Arc::new(error)))
                            }
                            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
                        };
                    }
                    std::mem::swap(&mut queue.chunks, &mut self.batch);
                    self.own.clear();
                    std::mem::swap(&mut queue.tail, &mut self.own);
                }
                // Also wanted while the socket is full: an abort must not wait for the peer.
                register(&mut queue.writer, cx.waker());
            }
            match self.poll_write_some(cx, sink, budget) {
                Poll::Pending => return self.poll_stall(cx),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(WriterEnd::Failed(Arc::new(
                        io::ErrorKind::WriteZero.into(),
                    )))
                }
                Poll::Ready(Ok(written)) => {
                    budget = budget.saturating_sub(written);
                    self.advance(written);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(WriterEnd::Failed(Arc::new(error))),
            }
        }
        // Plenty written in one go: let the other connections on this thread have a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One write of what was taken, at most about `budget` bytes: the chunks in order, then
    /// the small lines, in one vectored write when there is more than one piece.
    fn poll_write_some<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut Context<'_>,
        sink: &mut W,
        budget: usize,
    ) -> Poll<io::Result<usize>> {
        // One piece is one plain write: a vectored write costs more per call on a socket.
        let single = match (self.batch.len(), self.own.is_empty()) {
            (0, _) => Some(&self.own[..]),
            (1, true) => self.batch.front().map(|chunk| &chunk[..]),
            _ => None,
        };
        if let Some(piece) = single {
            let end = piece.len().min(budget.max(1));
            return Pin::new(sink).poll_write(cx, &piece[..end]);
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        let mut offered = 0;
        let pieces = self
            .batch
            .iter()
            .map(|chunk| &chunk[..])
            .chain((!self.own.is_empty()).then_some(&self.own[..]));
        for (slice, piece) in slices.iter_mut().zip(pieces) {
            if count > 0 && offered + piece.len() > budget {
                break;
            }
            *slice = IoSlice::new(piece);
            count += 1;
            offered += piece.len();
        }
        Pin::new(sink).poll_write_vectored(cx, &slices[..count])
    }

    /// `written` bytes of what was taken went out: drop them and settle the accounts.
    fn advance(&mut self, mut written: usize) {
        let total = written;
        while written > 0 {
            let Some(chunk) = self.batch.front_mut() else {
                break;
            };
            if written < chunk.len() {
                self.at_line_start = chunk[written - 1] == b'\n';
                chunk.advance(written);
                written = 0;
                break;
            }
            written -= chunk.len();
            self.at_line_start = chunk.last() == Some(&b'\n');
            self.batch.pop_front();
        }
        if written > 0 {
            self.at_line_start = self.own[written - 1] == b'\n';
            self.own.advance(written);
        }
        let limits = &self.shared.limits;
        limits.metrics.bytes_sent(total);
        let mut queue = self.shared.lock();
        // An abort may have written the debt off meanwhile.
        queue.owed -= total.min(queue.owed);
        queue.written += total as u64;
        let flushed = match queue.flushed.take() {
            Some((mark, waker)) if queue.written >= mark => Some(waker),
            waiting => {
                queue.flushed = waiting;
                None
            }
        };
        queue.settle(&limits.budget);
        if queue.over_cap_since.is_some() {
            queue.progressed(limits.cap);
        }
        drop(queue);
        if let Some(waker) = flushed {
            waker.wake();
        }
        self.stall = None;
    }

    /// The socket is full. A client that owes more than the cap gets its grace period on a
    /// timer, so that it is cut off even if nothing more is sent to it.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<WriterEnd> {
        let limits = &self.shared.limits;
        let Some(since) = self.shared.lock().over_cap_since else {
            self.stall = None;
            return Poll::Pending;
        };
        let deadline = since + limits.grace;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if stall.deadline() != deadline {
            stall.as_mut().reset(deadline);
        }
        if stall.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stall = None;
        let stalled = self.shared.lock().stalled(limits, Instant::now());
        if stalled {
            abort(&self.shared, ByeReason::TooSlow);
        }
        // Either way, look again: an abort is handled at the top of the loop.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One non-blocking attempt at `bye|REASON`: the peer may well not be reading.
    fn farewell<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut W,
        reason: ByeReason,
    ) -> WriterEnd {
        self.batch = VecDeque::new();
        self.own = BytesMut::new();
        let mut bye = BytesMut::new();
        if !self.at_line_start {
            bye.put_u8(b'\n');
        }
        let farewell = Event::Bye(Some(reason));
        farewell.encode(&mut bye);
        // Ignoring a failure is the point: this is best effort, and the caller closes anyway.
        if let Poll::Ready(Ok(written)) = Pin::new(sink).poll_write(cx, &bye) {
            let metrics = &self.shared.limits.metrics;
            metrics.event_sent(&farewell);
            metrics.bytes_sent(written);
        }
        WriterEnd::Aborted(reason)
    }
}

impl Drop for OutboxWriter {
    /// However the writer ends — finished, or dropped unfinished because its task died — the
    /// outbox stops accepting lines, so senders learn the user is gone instead of queueing
    /// into a void, and what the client still owed leaves the budget.
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.state = State::Finished;
        queue.chunks = VecDeque::new();
        queue.tail = BytesMut::new();
        queue.owed = 0;
        queue.over_cap_since = None;
        queue.settle(&self.shared.limits.budget);
        // Dropped without an end: its task panicked, or its thread stopped.
        queue.end = Some(self.end.take().unwrap_or_else(|| {
            WriterEnd::Failed(Arc::new(io::Error::other(
                "the connection's writer stopped",
            )))
        }));
        let watcher = queue.watcher.take();
        let flushed = queue.flushed.take();
        drop(queue);
        if let Some(watcher) = watcher {
            watcher.wake();
        }
        if let Some((_, waker)) = flushed {
            waker.wake();
        }
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot
        .as_ref()
        .is_some_and(|current| current.will_wake(waker))
    {
        *slot = Some(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const GRACE: Duration = Duration::from_secs(5);

    fn limits(cap: usize, budget: usize) -> Arc<Limits> {
        Arc::new(Limits {
            cap,
            grace: GRACE,
            budget: Budget::new(budget),
            metrics: Arc::new(Metrics::new(None)),
        })
    }

    fn outbox_of(cap: usize) -> (Outbox, OutboxWriter) {
        outbox(limits(cap, usize::MAX))
    }

    async fn read_to_end(mut reader: tokio::io::DuplexStream) -> String {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .expect("duplex reads do not fail");
        String::from_utf8(bytes).expect("utf-8")
    }

    #[tokio::test]
    async fn graceful_close_writes_everything_then_the_farewell_then_eof() {
        let (outbox, writer) = outbox_of(1024);
        let (sink, peer) = tokio::io::duplex(16);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send(&Event::Online("bob")).expect("open");
        outbox.send_line(b"pong\n").expect("open");
        outbox.close(Some(Event::Bye(None)));
        assert_eq!(outbox.send(&Event::Pong), Err(Closed));
        assert_eq!(read_to_end(peer).await, "login|bob\npong\nbye\n");
        assert!(matches!(writing.await, Ok(WriterEnd::Closed)));
    }

    #[tokio::test]
    async fn shared_lines_and_small_lines_arrive_in_the_order_queued() {
        let (outbox, writer) = outbox_of(1 << 20);
        let (sink, peer) = tokio::io::duplex(64);
        let writing = tokio::spawn(writer.run(sink));
        let big = Bytes::from(format!("say|r|a|{}\n", "x".repeat(100)));
        let small = Bytes::from_static(b"say|r|a|hi\n");
        outbox.send(&Event::Online("bob")).expect("open");
        outbox.send_shared(&big, EventVerb::Say).expect("open");
        outbox.send_shared(&small, EventVerb::Say).expect("open");
        outbox.send(&Event::Pong).expect("open");
        outbox.send_shared(&big, EventVerb::Say).expect("open");
        outbox.close(None);
        let text = read_to_end(peer).await;
        let expected = format!(
            "login|bob\n{}say|r|a|hi\npong\n{}",
            String::from_utf8_lossy(&big),
            String::from_utf8_lossy(&big)
        );
        assert_eq!(text, expected);
        assert!(matches!(writing.await, Ok(WriterEnd::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_is_cut_off_after_the_grace_and_the_sender_never_waits() {
        let cap = 4096;
        let (outbox, writer) = outbox_of(cap);
        let (sink, peer) = tokio::io::duplex(64);
        let writing = tokio::spawn(writer.run(sink));
        let line = [b'x'; 99];
        // Over the cap, the queue takes more for as long as the grace lasts (no time passes
        // here), and no send waits.
        for _ in 0..2 * cap / line.len() {
            outbox.send_line(&line).expect("within the grace period");
            tokio::task::yield_now().await;
        }
        assert!(outbox.queued_bytes() > cap);
        // Nothing more is sent; the writer's own timer ends it once the grace is over.
        assert!(matches!(
            writing.await,
            Ok(WriterEnd::Aborted(ByeReason::TooSlow))
        ));
        assert!(outbox.is_closed());
        assert_eq!(outbox.send_line(&line), Err(Closed));
        assert_eq!(outbox.queued_bytes(), 0, "the backlog is released");
        drop(peer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_after_the_grace_to_a_stalled_peer_fails_at_once() {
        let cap = 1000;
        let (outbox, writer) = outbox_of(cap);
        // The writer never runs: as if its thread were busy, or the socket full for good.
        let (sink, _peer) = tokio::io::duplex(64);
        outbox
            .send_line(&[b'y'; 1500])
            .expect("over the cap, within the grace");
        tokio::time::advance(GRACE).await;
        assert_eq!(outbox.send_line(b"z\n"), Err(Closed));
        assert!(outbox.is_closed());
        drop((writer, sink));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_keeps_reading_is_never_cut_off_however_much_it_owes() {
        let cap = 1000;
        let (outbox, writer) = outbox_of(cap);
        let (sink, mut peer) = tokio::io::duplex(64);
        let writing = tokio::spawn(writer.run(sink));
        // Ten times the cap at once: far over it, but the peer takes 64 bytes every second,
        // less than the grace apart, so it is making progress and stays.
        let line = [b'w'; 99];
        for _ in 0..100 {
            let mut with_newline = line.to_vec();
            with_newline.push(b'\n');
            outbox
                .send_line(&with_newline)
                .expect("a reading peer is not cut off");
        }
        outbox.close(None);
        let mut received = 0;
        let mut buf = [0u8; 64];
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match peer.read(&mut buf).await.expect("duplex reads do not fail") {
                0 => break,
                n => received += n,
            }
        }
        assert_eq!(received, 100 * 100);
        assert!(matches!(writing.await, Ok(WriterEnd::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_the_largest_debtor_is_cut_first() {
        // The budget counts what each client owes beyond its first UNCOUNTED_BYTES.
        let k = UNCOUNTED_BYTES;
        let shared = limits(10 * k, 10 * k);
        let (big, big_writer) = outbox(shared.clone());
        let (small, small_writer) = outbox(shared.clone());
        let (big_sink, _big_peer) = tokio::io::duplex(16);
        let (small_sink, _small_peer) = tokio::io::duplex(16);
        let big_writing = tokio::spawn(big_writer.run(big_sink));
        let small_writing = tokio::spawn(small_writer.run(small_sink));
        small
            .send_line(&vec![b's'; 4 * k])
            .expect("within the budget");
        for _ in 0..4 {
            big.send_line(&vec![b'b'; 2 * k])
                .expect("within the budget");
        }
        assert_eq!(shared.budget.owed(), 3 * k + 7 * k);
        // This takes everyone past the budget: the one owing the most goes, and only it.
        let _ = big.send_line(&vec![b'b'; k]);
        assert!(big.is_closed());
        assert!(!small.is_closed());
        assert_eq!(shared.budget.owed(), 3 * k);
        assert!(matches!(
            big_writing.await,
            Ok(WriterEnd::Aborted(ByeReason::TooSlow))
        ));
        small.abort(ByeReason::Shutdown);
        assert!(small_writing.await.is_ok());
        assert_eq!(shared.budget.owed(), 0, "every byte is accounted for");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_a_client_over_its_cap_goes_before_a_larger_one_within_it() {
        let k = UNCOUNTED_BYTES;
        let shared = limits(4 * k, 6 * k);
        let mut ends = Vec::new();
        let mut open = |_| {
            let (outbox, writer) = outbox(shared.clone());
            let (sink, peer) = tokio::io::duplex(16);
            ends.push((tokio::spawn(writer.run(sink)), peer));
            outbox
        };
        let (tiny, over, large) = (open(0), open(1), open(2));
        tiny.send_line(&vec![b't'; k / 2])
            .expect("within the budget");
        // Over its cap by a little: its grace clock runs.
        over.send_line(&vec![b'o'; 4 * k + 1])
            .expect("within the budget");
        // Owes more, but within its cap.
        large
            .send_line(&vec![b'l'; 4 * k])
            .expect("within the budget");
        // Past the budget: the one over its cap goes, though it owes less.
        let _ = tiny.send_line(&vec![b't'; k / 2]);
        assert!(over.is_closed());
        assert!(!large.is_closed());
        assert!(
            !tiny.is_closed(),
            "owing no more than it is allowed uncounted"
        );
        for (writing, _peer) in ends {
            writing.abort();
        }
    }

    #[tokio::test]
    async fn a_mark_is_passed_only_once_its_line_is_wholly_written() {
        let (outbox, writer) = outbox_of(1 << 20);
        let (sink, mut peer) = tokio::io::duplex(8);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send_line(b"abc\n").expect("open");
        let mark = outbox.send_line_marked(b"0123456789\n").expect("open");
        assert_eq!(mark, 15, "the offset just past the marked line");
        let mut head = [0u8; 8];
        peer.read_exact(&mut head).await.expect("8 bytes arrive");
        // Only part of the marked line is on the socket: the mark is not passed yet.
        let waiting = outbox.written_past(mark);
        tokio::pin!(waiting);
        assert!(futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none());
        let mut rest = [0u8; 7];
        peer.read_exact(&mut rest).await.expect("the rest arrives");
        assert_eq!(waiting.await, 15);
        // A connection that ends short of a mark reports what it did write.
        let later = outbox.send_line_marked(&[b'z'; 64]).expect("open");
        outbox.abort(ByeReason::Shutdown);
        assert!(outbox.written_past(later).await < later);
        drop(peer);
        let _ = writing.await;
    }

    #[tokio::test]
    async fn lines_queued_while_a_write_is_half_done_keep_their_order() {
        let (outbox, writer) = outbox_of(1 << 20);
        let (sink, peer) = tokio::io::duplex(8);
        let writing = tokio::spawn(writer.run(sink));
        let big = Bytes::from(format!("say|r|a|{}\n", "x".repeat(80)));
        let mut expected = String::new();
        for i in 0..20 {
            // Small lines, shared lines and more small lines, while the writer holds a batch
            // that the 8-byte pipe takes a few bytes at a time.
            let small = format!("talk|a|{i}\n");
            outbox.send_line(small.as_bytes()).expect("open");
            expected.push_str(&small);
            if i % 3 == 0 {
                outbox.send_shared(&big, EventVerb::Say).expect("open");
                expected.push_str(&String::from_utf8_lossy(&big));
            }
            tokio::task::yield_now().await;
        }
        outbox.close(None);
        assert_eq!(read_to_end(peer).await, expected);
        assert!(matches!(writing.await, Ok(WriterEnd::Closed)));
    }

    #[tokio::test]
    async fn abort_interrupts_a_writer_stuck_on_a_full_socket() {
        let (outbox, writer) = outbox_of(1 << 20);
        let (sink, peer) = tokio::io::duplex(8);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send_line(b"0123456789abcdef\n").expect("open");
        tokio::task::yield_now().await;
        outbox.abort(ByeReason::Shutdown);
        assert!(matches!(
            writing.await,
            Ok(WriterEnd::Aborted(ByeReason::Shutdown))
        ));
        drop(peer);
    }

    #[tokio::test]
    async fn farewell_after_a_partial_line_starts_on_a_new_line() {
        let (outbox, writer) = outbox_of(1 << 20);
        let (sink, mut peer) = tokio::io::duplex(64);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send_line(&[b'y'; 100]).expect("open");
        let mut head = [0u8; 64];
        peer.read_exact(&mut head).await.expect("64 bytes arrive");
        // The writer now waits with 36 bytes of the line unwritten; the pipe has room again.
        outbox.abort(ByeReason::Timeout);
        assert!(writing.await.is_ok());
        let rest = read_to_end(peer).await;
        assert!(rest.ends_with("\nbye|timeout\n"), "{rest:?}");
    }

    #[tokio::test]
    async fn a_failed_socket_ends_the_writer_and_later_sends_are_harmless() {
        let (outbox, writer) = outbox_of(1024);
        let (sink, peer) = tokio::io::duplex(8);
        drop(peer);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send_line(b"ping\n").expect("open");
        assert!(matches!(writing.await, Ok(WriterEnd::Failed(_))));
        assert_eq!(outbox.send_line(b"ping\n"), Err(Closed));
        assert_eq!(outbox.queued_bytes(), 0);
    }
}
