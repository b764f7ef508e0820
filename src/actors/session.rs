//! The `Session` actor: one per connection, the protocol spoken over a
//! [`Connection`](crate::connection::Connection). It sees parsed frames and an outbox, never a
//! socket: it logs the client in, enforces the per-connection guards (heartbeat, login deadline,
//! flood control), runs commands through the [`ChatServer`], and keeps the direct-message cache.
//!
//! Its lifecycle is one [`Phase`]: awaiting login → (logging in) → active → draining →
//! lingering. Every way out — `exit`, a timeout, a flood, a slow reader, a lost connection, the
//! server stopping — is a [`CloseCause`], which gives both the `bye|REASON` the client gets and
//! the text the log shows, and takes the one exit path, [`Session::depart`].
//!
//! Ordering: a session sends the server at most one request at a time and stops reading until
//! it is answered (`ctx.wait`), so its commands take effect in the order typed and the server's
//! mailbox holds at most one message per connection. Direct messages skip the server after the
//! first: the recipient's [`Outbox`] is resolved once and cached, and since every later message
//! takes that same path, they arrive in the order sent. A cached outbox belongs to one
//! connection, so it can never deliver to a different user who later takes the same name; when
//! its user is gone, sending fails and the session asks the server again.
//!
//! Passwords (`login|NAME|PASSWORD`, `register`, `passwd`) are checked here, with input paused
//! as for any command: the plaintext refusal, the throttle, the account's lookup in the store
//! and the hash on the shared [`HashPool`], off the actor threads (see `crate::accounts`). The
//! active phase says whether the login is to an account ([`LoginKind`]).
//!
//! A new command: its verb in the codec's table and a [`Request`] variant, then one arm in
//! [`Session::execute`] (and a `ChatServer` message if it touches who is online or the rooms).
//!
//! Time is tokio's [`Instant`] and actix's timers, so tests run the heartbeat and the login
//! deadline under `tokio::time::pause()`.

use rustc_hash::FxHashMap;
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use actix::{fut::wrap_future, prelude::*};
use log::{debug, info};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod replay;

use super::chat_server::{
    AccountRemoved, ChatServer, ConnId, Disconnect, Identity, IsMember, Join, Leave, ListRooms,
    Login, Names, Registered, Reserve, Resolve, Resolved, Say, Upgrade, Who,
};
use crate::{
    accounts::{
        hashing::{HashPool, Hasher, PoolBusy},
        password_problem,
        throttle::Throttle,
        LoginKind, STORE_WAIT,
    },
    codec::{
        fold_name, is_valid_name, ByeReason, ErrorKind, Event, EventVerb, Frame, ParseError,
        Password, Request, Verb,
    },
    config::{PlaintextPasswords, Registration, Settings},
    connection::{Connection, Input, Security, Transport},
    flood::{FloodControl, Verdict},
    metrics::{Delivered, Departure, LineKind, Metrics},
    outbox::{self, Outbox, WriterEnd},
    server::Slot,
    store::{Conversation, NewMessage, StoreError, StoreHandle, StoredMessage},
};

/// Direct-message recipients a session remembers; past this, forgotten ones are looked up again.
const MAX_CACHED_PEERS: usize = 64;

/// Longest a `history` request may hold up the session's other commands: past it, the answer is
/// `error|store-unavailable`, and the session reads on.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest a `talk` to an offline user may wait for the store to commit it: past it, the answer
/// is `error|store-unavailable|NAME` (the message may still be stored later, but `queued` is
/// never said of a message that is not).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest a throttled password attempt holds its connection's input (see
/// [`Session::hold_input`]): long enough that a client hammering guesses is answered about once
/// a second, short enough that the heartbeat and a shutdown are never kept waiting long.
const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// What every session needs to know, shared by all of them.
pub(crate) struct SessionContext {
    pub(crate) server: Addr<ChatServer>,
    pub(crate) settings: Settings,
    /// How every session's outbox judges its client, and the budget they share.
    pub(crate) outbound: Arc<outbox::Limits>,
    pub(crate) pending: PendingLogins,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Where delivered direct messages are kept, if anywhere; also where accounts live.
    pub(crate) store: Option<StoreHandle>,
    /// Where passwords are hashed and checked: off the actor threads, one per core.
    pub(crate) hashing: Arc<HashPool>,
    /// Wrong passwords, per account and per address.
    pub(crate) throttle: Arc<Throttle>,
    /// The server's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// How a login to an account, a registration or a password change came out, before the
/// session acts on it.
enum AuthOutcome {
    /// The `ChatServer` logged the session in as this name.
    LoggedIn(Arc<str>, LoginKind),
    /// The `ChatServer` refused the login and has told the client why.
    Refused,
    /// The password was changed.
    Changed,
    /// A wrong password, or no such account.
    BadPassword,
    /// Answer `error|KIND|NAME` (`error|rate-limited|VERB`).
    Error(ErrorKind),
    /// The `ChatServer` is gone: the session closes.
    ServerGone,
}

impl From<PoolBusy> for AuthOutcome {
    fn from(_: PoolBusy) -> AuthOutcome {
        AuthOutcome::Error(ErrorKind::RateLimited)
    }
}

impl From<StoreError> for AuthOutcome {
    fn from(error: StoreError) -> AuthOutcome {
        debug!("account lookup failed: {error}");
        AuthOutcome::Error(ErrorKind::StoreUnavailable)
    }
}

/// How a `talk` whose recipient was not in the session's cache came out.
enum TalkOutcome {
    Online(Outbox),
    /// The recipient is offline; whether the store kept the message for their account.
    Queued(Result<bool, StoreError>),
    Unknown,
    ServerGone,
}

/// How a `history` request came out, before it is written to the client.
enum HistoryOutcome {
    Found(Result<Vec<StoredMessage>, StoreError>),
    NotMember(String),
    ServerGone,
}

/// Connections that have not logged in yet, oldest first: past `limits.max_pending_logins`,
/// the oldest is closed (`bye|timeout`) to make room, so that connecting without logging in
/// cannot hold every slot for the length of the login deadline.
pub(crate) struct PendingLogins {
    max: usize,
    waiting: Mutex<BTreeMap<ConnId, Addr<Session>>>,
}

impl PendingLogins {
    pub(crate) fn new(max: usize) -> PendingLogins {
        PendingLogins {
            max,
            waiting: Mutex::new(BTreeMap::new()),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, BTreeMap<ConnId, Addr<Session>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self, conn: ConnId, session: Addr<Session>) {
        let evicted = {
            let mut waiting = self.waiting();
            waiting.insert(conn, session);
            if waiting.len() > self.max {
                waiting.pop_first()
            } else {
                None
            }
        };
        if let Some((_, oldest)) = evicted {
            oldest.do_send(Evicted);
        }
    }

    fn leave(&self, conn: ConnId) {
        self.waiting().remove(&conn);
    }
}

/// Too many connections are waiting to log in, and this one has waited longest.
#[derive(Message)]
#[rtype(result = "()")]
struct Evicted;

impl Handler<Evicted> for Session {
    type Result = ();

    fn handle(&mut self, _: Evicted, ctx: &mut Self::Context) {
        if let Phase::AwaitingLogin = self.phase {
            self.close(CloseCause::NoLogin, ctx);
        }
    }
}

/// Where a session is in its life.
#[derive(Debug)]
enum Phase {
    /// Connected; must log in before the login deadline.
    AwaitingLogin,
    /// A login is under way: a password being checked or an account being made (input
    /// paused), then the login with the `ChatServer`, which may now know this connection.
    LoggingIn,
    /// Logged in as this name, as a guest or to the account of that name.
    Active { name: Arc<str>, kind: LoginKind },
    /// Closing: what is queued, then the farewell, is being flushed; input is dropped.
    Draining,
    /// Everything is written and our side shut down; input is read and dropped for a moment
    /// (see [`Connection::linger`]), then the session ends.
    Lingering,
}

impl Phase {
    /// Whether the `ChatServer` may know this connection and must be told when it goes.
    fn known_to_server(&self) -> bool {
        matches!(self, Phase::LoggingIn | Phase::Active { .. })
    }

    /// Whether the session still serves the client (it is not closing).
    fn is_open(&self) -> bool {
        matches!(
            self,
            Phase::AwaitingLogin | Phase::LoggingIn | Phase::Active { .. }
        )
    }
}

/// Why a session ended: the `bye` the client is told and the reason the log gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The client said `exit`.
    Exit,
    /// The client finished sending (half-close or close).
    PeerClosed,
    /// Reading from the client failed.
    ReadFailed,
    /// Far over the line rate for too long.
    Flood,
    /// No line within the heartbeat timeout.
    Silent,
    /// No login within the login deadline.
    NoLogin,
    /// The server is shutting down.
    Shutdown,
    /// The `ChatServer` is gone.
    ServerGone,
    /// The client's queued output passed the cap.
    TooSlow,
    /// A closing connection did not take its last lines within the grace period.
    FlushTimeout,
    /// Writing to the client failed.
    WriteFailed,
    /// The session ended without closing (its arbiter stopped, or it panicked).
    Dropped,
    /// The account it was logged in to was removed.
    AccountRemoved,
}

impl CloseCause {
    /// The `REASON` of the `bye` the client is told, if any.
    fn bye_reason(self) -> Option<ByeReason> {
        match self {
            CloseCause::Exit
            | CloseCause::PeerClosed
            | CloseCause::ReadFailed
            | CloseCause::WriteFailed
            | CloseCause::Dropped => None,
            CloseCause::Flood => Some(ByeReason::Flood),
            CloseCause::Silent | CloseCause::NoLogin | CloseCause::FlushTimeout => {
                Some(ByeReason::Timeout)
            }
            CloseCause::Shutdown | CloseCause::ServerGone => Some(ByeReason::Shutdown),
            CloseCause::TooSlow => Some(ByeReason::TooSlow),
            CloseCause::AccountRemoved => Some(ByeReason::AccountRemoved),
        }
    }

    /// The `reason` it counts under in the metrics: its `bye` reason, if it has one.
    fn departure(self) -> Departure {
        match (self.bye_reason(), self) {
            (Some(reason), _) => Departure::Bye(reason),
            (None, CloseCause::Exit) => Departure::Exit,
            (None, CloseCause::PeerClosed) => Departure::Peer,
            (None, _) => Departure::Error,
        }
    }

    /// How a writer that gave up ended the session.
    fn of_writer(end: &WriterEnd) -> CloseCause {
        match end {
            WriterEnd::Closed => CloseCause::PeerClosed,
            WriterEnd::Aborted(ByeReason::TooSlow) => CloseCause::TooSlow,
            WriterEnd::Aborted(ByeReason::Timeout) => CloseCause::FlushTimeout,
            WriterEnd::Aborted(_) => CloseCause::Dropped,
            WriterEnd::Failed(_) => CloseCause::WriteFailed,
        }
    }
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseCause::Exit => "said exit",
            CloseCause::PeerClosed => "peer closed",
            CloseCause::ReadFailed => "read failed",
            CloseCause::Flood => "flooding",
            CloseCause::Silent => "silent too long",
            CloseCause::NoLogin => "no login in time",
            CloseCause::Shutdown => "server shutting down",
            CloseCause::ServerGone => "chat server stopped",
            CloseCause::TooSlow => "too slow to read",
            CloseCause::FlushTimeout => "did not close in time",
            CloseCause::WriteFailed => "connection lost",
            CloseCause::Dropped => "session ended",
            CloseCause::AccountRemoved => "account removed",
        })
    }
}

/// When the client was last heard from, and whether it has been pinged since.
#[derive(Debug, Clone, Copy)]
enum Liveness {
    Heard(Instant),
    Pinged(Instant),
}

/// One client connection.
pub(crate) struct Session {
    conn: ConnId,
    peer: SocketAddr,
    /// Whether passwords may cross this connection (see [`Session::passwords_allowed`]).
    security: Security,
    context: Arc<SessionContext>,
    connection: Connection,
    phase: Phase,
    /// Direct-message recipients by folded name. Looked up for every direct message, so with
    /// a fast hash rather than SipHash: the keys are names this client chose, so a client that
    /// picked colliding names would only slow itself.
    peers: FxHashMap<Box<str>, Outbox>,
    started_at: Instant,
    liveness: Liveness,
    /// Boxed: most of a session's size when on, and nothing to carry when off.
    flood: Option<Box<FloodControl>>,
    /// The replay of missed messages, while it runs (after a login, with a store).
    replay: Option<Box<replay::Replay>>,
    /// Held for the session's lifetime: the connection limits count live sessions.
    _slot: Slot,
}

impl Session {
    /// Opens `transport` and starts a session over it on the current arbiter.
    pub(crate) async fn serve<T: Transport>(
        transport: T,
        conn: ConnId,
        peer: SocketAddr,
        context: Arc<SessionContext>,
        slot: Slot,
    ) {
        let security = transport.security();
        match transport.open().await {
            Ok((reader, writer)) => {
                debug!("conn {conn} from {peer}: {security:?}");
                Session::create(move |ctx| {
                    let limits = &context.settings.limits;
                    let connection = Connection::start(
                        reader,
                        writer,
                        limits.max_line_bytes,
                        context.outbound.clone(),
                        ctx,
                    );
                    let now = Instant::now();
                    Session {
                        conn,
                        peer,
                        security,
                        flood: limits
                            .flood
                            .map(|limit| Box::new(FloodControl::new(limit, now))),
                        connection,
                        context,
                        phase: Phase::AwaitingLogin,
                        peers: FxHashMap::default(),
                        started_at: now,
                        liveness: Liveness::Heard(now),
                        replay: None,
                        _slot: slot,
                    }
                });
            }
            Err(error) => {
                context.metrics.departed(Departure::Error);
                debug!("{peer}: cannot open the connection: {error}");
            }
        }
    }

    /// Queues a reply to this client. A failure means the connection is closing, which the
    /// writer reports on its own.
    fn reply(&self, event: &Event<'_>) {
        let _ = self.connection.outbox().send(event);
    }

    /// Every line, over-long ones included, is a sign of life; every frame, skipped input
    /// included, counts against the flood budget.
    fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let parsed = match &frame {
            Frame::Line(line) => Some(Request::parse(line)),
            Frame::TooLong => None,
            Frame::Skipped => return self.meter_skipped(now, ctx),
        };
        self.context.metrics.line_received(match parsed {
            Some(Ok(request)) => LineKind::Verb(request.verb()),
            Some(Err(ParseError::BadArguments(verb) | ParseError::BadText(verb))) => {
                LineKind::Verb(verb)
            }
            Some(Err(ParseError::UnknownCommand(_) | ParseError::BadEncoding)) => LineKind::Unknown,
            None => LineKind::TooLong,
        });
        self.liveness = Liveness::Heard(now);
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
            Verdict::Disconnect => return self.close(CloseCause::Flood, ctx),
        }
        match parsed {
            Some(Ok(request)) => self.execute(request, ctx),
            Some(Err(error)) => {
                debug!("conn {}: {:?}", self.conn, error);
                self.reply(&error.to_event());
            }
            None => {
                let max = self.context.settings.limits.max_line_bytes.to_string();
                self.reply(&Event::Error(ErrorKind::LineTooLong, &max));
            }
        }
    }

    /// An empty line, or more of an over-long one: nothing to answer (an answer per newline
    /// would let a client amplify its flood), but it costs a line of budget.
    fn meter_skipped(&mut self, now: Instant, ctx: &mut Context<Self>) {
        let verdict = self
            .flood
            .as_mut()
            .map_or(Verdict::Allow, |flood| flood.check(now));
        if verdict == Verdict::Disconnect {
            self.close(CloseCause::Flood, ctx);
        }
    }

    fn execute(&mut self, request: Request<'_>, ctx: &mut Context<Self>) {
        let conn = self.conn;
        let Phase::Active { name: me, kind } = &self.phase else {
            return match request {
                Request::Login { name, .. } | Request::Register { name, .. }
                    if !is_valid_name(name) =>
                {
                    if matches!(request, Request::Login { .. }) {
                        self.context.metrics.login_failed();
                    }
                    self.reply(&Event::Error(ErrorKind::BadName, name))
                }
                Request::Login {
                    name,
                    password: None,
                } => self.login(name, ctx),
                Request::Login {
                    name,
                    password: Some(password),
                } => self.login_to_account(name, password, ctx),
                Request::Register { name, password } => self.register(name, password, None, ctx),
                Request::Ping => self.reply(&Event::Pong),
                Request::Pong => {}
                Request::Exit => self.close(CloseCause::Exit, ctx),
                other => self.reply(&Event::Error(ErrorKind::NotLoggedIn, other.verb().as_str())),
            };
        };
        let (me, kind) = (me.clone(), *kind);
        match request {
            // A guest may register the name it is using (the client's `/register`).
            Request::Register { name, password }
                if kind == LoginKind::Guest && fold_name(name) == fold_name(&me) =>
            {
                self.register(name, password, Some(conn), ctx)
            }
            Request::Login { .. } | Request::Register { .. } => {
                self.reply(&Event::Error(ErrorKind::AlreadyLoggedIn, &me))
            }
            Request::Passwd { old, new } => self.passwd(&me, kind, old, new, ctx),
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
            // An invalid name cannot be a room; the server's answer covers it.
            Request::Names { room } => self.ask(
                Names {
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
                    read_at: self.read_at(),
                },
                ctx,
            ),
            Request::Ping => self.reply(&Event::Pong),
            Request::Pong => {}
            Request::Exit => self.close(CloseCause::Exit, ctx),
            Request::History {
                target,
                count,
                before,
            } => self.history(&me, target, count, before, ctx),
        }
    }

    /// `history|TARGET|N[|BEFORE_ID]`: a room's (members only) or a conversation's (the asker
    /// is one party by construction) last N messages. Input waits for the answer, as for any
    /// command, but at most [`HISTORY_TIMEOUT`].
    fn history(
        &mut self,
        me: &str,
        target: &str,
        count: u64,
        before: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let Some(store) = self.context.store.clone() else {
            return self.reply(&Event::Error(ErrorKind::NoHistory, target));
        };
        let page = 1..=store.max_history_page() as u64;
        if !page.contains(&count) || before == Some(0) {
            return self.reply(&Event::Error(
                ErrorKind::BadArguments,
                Verb::History.as_str(),
            ));
        }
        let (conversation, room) = match target.strip_prefix('#') {
            Some(room) if is_valid_name(room) => (Conversation::room(room), Some(room.to_owned())),
            None if is_valid_name(target) => (Conversation::direct(me, target), None),
            _ => return self.reply(&Event::Error(ErrorKind::BadName, target)),
        };
        // Both fit: `count` is at most `store.max_history_page`.
        let limit = u32::try_from(count).unwrap_or(u32::MAX);
        let before = before.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let server = self.context.server.clone();
        let conn = self.conn;
        let asked = async move {
            if let Some(room) = room {
                match server
                    .send(IsMember {
                        conn,
                        room: room.clone(),
                    })
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return HistoryOutcome::NotMember(room),
                    Err(_) => return HistoryOutcome::ServerGone,
                }
            }
            HistoryOutcome::Found(
                store
                    .history(conversation, limit, before, HISTORY_TIMEOUT)
                    .await,
            )
        };
        let target = target.to_owned();
        ctx.wait(
            wrap_future(asked).map(move |outcome, session: &mut Self, ctx| match outcome {
                HistoryOutcome::Found(Ok(messages)) => {
                    let mut lines = bytes::BytesMut::new();
                    for message in &messages {
                        Event::Hist {
                            target: &target,
                            id: u64::try_from(message.id).unwrap_or_default(),
                            time: &message.time(),
                            from: &message.sender,
                            text: &message.text,
                        }
                        .encode(&mut lines);
                    }
                    Event::End {
                        verb: Verb::History,
                        target: &target,
                        count: messages.len() as u64,
                    }
                    .encode(&mut lines);
                    let metrics = &session.context.metrics;
                    metrics.events_sent(EventVerb::Hist, messages.len());
                    metrics.events_sent(EventVerb::End, 1);
                    let _ = session.connection.outbox().send_line(&lines);
                }
                HistoryOutcome::Found(Err(StoreError::NotInConversation(_))) => session.reply(
                    &Event::Error(ErrorKind::BadArguments, Verb::History.as_str()),
                ),
                HistoryOutcome::Found(Err(error)) => {
                    debug!("conn {}: history of {target}: {error}", session.conn);
                    session.reply(&Event::Error(ErrorKind::StoreUnavailable, &target));
                }
                HistoryOutcome::NotMember(room) => {
                    session.reply(&Event::Error(ErrorKind::NotInRoom, &room))
                }
                HistoryOutcome::ServerGone => session.server_gone(ctx),
            }),
        );
    }

    /// Hands a delivered direct message to the store, if there is one; never waits.
    fn keep_direct(&self, me: &str, to: &str, text: &str) {
        if let Some(store) = &self.context.store {
            store.keep(NewMessage::direct(me, to, text));
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

    /// `login|NAME`: as a guest, under a name that is free and not registered.
    fn login(&mut self, name: &str, ctx: &mut Context<Self>) {
        self.phase = Phase::LoggingIn;
        let login = self.login_message(name, Identity::Guest);
        ctx.wait(wrap_future(self.context.server.send(login)).map(
            |result, session: &mut Self, ctx| match result {
                Ok(Some(name)) => session.logged_in(name, LoginKind::Guest),
                // Refused; the server has said why.
                Ok(None) => session.phase = Phase::AwaitingLogin,
                Err(_) => session.server_gone(ctx),
            },
        ));
    }

    fn login_message(&self, name: &str, kind: Identity) -> Login {
        Login {
            conn: self.conn,
            peer: self.peer,
            name: name.to_owned(),
            outbox: self.connection.outbox().clone(),
            kind,
        }
    }

    fn logged_in(&mut self, name: Arc<str>, kind: LoginKind) {
        self.context.pending.leave(self.conn);
        self.phase = Phase::Active { name, kind };
    }

    /// Whether a password may be taken over this connection: it is encrypted, or it comes
    /// from this machine, or the operator allows plain text from anywhere.
    fn passwords_allowed(&self) -> bool {
        self.security == Security::Encrypted
            || self.peer.ip().to_canonical().is_loopback()
            || self.context.settings.auth.plaintext_passwords == PlaintextPasswords::Allowed
    }

    /// The password checks every verb that carries one starts with: `tls-required` over plain
    /// text from another machine, then `rate-limited` while the account or the address is
    /// throttled. Answers and returns `false` if the request goes no further.
    fn may_try_password(&self, verb: Verb, name: &str, ctx: &mut Context<Self>) -> bool {
        let refused = || {
            if verb == Verb::Login {
                self.context.metrics.login_failed();
            }
        };
        if !self.passwords_allowed() {
            refused();
            self.reply(&Event::Error(ErrorKind::TlsRequired, verb.as_str()));
            return false;
        }
        let back_off = match verb {
            Verb::Login | Verb::Passwd => self
                .context
                .throttle
                .blocked(self.peer.ip(), &fold_name(name)),
            _ => None,
        };
        if let Some(back_off) = back_off {
            refused();
            self.reply(&Event::Error(ErrorKind::RateLimited, verb.as_str()));
            self.hold_input(back_off, ctx);
            return false;
        }
        true
    }

    /// After refusing a throttled password attempt, reads nothing more from this connection
    /// until the back-off is over, or [`THROTTLED_PAUSE`] has passed, or the server shuts down.
    /// A refusal is cheap, but a client that sends its next guess as soon as it is refused
    /// would otherwise be answered as fast as it can send: 200 such clients made the server
    /// write 5,000 refusals a second, which took enough of the cores to make other users'
    /// direct messages five times slower. Held, each is answered about once a second, and what
    /// it sends meanwhile waits in its own socket buffer (a client that never stops sending is
    /// still metered by flood control when its lines are read). The answer itself is not
    /// delayed: a person who mistyped learns at once that they must wait.
    fn hold_input(&self, back_off: Duration, ctx: &mut Context<Self>) {
        let pause = back_off.min(THROTTLED_PAUSE);
        let shutdown = self.context.shutdown.clone();
        ctx.wait(wrap_future(async move {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {}
            }
        }));
    }

    /// `login|NAME|PASSWORD`: checks the password against the account (on the hashing pool),
    /// then logs in through the `ChatServer`. A wrong password and an unknown account take the
    /// same time and get the same answer, `bad-password|NAME`.
    fn login_to_account(&mut self, name: &str, password: Password<'_>, ctx: &mut Context<Self>) {
        if !self.may_try_password(Verb::Login, name, ctx) {
            return;
        }
        self.phase = Phase::LoggingIn;
        let store = self.context.store.clone();
        let hashing = self.context.hashing.clone();
        let server = self.context.server.clone();
        let login = self.login_message(name, Identity::Account(ctx.address().recipient()));
        let shown = name.to_owned();
        let (name, password) = (name.to_owned(), password.expose().to_owned());
        let attempt = async move {
            let account = match &store {
                Some(store) => store.account(&name, STORE_WAIT).await?,
                None => None,
            };
            let matches = hashing
                .run(move |hasher: &mut Hasher| match account {
                    Some(account) => hasher.verify(&password, &account.password_hash),
                    None => {
                        hasher.verify_nothing(&password);
                        false
                    }
                })
                .await?;
            if !matches {
                return Ok(AuthOutcome::BadPassword);
            }
            Ok::<_, AuthOutcome>(match server.send(login).await {
                Ok(Some(name)) => AuthOutcome::LoggedIn(name, LoginKind::Account),
                Ok(None) => AuthOutcome::Refused,
                Err(_) => AuthOutcome::ServerGone,
            })
        };
        self.authenticate(Verb::Login, shown, attempt, ctx);
    }

    /// `register|NAME|PASSWORD`: reserves the name with the `ChatServer`, hashes the password
    /// (on the hashing pool), makes the account in the store and logs in to it. `guest` is this
    /// connection when a guest registers the name it is using: it then stays logged in, to the
    /// account now.
    fn register(
        &mut self,
        name: &str,
        password: Password<'_>,
        guest: Option<ConnId>,
        ctx: &mut Context<Self>,
    ) {
        if !self.may_try_password(Verb::Register, name, ctx) {
            return;
        }
        let open = self.context.settings.auth.registration == Registration::Open;
        let Some(store) = self.context.store.clone().filter(|_| open) else {
            // Without a store there is nowhere to keep an account: closed too.
            return self.reply(&Event::Error(ErrorKind::RegistrationClosed, name));
        };
        if password_problem(password.expose()).is_some() {
            return self.reply(&Event::Error(ErrorKind::WeakPassword, name));
        }
        if guest.is_none() {
            self.phase = Phase::LoggingIn;
        }
        let hashing = self.context.hashing.clone();
        let server = self.context.server.clone();
        let login = self.login_message(name, Identity::Account(ctx.address().recipient()));
        let upgrade = guest.map(|conn| Upgrade {
            conn,
            session: ctx.address().recipient(),
        });
        let shown = name.to_owned();
        let (name, password) = (name.to_owned(), password.expose().to_owned());
        let attempt = async move {
            let reserve = Reserve {
                name: name.clone(),
                guest,
            };
            match server.send(reserve).await {
                Ok(Ok(())) => {}
                Ok(Err(kind)) => return Err(AuthOutcome::Error(kind)),
                Err(_) => return Err(AuthOutcome::ServerGone),
            }
            let made = async {
                let hash = hashing
                    .run(move |hasher: &mut Hasher| hasher.hash(&password))
                    .await?
                    .map_err(|error| {
                        debug!("{error}");
                        AuthOutcome::Error(ErrorKind::StoreUnavailable)
                    })?;
                Ok::<_, AuthOutcome>(store.create_account(&name, hash, STORE_WAIT).await?)
            }
            .await;
            let created = matches!(made, Ok(true));
            server.do_send(Registered {
                name: name.clone(),
                created,
            });
            match made {
                Ok(true) => {}
                // Registered meanwhile, by the operator or another server on the same store.
                Ok(false) => return Err(AuthOutcome::Error(ErrorKind::NameTaken)),
                Err(outcome) => return Err(outcome),
            }
            if let Some(upgrade) = upgrade {
                return Ok(match server.send(upgrade).await {
                    Ok(Some(name)) => AuthOutcome::LoggedIn(name, LoginKind::Account),
                    Ok(None) => AuthOutcome::Refused,
                    Err(_) => AuthOutcome::ServerGone,
                });
            }
            Ok(match server.send(login).await {
                Ok(Some(name)) => AuthOutcome::LoggedIn(name, LoginKind::Account),
                Ok(None) => AuthOutcome::Refused,
                Err(_) => AuthOutcome::ServerGone,
            })
        };
        self.authenticate(Verb::Register, shown, attempt, ctx);
    }

    /// `passwd|OLD|NEW`, logged in to the account `me`: checks OLD like a login (a wrong one
    /// counts toward the throttle), then stores the hash of NEW.
    fn passwd(
        &mut self,
        me: &str,
        kind: LoginKind,
        old: Password<'_>,
        new: Password<'_>,
        ctx: &mut Context<Self>,
    ) {
        if !self.may_try_password(Verb::Passwd, me, ctx) {
            return;
        }
        if kind == LoginKind::Guest {
            // A guest has no password to change.
            let verb = Verb::Passwd.as_str();
            return self.reply(&Event::Error(ErrorKind::NotLoggedIn, verb));
        }
        if password_problem(new.expose()).is_some() {
            return self.reply(&Event::Error(ErrorKind::WeakPassword, me));
        }
        let Some(store) = self.context.store.clone() else {
            return self.reply(&Event::Error(ErrorKind::StoreUnavailable, me));
        };
        let hashing = self.context.hashing.clone();
        let name = me.to_owned();
        let shown = me.to_owned();
        let (old, new) = (old.expose().to_owned(), new.expose().to_owned());
        let attempt = async move {
            let account = store.account(&name, STORE_WAIT).await?;
            let hash = hashing
                .run(move |hasher: &mut Hasher| match account {
                    Some(account) if hasher.verify(&old, &account.password_hash) => {
                        hasher.hash(&new).ok()
                    }
                    Some(_) => None,
                    None => {
                        hasher.verify_nothing(&old);
                        None
                    }
                })
                .await?;
            let Some(hash) = hash else {
                return Ok(AuthOutcome::BadPassword);
            };
            Ok::<_, AuthOutcome>(match store.set_password(&name, hash, STORE_WAIT).await? {
                true => AuthOutcome::Changed,
                false => AuthOutcome::BadPassword,
            })
        };
        self.authenticate(Verb::Passwd, shown, attempt, ctx);
    }

    /// Runs a password request with input paused (as for any command), then answers it.
    /// `name` is the name the answers carry: the one the client asked for, or, for `passwd`,
    /// the one logged in as. No answer ever holds a password.
    fn authenticate(
        &mut self,
        verb: Verb,
        name: String,
        attempt: impl std::future::Future<Output = Result<AuthOutcome, AuthOutcome>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        ctx.wait(
            wrap_future(attempt).map(move |outcome, session: &mut Self, ctx| {
                let outcome = outcome.unwrap_or_else(|outcome| outcome);
                session.settle(verb, &name, outcome, ctx);
            }),
        );
    }

    /// Acts on how a password request came out.
    fn settle(&mut self, verb: Verb, name: &str, outcome: AuthOutcome, ctx: &mut Context<Self>) {
        let throttle = &self.context.throttle;
        // A refusal by the `ChatServer` (`Refused`) is counted there.
        if verb == Verb::Login
            && matches!(outcome, AuthOutcome::BadPassword | AuthOutcome::Error(_))
        {
            self.context.metrics.login_failed();
        }
        match outcome {
            AuthOutcome::LoggedIn(name, kind) => {
                throttle.succeeded(&fold_name(&name));
                self.logged_in(name.clone(), kind);
                // What was sent to the account while it was away (a new account has nothing).
                if verb == Verb::Login && kind == LoginKind::Account {
                    self.start_replay(name, ctx);
                }
                return;
            }
            AuthOutcome::Refused => {}
            AuthOutcome::Changed => {
                throttle.succeeded(&fold_name(name));
                self.reply(&Event::PasswordChanged);
            }
            AuthOutcome::BadPassword => {
                throttle.failed(self.peer.ip(), &fold_name(name), name);
                self.reply(&Event::Error(ErrorKind::BadPassword, name));
            }
            AuthOutcome::Error(ErrorKind::RateLimited) => {
                // The hashing queue is full: held like a throttled attempt, or a storm that
                // fills the queue would be answered as fast as it sends.
                self.reply(&Event::Error(ErrorKind::RateLimited, verb.as_str()));
                self.hold_input(THROTTLED_PAUSE, ctx);
            }
            AuthOutcome::Error(kind) => self.reply(&Event::Error(kind, name)),
            AuthOutcome::ServerGone => return self.server_gone(ctx),
        }
        if let Phase::LoggingIn = self.phase {
            self.phase = Phase::AwaitingLogin;
        }
    }

    fn talk(&mut self, me: &str, to: &str, text: &str, ctx: &mut Context<Self>) {
        let event = Event::Talk { from: me, text };
        let key = fold_name(to);
        let read_at = self.read_at();
        if let Some(peer) = self.peers.get(&*key) {
            if peer.send(&event).is_ok() {
                self.context.metrics.delivered(Delivered::Talk, read_at);
                return self.keep_direct(me, to, text);
            }
            // That user has gone; someone else may have taken the name since.
            self.peers.remove(&*key);
        }
        let key = key.into_owned();
        if !is_valid_name(to) {
            return self.reply(&Event::Error(ErrorKind::NoSuchUser, to));
        }
        let (me, to, text) = (me.to_owned(), to.to_owned(), text.to_owned());
        // With a store, a recipient who is offline may have an account to keep it for.
        let offline = self
            .context
            .store
            .is_some()
            .then(|| NewMessage::direct(&me, &to, &text));
        let resolve = self.context.server.send(Resolve {
            name: to.clone(),
            offline,
        });
        let resolved = async move {
            match resolve.await {
                Ok(Resolved::Online(peer)) => TalkOutcome::Online(peer),
                Ok(Resolved::Queueing(queueing)) => {
                    TalkOutcome::Queued(queueing.outcome(QUEUE_TIMEOUT).await)
                }
                Ok(Resolved::Unknown) => TalkOutcome::Unknown,
                Err(_) => TalkOutcome::ServerGone,
            }
        };
        ctx.wait(
            wrap_future(resolved).map(move |outcome, session: &mut Self, ctx| match outcome {
                TalkOutcome::Online(peer)
                    if peer
                        .send(&Event::Talk {
                            from: &me,
                            text: &text,
                        })
                        .is_ok() =>
                {
                    session.context.metrics.delivered(Delivered::Talk, read_at);
                    session.keep_direct(&me, &to, &text);
                    session.remember(key, peer);
                }
                TalkOutcome::Queued(Ok(true)) => session.reply(&Event::Queued(&to)),
                TalkOutcome::Queued(Err(error)) => {
                    debug!(
                        "conn {}: message for {to} not queued: {error}",
                        session.conn
                    );
                    session.reply(&Event::Error(ErrorKind::StoreUnavailable, &to));
                }
                TalkOutcome::Online(_) | TalkOutcome::Queued(Ok(false)) | TalkOutcome::Unknown => {
                    session.reply(&Event::Error(ErrorKind::NoSuchUser, &to))
                }
                TalkOutcome::ServerGone => session.server_gone(ctx),
            }),
        );
    }

    /// When the line being executed was read: [`Session::handle_frame`] marks the client heard
    /// at that moment, just before it executes the line (the delivery-time metric starts here).
    fn read_at(&self) -> Instant {
        let (Liveness::Heard(at) | Liveness::Pinged(at)) = self.liveness;
        at
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

    /// Starts a graceful close: everything queued is flushed, then the farewell `bye` (with the
    /// cause's reason, if any), then the connection closes. If the peer will not take the bytes
    /// within the grace period, the close is forced.
    fn close(&mut self, cause: CloseCause, ctx: &mut Context<Self>) {
        if !self.phase.is_open() {
            return;
        }
        self.depart(cause);
        let grace = self.context.settings.server.shutdown_grace;
        self.connection
            .close(Event::Bye(cause.bye_reason()), grace, ctx);
    }

    /// The one exit path: the session stops serving the client, and the `ChatServer` is told
    /// (once) that the connection is gone. Does nothing if already done.
    fn depart(&mut self, cause: CloseCause) {
        if !self.phase.is_open() {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Draining);
        debug!("conn {} from {} closing: {cause}", self.conn, self.peer);
        self.context.metrics.departed(cause.departure());
        // Before the `ChatServer` hears of it: a new login by this name follows that, and its
        // replay must start after what this connection has written.
        self.end_replay(false);
        if !matches!(phase, Phase::Active { .. }) {
            self.context.pending.leave(self.conn);
        }
        if phase.known_to_server() {
            self.context.server.do_send(Disconnect {
                conn: self.conn,
                cause,
            });
        }
    }

    fn server_gone(&mut self, ctx: &mut Context<Self>) {
        self.close(CloseCause::ServerGone, ctx);
    }

    /// The writer has finished. After a graceful close, linger; otherwise the connection is
    /// beyond saving and the session ends now.
    fn written(&mut self, end: WriterEnd, ctx: &mut Context<Self>) {
        // Whatever of the replay the socket took while the connection was closing.
        self.end_replay(true);
        if let (WriterEnd::Closed, Phase::Draining) = (&end, &self.phase) {
            self.phase = Phase::Lingering;
            return self.connection.linger(ctx);
        }
        let cause = CloseCause::of_writer(&end);
        match end {
            WriterEnd::Aborted(ByeReason::TooSlow) => {
                info!("conn {} from {} cut off: too slow", self.conn, self.peer)
            }
            WriterEnd::Failed(error) => debug!("conn {} write failed: {error}", self.conn),
            WriterEnd::Closed | WriterEnd::Aborted(_) => {}
        }
        self.depart(cause);
        ctx.stop();
    }

    /// Sends `ping` after a silence, closes after a longer one, and closes connections that do
    /// not log in in time. One timer per session, re-armed for the next deadline.
    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        if !self.phase.is_open() {
            return;
        }
        let heartbeat = &self.context.settings.heartbeat;
        let now = Instant::now();
        let login_deadline = match self.phase {
            Phase::Active { .. } => None,
            _ => Some(self.started_at + heartbeat.login_timeout),
        };
        if login_deadline.is_some_and(|deadline| now >= deadline) {
            return self.close(CloseCause::NoLogin, ctx);
        }
        let (Liveness::Heard(heard) | Liveness::Pinged(heard)) = self.liveness;
        if now >= heard + heartbeat.timeout {
            return self.close(CloseCause::Silent, ctx);
        }
        if let Liveness::Heard(heard) = self.liveness {
            if now >= heard + heartbeat.interval {
                self.liveness = Liveness::Pinged(heard);
                self.reply(&Event::Ping);
            }
        }
        let next = match self.liveness {
            Liveness::Heard(heard) => heard + heartbeat.interval,
            Liveness::Pinged(heard) => heard + heartbeat.timeout,
        };
        let next = login_deadline.map_or(next, |deadline| next.min(deadline));
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        ctx.run_later(wait, Self::check_liveness);
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.context.pending.enter(self.conn, ctx.address());
        ctx.spawn(
            wrap_future(self.context.shutdown.clone().cancelled_owned())
                .map(|(), session: &mut Session, ctx| session.close(CloseCause::Shutdown, ctx)),
        );
        self.check_liveness(ctx);
    }
}

impl StreamHandler<Input> for Session {
    fn handle(&mut self, input: Input, ctx: &mut Self::Context) {
        match input {
            Input::Frame(frame) if self.phase.is_open() => self.handle_frame(frame, ctx),
            // Closing: dropped while our last lines go out.
            Input::Frame(_) => {}
            Input::ReadFailed(error) => {
                debug!("conn {} read failed: {error}", self.conn);
                self.close(CloseCause::ReadFailed, ctx);
            }
            // The peer has finished sending; flush what we owe it, then close.
            Input::Ended => self.close(CloseCause::PeerClosed, ctx),
            Input::Written(end) => self.written(end, ctx),
        }
    }

    /// Input has ended and the writer has finished: nothing is left to do.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<AccountRemoved> for Session {
    type Result = ();

    fn handle(&mut self, _: AccountRemoved, ctx: &mut Self::Context) {
        if let Phase::Active {
            kind: LoginKind::Account,
            ..
        } = self.phase
        {
            self.close(CloseCause::AccountRemoved, ctx);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Normally already done (then this does nothing); this covers a session that panicked
        // or whose arbiter stopped: the server forgets the user. Dropping the connection ends
        // its writer.
        self.depart(CloseCause::Dropped);
    }
}
