//! The write side of one connection: a byte queue with a hard cap, and the future that drains it
//! into the socket.
//!
//! Why not `actix::io::FramedWrite`? Its high-water mark never triggers on tokio sockets, so its
//! buffer grows without bound for a peer that stops reading; it has no length getter; and its
//! `Drop` does not flush, so a `bye` written just before closing can be lost. Why not the
//! session's mailbox? `do_send` ignores mailbox capacity, and each message costs an allocation.
//!
//! An [`Outbox`] is a cheap, cloneable handle that anyone holding it (the session itself, the
//! `ChatServer`, other sessions that cached it) uses to append encoded lines. It never blocks
//! and never waits on the peer: when the bytes not yet written would pass the cap, the
//! connection is aborted as too slow and further sends fail with [`Closed`], which senders treat
//! as "that user is gone". The one [`OutboxWriter`] swaps the whole queue out on each wake-up and
//! writes it with as few syscalls as the socket allows, so a busy connection gets its lines in
//! batches.
//!
//! The queue sits behind a `Mutex` held only to append or swap a buffer — it *is* the channel,
//! not state shared between actors — which keeps the queued byte count exact and lets an idle
//! connection hold no buffer at all.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncWrite;

use crate::codec::{ByeReason, Event};

/// Batches written per poll before the writer yields to the other tasks on its thread.
const BATCHES_PER_POLL: usize = 16;

/// Creates the two ends for one connection, with at most `cap` bytes queued at any time.
pub fn outbox(cap: usize) -> (Outbox, OutboxWriter) {
    let shared = Arc::new(Shared {
        cap,
        queue: Mutex::new(Queue {
            pending: BytesMut::new(),
            in_flight: 0,
            state: State::Open,
            writer: None,
        }),
    });
    let writer = OutboxWriter {
        shared: shared.clone(),
        batch: BytesMut::new(),
        at_line_start: true,
    };
    (Outbox { shared }, writer)
}

/// The connection is closing or closed: nothing more will be written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

/// A handle for queueing lines to one connection.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    cap: usize,
    queue: Mutex<Queue>,
}

struct Queue {
    /// Bytes not yet taken by the writer.
    pending: BytesMut,
    /// Bytes the writer has taken but not yet written.
    in_flight: usize,
    state: State,
    /// The writer's waker, when it waits for bytes or for the socket.
    writer: Option<Waker>,
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; if something ever did, the queue is still
        // consistent (a buffer and two counters), so carry on rather than poison every sender.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
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

impl Outbox {
    /// Queues one event. Fails if the connection is closing, or if this line would pass the
    /// cap — in which case the connection is aborted with `bye|too-slow`.
    pub fn send(&self, event: &Event<'_>) -> Result<(), Closed> {
        self.push(|buf| event.encode(buf))
    }

    /// Queues bytes already encoded as one or more complete lines (for fan-out: encode once,
    /// send to many).
    pub fn send_line(&self, line: &[u8]) -> Result<(), Closed> {
        self.push(|buf| buf.put_slice(line))
    }

    fn push(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<(), Closed> {
        let mut queue = self.shared.lock();
        if queue.state != State::Open {
            return Err(Closed);
        }
        let before = queue.pending.len();
        encode(&mut queue.pending);
        if queue.pending.len() + queue.in_flight > self.shared.cap {
            // Free the backlog now: this peer will never read it.
            queue.pending = BytesMut::new();
            queue.state = State::Aborted(ByeReason::TooSlow);
            release_and_wake(queue);
            return Err(Closed);
        }
        if before == 0 {
            // Otherwise the writer was already told about the earlier bytes.
            release_and_wake(queue);
        }
        Ok(())
    }

    /// Closes gracefully: what is queued is written, then `farewell` if given, then the write
    /// side is shut down. Later sends fail. Does nothing if already closing.
    pub fn close(&self, farewell: Option<Event<'_>>) {
        let mut queue = self.shared.lock();
        if queue.state != State::Open {
            return;
        }
        if let Some(farewell) = farewell {
            farewell.encode(&mut queue.pending);
        }
        queue.state = State::Closing;
        release_and_wake(queue);
    }

    /// Closes at once: what is queued is dropped and `bye|REASON` is attempted without waiting.
    /// Also cuts short a graceful close that is taking too long.
    pub fn abort(&self, reason: ByeReason) {
        let mut queue = self.shared.lock();
        if matches!(queue.state, State::Aborted(_) | State::Finished) {
            return;
        }
        queue.pending = BytesMut::new();
        queue.state = State::Aborted(reason);
        release_and_wake(queue);
    }

    /// Whether sends to this connection now fail.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().state != State::Open
    }

    /// Bytes queued and not yet written to the socket.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        let queue = self.shared.lock();
        queue.pending.len() + queue.in_flight
    }
}

/// How a connection's writer ended.
#[derive(Debug)]
pub enum WriterEnd {
    /// Closed gracefully: everything queued was written and the write side shut down.
    Closed,
    /// Aborted, e.g. too slow; the queue was dropped.
    Aborted(ByeReason),
    /// The socket failed (the peer reset the connection, …).
    Failed(io::Error),
}

/// Drains one connection's [`Outbox`] into its socket.
pub struct OutboxWriter {
    shared: Arc<Shared>,
    /// The bytes taken from the queue and being written.
    batch: BytesMut,
    /// Whether the last byte written ended a line, so a farewell never lands mid-line.
    at_line_start: bool,
}

impl OutboxWriter {
    /// Writes until the outbox is closed or aborted, or the socket fails.
    pub async fn run<W: AsyncWrite + Unpin>(mut self, mut sink: W) -> WriterEnd {
        poll_fn(|cx| self.poll_drive(cx, &mut sink)).await
        // Dropping `self` marks the outbox finished.
    }

    fn poll_drive<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut W,
    ) -> Poll<WriterEnd> {
        for _ in 0..BATCHES_PER_POLL {
            {
                let mut queue = self.shared.lock();
                queue.in_flight = self.batch.len();
                if let State::Aborted(reason) = queue.state {
                    drop(queue);
                    return Poll::Ready(self.farewell(cx, sink, reason));
                }
                if self.batch.is_empty() {
                    if queue.pending.is_empty() {
                        if queue.state == State::Closing {
                            drop(queue);
                            return Pin::new(sink).poll_shutdown(cx).map(|result| match result {
                                Ok(()) => WriterEnd::Closed,
                                Err(error) => WriterEnd::Failed(error),
                            });
                        }
                        register(&mut queue.writer, cx.waker());
                        // Idle: hold no buffer at all, so that thousands of quiet connections
                        // cost next to nothing (the next line allocates one again).
                        self.batch = BytesMut::new();
                        queue.pending = BytesMut::new();
                        return Poll::Pending;
                    }
                    std::mem::swap(&mut queue.pending, &mut self.batch);
                    queue.in_flight = self.batch.len();
                }
                // Also wanted while the socket is full: an abort must not wait for the peer.
                register(&mut queue.writer, cx.waker());
            }
            match Pin::new(&mut *sink).poll_write(cx, &self.batch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(WriterEnd::Failed(io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(written)) => {
                    self.at_line_start = self.batch[written - 1] == b'\n';
                    self.batch.advance(written);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(WriterEnd::Failed(error)),
            }
        }
        // Plenty written in one go: let the other connections on this thread have a turn.
        self.shared.lock().in_flight = self.batch.len();
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
        self.batch.clear();
        if !self.at_line_start {
            self.batch.put_u8(b'\n');
        }
        Event::Bye(Some(reason)).encode(&mut self.batch);
        // Ignoring the outcome is the point: this is best effort, and the caller closes anyway.
        let _ = Pin::new(sink).poll_write(cx, &self.batch);
        WriterEnd::Aborted(reason)
    }
}

impl Drop for OutboxWriter {
    /// However the writer ends — finished, or dropped unfinished because its task died — the
    /// outbox stops accepting lines, so senders learn the user is gone instead of queueing
    /// into a void.
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.state = State::Finished;
        queue.pending = BytesMut::new();
        queue.in_flight = 0;
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
        let (outbox, writer) = outbox(1024);
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
    async fn a_peer_that_never_reads_is_aborted_at_the_cap_and_the_sender_never_waits() {
        let cap = 4096;
        let (outbox, writer) = outbox(cap);
        let (sink, peer) = tokio::io::duplex(64);
        let writing = tokio::spawn(writer.run(sink));
        let line = [b'x'; 99];
        let mut sent = 0;
        while outbox.send_line(&line).is_ok() {
            sent += line.len();
            assert!(outbox.queued_bytes() <= cap);
            tokio::task::yield_now().await;
            assert!(sent < 10 * cap, "never cut off");
        }
        assert!(sent + 64 >= cap, "cut off early, after {sent} bytes");
        assert!(outbox.is_closed());
        assert!(matches!(
            writing.await,
            Ok(WriterEnd::Aborted(ByeReason::TooSlow))
        ));
        assert_eq!(outbox.queued_bytes(), 0, "the backlog is released");
        drop(peer);
    }

    #[tokio::test]
    async fn abort_interrupts_a_writer_stuck_on_a_full_socket() {
        let (outbox, writer) = outbox(1 << 20);
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
        let (outbox, writer) = outbox(1 << 20);
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
        let (outbox, writer) = outbox(1024);
        let (sink, peer) = tokio::io::duplex(8);
        drop(peer);
        let writing = tokio::spawn(writer.run(sink));
        outbox.send_line(b"ping\n").expect("open");
        assert!(matches!(writing.await, Ok(WriterEnd::Failed(_))));
        assert_eq!(outbox.send_line(b"ping\n"), Err(Closed));
        assert_eq!(outbox.queued_bytes(), 0);
    }
}
