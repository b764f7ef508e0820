//! The `Session` actor: one per connection. It reads and parses the client's lines, enforces
//! the per-connection guards (heartbeat, login deadline, flood control), runs commands through
//! the [`ChatServer`], and starts the connection's writer, an
//! [`OutboxWriter`](crate::outbox::OutboxWriter) task whose end ends the session.
//!
//! Ordering: a session sends the server at most one request at a time and stops reading until
//! it is answered (`ctx.wait`), so its commands take effect in the order typed and the server's
//! mailbox holds at most one message per connection. Direct messages skip the server after the
//! first: the recipient's [`Outbox`] is resolved once and cached, and since every later message
//! takes that same path, they arrive in the order sent. A cached outbox belongs to one
//! connection, so it can never deliver to a different user who later takes the same name; when
//! its user is gone, sending fails and the session asks the server again.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use actix::{fut::wrap_future, prelude::*};
use bytes::BytesMut;
use futures_util::Stream;
use log::{debug, info};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::OwnedSemaphorePermit,
};
use tokio_util::{codec::FramedRead, sync::CancellationToken};

use super::chat_server::{
    ChatServer, ConnId, Disconnect, Join, Leave, ListRooms, Login, Resolve, Say, Who,
};
use crate::{
    codec::{fold_name, is_valid_name, ByeReason, ErrorKind, Event, Frame, LineCodec, Request},
    config::{secs, Settings},
    flood::{FloodControl, Verdict},
    outbox::{self, Outbox, WriterEnd},
};

/// Direct-message recipients a session remembers; past this, forgotten ones are looked up again.
const MAX_CACHED_PEERS: usize = 64;
/// How long a closed connection keeps reading (and discarding) after its last write, so that
/// unread input from the peer does not turn our close into a reset that destroys the `bye`.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Read buffer per connection while it has input; none while it is idle (see [`LineStream`]).
const READ_BUFFER_BYTES: usize = 2048;

/// What every session needs to know, shared by all of them.
pub struct SessionContext {
    pub server: Addr<ChatServer>,
    pub max_line_bytes: usize,
    pub max_outbound_bytes: usize,
    pub lines_per_sec: u32,
    pub burst: u32,
    pub ping_after: Duration,
    pub timeout: Duration,
    pub login_timeout: Duration,
    pub close_grace: Duration,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl SessionContext {
    pub fn new(settings: &Settings, server: Addr<ChatServer>, shutdown: CancellationToken) -> Self {
        Self {
            server,
            max_line_bytes: settings.limits.max_line_bytes,
            max_outbound_bytes: settings.limits.max_outbound_bytes,
            lines_per_sec: settings.limits.lines_per_sec,
            burst: settings.limits.burst,
            ping_after: secs(settings.heartbeat.interval_secs),
            timeout: secs(settings.heartbeat.timeout_secs),
            login_timeout: secs(settings.heartbeat.login_timeout_secs),
            close_grace: secs(settings.server.shutdown_grace_secs),
            shutdown,
        }
    }
}

/// One client connection.
pub struct Session {
    conn: ConnId,
    peer: SocketAddr,
    context: Arc<SessionContext>,
    outbox: Outbox,
    /// The name logged in as.
    user: Option<Arc<str>>,
    /// The server may know this connection (a Login was sent) and must be told when it goes.
    registered: bool,
    /// Direct-message recipients by folded name.
    peers: HashMap<Box<str>, Outbox>,
    started_at: Instant,
    last_heard: Instant,
    pinged: bool,
    /// Boxed: most of a session's size when on, and nothing to carry when off.
    flood: Option<Box<FloodControl>>,
    closing: bool,
    writer_done: bool,
    input_done: bool,
    /// Held for the session's lifetime: the connection limit counts live sessions.
    _permit: OwnedSemaphorePermit,
}

impl Session {
    /// Starts a session on the current arbiter for a connection split into its two halves
    /// (generic so that a TLS stream can be served the same way).
    pub fn start<R, W>(
        reader: R,
        writer: W,
        conn: ConnId,
        peer: SocketAddr,
        context: Arc<SessionContext>,
        permit: OwnedSemaphorePermit,
    ) -> Addr<Session>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        Session::create(move |ctx| {
            let (outbox, outbox_writer) = outbox::outbox(context.max_outbound_bytes);
            let codec = LineCodec::new(context.max_line_bytes);
            // No buffer yet: `LineStream` sizes it when there is input to read.
            ctx.add_stream(LineStream(FramedRead::with_capacity(reader, codec, 0)));
            // The writer is a task of its own, not a future of this actor: while the session
            // waits on the ChatServer (`ctx.wait`), its own futures are not polled, and its
            // output must keep flowing regardless.
            let session = ctx.address();
            actix_rt::spawn(async move {
                let end = outbox_writer.run(writer).await;
                session.do_send(WriterEnded(end));
            });
            ctx.spawn(wrap_future(context.shutdown.clone().cancelled_owned()).map(
                |(), session: &mut Session, ctx| {
                    session.close(Some(ByeReason::Shutdown), ctx, "server shutting down")
                },
            ));
            let now = Instant::now();
            Session {
                conn,
                peer,
                flood: FloodControl::new(context.lines_per_sec, context.burst, now).map(Box::new),
                context,
                outbox,
                user: None,
                registered: false,
                peers: HashMap::new(),
                started_at: now,
                last_heard: now,
                pinged: false,
                closing: false,
                writer_done: false,
                input_done: false,
                _permit: permit,
            }
        })
    }

    /// Queues a reply to this client. A failure means the connection is closing, which the
    /// writer reports on its own.
    fn reply(&self, event: &Event<'_>) {
        let _ = self.outbox.send(event);
    }

    /// Every frame, over-long ones included, is a sign of life and counts against the flood
    /// budget.
    fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.last_heard = now;
        self.pinged = false;
        let parsed = match &frame {
            Frame::Line(line) => Some(Request::parse(line)),
            Frame::TooLong => None,
        };
        match self
            .flood
            .as_mut()
            .map_or(Verdict::Allow, |flood| flood.check(now))
        {
            Verdict::Allow => {}
            Verdict::Limit => {
                let verb = match parsed {
                    Some(Ok(request)) => request.verb().as_str(),
                    Some(Err(error)) => error.verb(),
                    None => "",
                };
                return self.reply(&Event::Error(ErrorKind::RateLimited, verb));
            }
            Verdict::Disconnect => return self.close(Some(ByeReason::Flood), ctx, "flooding"),
        }
        match parsed {
            Some(Ok(request)) => self.execute(request, ctx),
            Some(Err(error)) => {
                debug!("conn {}: {:?}", self.conn, error);
                self.reply(&error.to_event());
            }
            None => {
                let max = self.context.max_line_bytes.to_string();
                self.reply(&Event::Error(ErrorKind::LineTooLong, &max));
            }
        }
    }

    fn execute(&mut self, request: Request<'_>, ctx: &mut Context<Self>) {
        let conn = self.conn;
        let Some(me) = self.user.clone() else {
            return match request {
                Request::Login { name } if is_valid_name(name) => self.login(name, ctx),
                Request::Login { name } => self.reply(&Event::Error(ErrorKind::BadName, name)),
                Request::Ping => self.reply(&Event::Pong),
                Request::Pong => {}
                Request::Exit => self.close(None, ctx, "said exit"),
                other => self.reply(&Event::Error(ErrorKind::NotLoggedIn, other.verb().as_str())),
            };
        };
        match request {
            Request::Login { .. } => self.reply(&Event::Error(ErrorKind::AlreadyLoggedIn, &me)),
            Request::Talk { to, text } => self.talk(&me, to, text, ctx),
            Request::Who => self.ask(Who { conn }, ctx),
            Request::Rooms => self.ask(ListRooms { conn }, ctx),
            Request::Join { room } if !is_valid_name(room) => {
                self.reply(&Event::Error(ErrorKind::BadName, room))
            }
            Request::Join { room } => self.ask(
                Join {
                    conn,
                    room: room.to_owned(),
                },
                ctx,
            ),
            Request::Leave { room } => self.ask(
                Leave {
                    conn,
                    room: room.to_owned(),
                },
                ctx,
            ),
            Request::Say { room, text } => self.ask(
                Say {
                    conn,
                    room: room.to_owned(),
                    text: text.to_owned(),
                },
                ctx,
            ),
            Request::Ping => self.reply(&Event::Pong),
            Request::Pong => {}
            Request::Exit => self.close(None, ctx, "said exit"),
        }
    }

    /// Sends a request whose replies the server writes itself, pausing input until it is done.
    fn ask<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message<Result = ()> + Send + 'static,
        ChatServer: Handler<M>,
    {
        ctx.wait(wrap_future(self.context.server.send(msg)).map(
            |result, session: &mut Self, ctx| {
                if result.is_err() {
                    session.server_gone(ctx);
                }
            },
        ));
    }

    fn login(&mut self, name: &str, ctx: &mut Context<Self>) {
        self.registered = true;
        let login = Login {
            conn: self.conn,
            peer: self.peer,
            name: name.to_owned(),
            outbox: self.outbox.clone(),
        };
        ctx.wait(wrap_future(self.context.server.send(login)).map(
            |result, session: &mut Self, ctx| match result {
                Ok(Some(name)) => session.user = Some(name),
                Ok(None) => {} // refused; the server has said why
                Err(_) => session.server_gone(ctx),
            },
        ));
    }

    fn talk(&mut self, me: &str, to: &str, text: &str, ctx: &mut Context<Self>) {
        let event = Event::Talk { from: me, text };
        let key = fold_name(to);
        if let Some(peer) = self.peers.get(&*key) {
            if peer.send(&event).is_ok() {
                return;
            }
            // That user has gone; someone else may have taken the name since.
            self.peers.remove(&*key);
        }
        let key = key.into_owned();
        if !is_valid_name(to) {
            return self.reply(&Event::Error(ErrorKind::NoSuchUser, to));
        }
        let (me, to, text) = (me.to_owned(), to.to_owned(), text.to_owned());
        let resolve = Resolve { name: to.clone() };
        ctx.wait(wrap_future(self.context.server.send(resolve)).map(
            move |result, session: &mut Self, ctx| {
                match result {
                    Ok(Some(peer))
                        if peer
                            .send(&Event::Talk {
                                from: &me,
                                text: &text,
                            })
                            .is_ok() =>
                    {
                        session.remember(key, peer);
                    }
                    Ok(_) => session.reply(&Event::Error(ErrorKind::NoSuchUser, &to)),
                    Err(_) => session.server_gone(ctx),
                }
            },
        ));
    }

    fn remember(&mut self, key: String, peer: Outbox) {
        if self.peers.len() >= MAX_CACHED_PEERS {
            self.peers.retain(|_, outbox| !outbox.is_closed());
            if self.peers.len() >= MAX_CACHED_PEERS {
                self.peers.clear();
            }
        }
        self.peers.insert(key.into_boxed_str(), peer);
    }

    /// Tells the server this connection is gone, once.
    fn unregister(&mut self, reason: &'static str) {
        if std::mem::take(&mut self.registered) {
            let conn = self.conn;
            self.context.server.do_send(Disconnect { conn, reason });
        }
    }

    /// Starts a graceful close: everything queued is flushed, then `bye` (with `reason`, if
    /// any), then the connection closes. If the peer will not take the bytes within the grace
    /// period, the close is forced.
    fn close(&mut self, reason: Option<ByeReason>, ctx: &mut Context<Self>, why: &'static str) {
        if self.closing {
            return;
        }
        self.closing = true;
        debug!("conn {} from {} closing: {why}", self.conn, self.peer);
        self.unregister(why);
        self.outbox.close(Some(Event::Bye(reason)));
        ctx.run_later(self.context.close_grace, |session, _| {
            session.outbox.abort(ByeReason::Timeout)
        });
    }

    fn server_gone(&mut self, ctx: &mut Context<Self>) {
        self.close(Some(ByeReason::Shutdown), ctx, "chat server stopped");
    }

    fn writer_ended(&mut self, end: WriterEnd, ctx: &mut Context<Self>) {
        self.writer_done = true;
        self.closing = true;
        match end {
            WriterEnd::Closed if !self.input_done => {
                // Keep draining input for a moment so the peer reads our last lines.
                ctx.run_later(CLOSE_LINGER, |_, ctx| ctx.stop());
                return;
            }
            WriterEnd::Closed => {}
            WriterEnd::Aborted(ByeReason::TooSlow) => {
                info!("conn {} from {} cut off: too slow", self.conn, self.peer);
                self.unregister("too slow to read");
            }
            WriterEnd::Aborted(_) => self.unregister("did not close in time"),
            WriterEnd::Failed(error) => {
                debug!("conn {} write failed: {error}", self.conn);
                self.unregister("connection lost");
            }
        }
        ctx.stop();
    }

    /// Sends `ping` after a silence, closes after a longer one, and closes connections that do
    /// not log in in time. One timer per session, re-armed for the next deadline.
    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        if self.user.is_none() && now >= self.started_at + self.context.login_timeout {
            return self.close(Some(ByeReason::Timeout), ctx, "no login in time");
        }
        let silence = now.saturating_duration_since(self.last_heard);
        if silence >= self.context.timeout {
            return self.close(Some(ByeReason::Timeout), ctx, "silent too long");
        }
        if silence >= self.context.ping_after && !self.pinged {
            self.pinged = true;
            self.reply(&Event::Ping);
        }
        let mut next = if self.pinged {
            self.last_heard + self.context.timeout
        } else {
            self.last_heard + self.context.ping_after
        };
        if self.user.is_none() {
            next = next.min(self.started_at + self.context.login_timeout);
        }
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        ctx.run_later(wait, Self::check_liveness);
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.check_liveness(ctx);
    }
}

impl StreamHandler<Result<Frame, std::io::Error>> for Session {
    fn handle(&mut self, frame: Result<Frame, std::io::Error>, ctx: &mut Self::Context) {
        if self.closing {
            return; // draining input while our last lines go out
        }
        match frame {
            Ok(frame) => self.handle_frame(frame, ctx),
            Err(error) => {
                debug!("conn {} read failed: {error}", self.conn);
                self.input_done = true;
                self.close(None, ctx, "read failed");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.input_done = true;
        if self.writer_done {
            ctx.stop();
        } else {
            // The peer has finished sending; flush what we owe it, then close.
            self.close(None, ctx, "peer closed");
        }
    }
}

/// The connection's writer has finished (see [`Session::writer_ended`]).
#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded(WriterEnd);

impl Handler<WriterEnded> for Session {
    type Result = ();

    fn handle(&mut self, WriterEnded(end): WriterEnded, ctx: &mut Self::Context) {
        self.writer_ended(end, ctx);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Normally already done (then these do nothing); this covers a session that panicked
        // or whose arbiter stopped: the server forgets the user, and the writer task ends.
        self.unregister("session ended");
        self.outbox.abort(ByeReason::Shutdown);
    }
}

/// The connection's lines, with a read buffer only while there is input to read: whenever the
/// socket has nothing more and no partial line is buffered, the buffer is freed, and it is
/// allocated again when the next bytes arrive. For 10,000 idle connections that is the
/// difference between 20 MB of empty buffers and none.
struct LineStream<R>(FramedRead<R, LineCodec>);

impl<R: AsyncRead + Unpin> Stream for LineStream<R> {
    type Item = Result<Frame, std::io::Error>;

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
