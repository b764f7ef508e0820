//! A connection is a transport: lines in, bytes out. A [`Session`](crate::actors::Session) is the
//! protocol spoken over it.
//!
//! [`Connection::start`] takes the two halves of any byte stream and gives the actor that serves
//! it everything the protocol needs and nothing it does not:
//!
//! * the peer's lines, framed by [`LineCodec`], as [`Input`] items on the actor's own context
//!   (so the actor's `ctx.wait` also pauses reading: a session that is waiting for the
//!   `ChatServer` takes no more input, which keeps its commands in order);
//! * an [`Outbox`] to queue lines on, drained into the socket by a writer task of its own;
//! * the end of that writer, as one more [`Input`] item, so one stream tells the actor every
//!   thing that happens to its connection and the actor has a single place to react to them;
//! * the close: [`Connection::close`] flushes what is queued and a farewell, shuts the write side
//!   down, and forces the matter if the peer will not take the bytes in time;
//!   [`Connection::linger`] then keeps reading (and dropping) input for a moment so that unread
//!   input does not turn our close into a reset that destroys the last lines.
//!
//! # Where a new transport plugs in
//!
//! Anything that reads and writes bytes can carry a session: implement [`Transport`] for it —
//! `open` runs on the worker thread that will serve the connection, so that is the place for a
//! TLS handshake, or for adapting a WebSocket (one text frame = one line) to a byte stream. Its
//! listener asks [`Gate::slot`](crate::server::Gate::slot) for a slot with the client's address
//! (the per-address and connection limits), hands the transport and the slot to
//! [`Gate::admit`](crate::server::Gate::admit) — which picks the worker and starts a `Session`
//! over it; a transport that cannot leave its thread (a WebSocket) goes to
//! [`Gate::admit_here`](crate::server::Gate::admit_here) instead — or, with no slot, the stream
//! to [`Gate::refuse`](crate::server::Gate::refuse).
//! Nothing in the session or the `ChatServer` changes. Its [`Transport::KIND`] is the
//! `transport` label of the connection metrics (a new transport adds a value to
//! [`TransportKind`]).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix::prelude::*;
use bytes::BytesMut;
use futures_util::{ready, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::FramedRead;

use crate::{
    codec::{ByeReason, Event, Frame, LineCodec},
    metrics::{Metrics, TransportKind},
    outbox::{self, Outbox, WriterEnd},
};

/// How long a closed connection keeps reading (and discarding) after its last write, so that
/// unread input from the peer does not turn our close into a reset that destroys the `bye`.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Read buffer per connection while it has input; none while it is idle (see [`LineStream`]).
const READ_BUFFER_BYTES: usize = 2048;

/// Whether what crosses a transport can be read on the way: passwords may cross only an
/// encrypted one, unless they come from this machine or the operator allows it
/// (`auth.allow_plaintext_passwords`). A transport says which it is: TLS is encrypted, plain TCP
/// is not, a WebSocket over HTTPS would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Anyone on the path can read it.
    Plain,
    /// Encrypted between the client and this server (or its proxy).
    Encrypted,
}

/// A byte stream that can carry a session: TCP, TLS, an in-memory pipe, or a WebSocket adapter.
/// One that is handed to a worker thread ([`Gate::admit`](crate::server::Gate::admit)) is
/// `Send`; one that must stay on the thread that holds it (a WebSocket, whose HTTP connection
/// lives on an HTTP worker) is served there ([`Gate::admit_here`](crate::server::Gate::admit_here)).
pub(crate) trait Transport: 'static {
    /// The half that is read from.
    type Reader: AsyncRead + Unpin + 'static;
    /// The half that is written to.
    type Writer: AsyncWrite + Unpin + 'static;
    /// Which transport this is, for the metrics.
    const KIND: TransportKind;

    /// Makes the stream ready on the thread that will serve it — registers it with that
    /// thread's reactor, performs any handshake — and splits it (a stream without a native
    /// split can use `tokio::io::split`).
    fn open(self) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer)>>;

    /// Whether what crosses it can be read on the way.
    fn security(&self) -> Security;
}

/// A TCP socket handed over from the acceptor's thread; it joins the serving thread's reactor.
impl Transport for std::net::TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    const KIND: TransportKind = TransportKind::Tcp;

    async fn open(self) -> io::Result<(Self::Reader, Self::Writer)> {
        Ok(tokio::net::TcpStream::from_std(self)?.into_split())
    }

    fn security(&self) -> Security {
        Security::Plain
    }
}

/// An in-memory pipe (see [`crate::server::Server::connect_in_memory`]), which says whatever
/// its maker wants it to about its security, so tests can stand in for either kind.
pub(crate) struct InMemory {
    pub(crate) stream: tokio::io::DuplexStream,
    pub(crate) security: Security,
}

impl Transport for InMemory {
    type Reader = tokio::io::ReadHalf<tokio::io::DuplexStream>;
    type Writer = tokio::io::WriteHalf<tokio::io::DuplexStream>;
    const KIND: TransportKind = TransportKind::Memory;

    async fn open(self) -> io::Result<(Self::Reader, Self::Writer)> {
        Ok(tokio::io::split(self.stream))
    }

    fn security(&self) -> Security {
        self.security
    }
}

/// Everything that happens to a connection, in the order it happens.
#[derive(Debug)]
pub(crate) enum Input {
    /// A line from the peer, or word that it sent one that was too long.
    Frame(Frame),
    /// The peer has finished sending (end of stream); no more frames follow.
    Ended,
    /// Reading failed; no more frames follow, only [`Input::Ended`].
    ReadFailed(io::Error),
    /// The writer has finished: everything is written, or it gave up (see [`WriterEnd`]).
    Written(WriterEnd),
}

/// The write side of a connection, as its actor holds it.
pub(crate) struct Connection {
    outbox: Outbox,
}

impl Connection {
    /// Starts serving `reader` and `writer` for the actor that owns `ctx`: frames of at most
    /// `max_line_bytes` arrive on its [`StreamHandler<Input>`], and what is queued for the peer
    /// is judged by `outbound` (see [`outbox`]). The stream of inputs ends (the handler's
    /// `finished`) once input has ended *and* the writer has finished.
    pub(crate) fn start<A, R, W>(
        reader: R,
        writer: W,
        max_line_bytes: usize,
        outbound: Arc<outbox::Limits>,
        ctx: &mut Context<A>,
    ) -> Connection
    where
        A: Actor<Context = Context<A>> + StreamHandler<Input>,
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let metrics = outbound.metrics.clone();
        let (outbox, outbox_writer) = outbox::outbox(outbound);
        // The writer is a task of its own, not a future of the actor: while the actor waits
        // (`ctx.wait`), its own futures are not polled, and output must keep flowing regardless.
        // Its end is left in the outbox, where `Inputs` looks for it.
        actix_rt::spawn(outbox_writer.run(writer));
        // No buffer yet: `LineStream` sizes it when there is input to read.
        let codec = LineCodec::new(max_line_bytes);
        let reader = Counted {
            inner: reader,
            metrics,
        };
        let lines = LineStream(FramedRead::with_capacity(reader, codec, 0));
        ctx.add_stream(Inputs {
            lines: Some(lines),
            written: Some(outbox.clone()),
            since_written_polled: 0,
        });
        Connection { outbox }
    }

    /// The queue to the peer, for the actor and for anyone it gives a clone to.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Closes gracefully: what is queued is written, then `farewell`, then the write side is
    /// shut down, and the writer reports [`WriterEnd::Closed`]. If the peer has not taken it all
    /// within `grace`, the close is forced with `bye|timeout`.
    pub(crate) fn close<A>(&self, farewell: Event<'_>, grace: Duration, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        self.outbox.close(Some(farewell));
        let outbox = self.outbox.clone();
        ctx.run_later(grace, move |_, _| outbox.abort(ByeReason::Timeout));
    }

    /// After a graceful close: reads and drops input for [`CLOSE_LINGER`] so the peer gets our
    /// last lines, then stops the actor (sooner, if the input ends first).
    pub(crate) fn linger<A>(&self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        ctx.run_later(CLOSE_LINGER, |_, ctx| ctx.stop());
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Normally the writer has already finished (then this does nothing); this covers an
        // actor that panicked or whose arbiter stopped: the writer task ends too.
        self.outbox.abort(ByeReason::Shutdown);
    }
}

/// Everything a connection reports, as one stream (see [`Input`]): its lines, then `Ended`; and
/// the writer's end, whenever it comes. It ends when both have. Hand-written rather than a
/// `select` of two streams because it is polled for every line: the writer's end is looked at
/// only when no line is ready, or every [`WRITTEN_EVERY`] lines, instead of around each one.
struct Inputs<R> {
    lines: Option<LineStream<Counted<R>>>,
    /// The outbox, until its writer's end has been reported.
    written: Option<Outbox>,
    /// Lines yielded since the writer's end was last polled.
    since_written_polled: u32,
}

/// While lines keep coming, how many may pass before the writer's end is polled anyway.
const WRITTEN_EVERY: u32 = 32;

impl<R: AsyncRead + Unpin> Inputs<R> {
    fn poll_written(&mut self, cx: &mut TaskContext<'_>) -> Poll<Input> {
        self.since_written_polled = 0;
        let Some(outbox) = self.written.as_ref() else {
            return Poll::Pending;
        };
        let end = ready!(outbox.poll_writer_end(cx));
        self.written = None;
        Poll::Ready(Input::Written(end))
    }
}

impl<R: AsyncRead + Unpin> Stream for Inputs<R> {
    type Item = Input;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Input>> {
        let this = self.get_mut();
        if this.since_written_polled >= WRITTEN_EVERY {
            if let Poll::Ready(input) = this.poll_written(cx) {
                return Poll::Ready(Some(input));
            }
        }
        if let Some(lines) = this.lines.as_mut() {
            match Pin::new(lines).poll_next(cx) {
                Poll::Ready(Some(frame)) => {
                    this.since_written_polled += 1;
                    return Poll::Ready(Some(match frame {
                        Ok(frame) => Input::Frame(frame),
                        // FramedRead yields nothing after an error; `Ended` follows.
                        Err(error) => Input::ReadFailed(error),
                    }));
                }
                Poll::Ready(None) => {
                    this.lines = None;
                    return Poll::Ready(Some(Input::Ended));
                }
                Poll::Pending => {}
            }
        }
        match this.poll_written(cx) {
            Poll::Ready(input) => Poll::Ready(Some(input)),
            Poll::Pending if this.lines.is_none() && this.written.is_none() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The connection's lines, with a read buffer only while there is input to read: whenever the
/// socket has nothing more and no partial line is buffered, the buffer is freed, and it is
/// allocated again when the next bytes arrive. For 10,000 idle connections that is the
/// difference between 20 MB of empty buffers and none.
struct LineStream<R>(FramedRead<R, LineCodec>);

impl<R: AsyncRead + Unpin> Stream for LineStream<R> {
    type Item = Result<Frame, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let framed = &mut self.get_mut().0;
        if framed.read_buffer().capacity() == 0 {
            // Otherwise FramedRead would grow it from nothing, a few bytes per read.
            framed.read_buffer_mut().reserve(READ_BUFFER_BYTES);
        }
        let poll = Pin::new(&mut *framed).poll_next(cx);
        if poll.is_pending() && framed.read_buffer().is_empty() {
            *framed.read_buffer_mut() = BytesMut::new();
        }
        poll
    }
}

/// A connection's read half that counts the bytes read into the server's metrics: one atomic
/// add per read, on the reading thread's own counters.
struct Counted<R> {
    inner: R,
    metrics: Arc<Metrics>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.metrics.bytes_received(buf.filled().len() - before);
        }
        poll
    }
}
