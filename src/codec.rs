//! The wire format, shared by the server and the client.
//!
//! Two layers live here:
//!
//! * [`LineCodec`] frames a byte stream into lines. It never fails on bad input: an over-long line
//!   becomes [`Frame::TooLong`] and is skipped up to its newline, so one bad line costs the peer an
//!   error reply, not the connection. (tokio-util's `FramedRead` ends the stream after any decode
//!   error, so only real I/O errors may surface as `Err`.)
//! * [`Request`] (client → server) and [`Event`] (server → client) are the typed protocol. Both
//!   borrow from the line they were parsed from and encode straight into an output buffer, so the
//!   hot path (a `talk` relayed to its recipient) allocates nothing per message.
//!
//! The protocol is documented, with a worked example, in `docs/PROTOCOL.md`.

use std::{borrow::Cow, fmt, io};

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::Decoder;

/// Longest user or room name, in bytes (names are ASCII).
pub const MAX_NAME_LEN: usize = 32;

/// Most connections (and most rooms) a server may be configured for, so the most names any list
/// it sends can hold.
pub const MAX_LISTED: usize = 1_000_000;

/// Longest server line a client of this crate (the terminal client, the load generator)
/// accepts; longer ones are skipped. Server lines can be long — a `users|…` list of everyone
/// online — so this is the longest list any valid server configuration can send (≈ 39 MB, only
/// ever allocated if a server sends it); beyond that a line is a runaway.
pub const MAX_SERVER_LINE: usize = max_list_reply_bytes(MAX_LISTED);

/// The most bytes a reply listing `names` users or rooms can queue at once: each name costs at
/// most `login|NAME\n` (the peer list after `ok|login|NAME`; in a comma-separated list it is
/// `NAME,`), and the most that comes with a list is the `ok|join|ROOM\n` and `members|ROOM|`
/// that a join's member list is queued with.
pub const fn max_list_reply_bytes(names: usize) -> usize {
    let entry = "login|".len() + MAX_NAME_LEN + 1;
    let header = "ok|join|".len() + MAX_NAME_LEN + 1 + "members|".len() + MAX_NAME_LEN + 1;
    names * entry + header
}

/// A user or room name in the form it is compared in: names are unique ignoring ASCII case.
/// Borrowed when it is already folded (names are mostly typed in lower case), so a lookup need
/// not allocate.
pub fn fold_name(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether `name` is a valid user or room name: 1–32 characters from `A-Z a-z 0-9 _ . -`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One unit produced by [`LineCodec`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` (or `\r\n`) terminator; never empty, never longer than
    /// the codec's limit. Not yet checked for UTF-8: that is the parser's job.
    Line(BytesMut),
    /// A line longer than the limit arrived; its bytes up to the next newline are discarded.
    TooLong,
}

/// Newline framing with a length limit.
///
/// Memory stays bounded whatever the peer sends: at most `max_line_bytes + 2` bytes of an
/// unfinished line are buffered before the line is declared too long and skipped.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line_bytes: usize,
    /// How far the current buffer has been searched for a newline, so a line that arrives in many
    /// small reads is scanned once, not once per read.
    scanned: usize,
    /// Inside an over-long line: drop bytes until the next newline.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of at most `max_line_bytes` bytes, terminator excluded.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            scanned: 0,
            discarding: false,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        loop {
            // A line of `max` bytes may be followed by `\r\n`: look no further than that.
            let window = buf.len().min(self.max_line_bytes.saturating_add(2));
            let newline = buf[self.scanned..window]
                .iter()
                .position(|&b| b == b'\n')
                .map(|offset| self.scanned + offset);

            let Some(newline) = newline else {
                if self.discarding {
                    // Still inside an over-long line: drop what was searched and look on.
                    buf.advance(window);
                    self.scanned = 0;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    continue;
                }
                if buf.len() >= self.max_line_bytes.saturating_add(2) {
                    // No newline within the limit: whatever follows, this line is too long.
                    buf.advance(window);
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong));
                }
                self.scanned = buf.len();
                return Ok(None);
            };

            let mut line = buf.split_to(newline + 1);
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                continue; // the tail of an over-long line, already reported
            }
            line.truncate(newline);
            if line.last() == Some(&b'\r') {
                line.truncate(newline - 1);
            }
            if line.len() > self.max_line_bytes {
                return Ok(Some(Frame::TooLong));
            }
            if !line.is_empty() {
                return Ok(Some(Frame::Line(line)));
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        let frame = self.decode(buf)?;
        if frame.is_none() {
            // A peer that closes mid-line: an unfinished line is never executed.
            buf.clear();
            self.scanned = 0;
            self.discarding = false;
        }
        Ok(frame)
    }
}

/// A client's command, borrowed from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `login|NAME`
    Login { name: &'a str },
    /// `talk|NAME|TEXT`
    Talk { to: &'a str, text: &'a str },
    /// `who`
    Who,
    /// `join|ROOM`
    Join { room: &'a str },
    /// `leave|ROOM`
    Leave { room: &'a str },
    /// `say|ROOM|TEXT`
    Say { room: &'a str, text: &'a str },
    /// `rooms`
    Rooms,
    /// `ping`
    Ping,
    /// `pong`
    Pong,
    /// `exit`
    Exit,
}

/// Why a line is not a valid [`Request`]; each maps to one `error|…` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The line is not UTF-8.
    BadEncoding,
    /// The verb is not one the server knows.
    UnknownCommand(&'a str),
    /// A known verb with a missing, empty or extra field.
    BadArguments(&'static str),
}

impl<'a> ParseError<'a> {
    /// The `error|…` event that answers this error.
    pub fn to_event(self) -> Event<'a> {
        match self {
            ParseError::BadEncoding => Event::Error(ErrorKind::BadEncoding, ""),
            ParseError::UnknownCommand(verb) => Event::Error(ErrorKind::UnknownCommand, verb),
            ParseError::BadArguments(verb) => Event::Error(ErrorKind::BadArguments, verb),
        }
    }

    /// The verb the line started with, as far as it could be read.
    pub fn verb(self) -> &'a str {
        match self {
            ParseError::BadEncoding => "",
            ParseError::UnknownCommand(verb) => verb,
            ParseError::BadArguments(verb) => verb,
        }
    }
}

impl<'a> Request<'a> {
    /// Parses one line (without its terminator).
    pub fn parse(line: &'a [u8]) -> Result<Request<'a>, ParseError<'a>> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::BadEncoding)?;
        let (verb, args) = match line.split_once('|') {
            Some((verb, args)) => (verb, Some(args)),
            None => (line, None),
        };
        // Fields must be present and non-empty; a final TEXT field may contain `|`.
        let one = |verb: &'static str| match args {
            Some(field) if !field.is_empty() => Ok(field),
            _ => Err(ParseError::BadArguments(verb)),
        };
        let two = |verb: &'static str| match args.and_then(|args| args.split_once('|')) {
            Some((first, rest)) if !first.is_empty() && !rest.is_empty() => Ok((first, rest)),
            _ => Err(ParseError::BadArguments(verb)),
        };
        let none = |verb: &'static str, request: Request<'a>| match args {
            None => Ok(request),
            Some(_) => Err(ParseError::BadArguments(verb)),
        };
        match verb {
            "login" => one("login").map(|name| Request::Login { name }),
            "talk" => two("talk").map(|(to, text)| Request::Talk { to, text }),
            "who" => none("who", Request::Who),
            "join" => one("join").map(|room| Request::Join { room }),
            "leave" => one("leave").map(|room| Request::Leave { room }),
            "say" => two("say").map(|(room, text)| Request::Say { room, text }),
            "rooms" => none("rooms", Request::Rooms),
            "ping" => none("ping", Request::Ping),
            "pong" => none("pong", Request::Pong),
            "exit" => none("exit", Request::Exit),
            _ => Err(ParseError::UnknownCommand(verb)),
        }
    }

    /// The command's verb, as written on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Login { .. } => "login",
            Request::Talk { .. } => "talk",
            Request::Who => "who",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Say { .. } => "say",
            Request::Rooms => "rooms",
            Request::Ping => "ping",
            Request::Pong => "pong",
            Request::Exit => "exit",
        }
    }

    /// Appends the request as one line, `\n` included.
    pub fn encode(&self, dst: &mut BytesMut) {
        let fields: &[&str] = match self {
            Request::Login { name } => &[name],
            Request::Talk { to, text } => &[to, text],
            Request::Join { room } | Request::Leave { room } => &[room],
            Request::Say { room, text } => &[room, text],
            Request::Who | Request::Rooms | Request::Ping | Request::Pong | Request::Exit => &[],
        };
        put_line(dst, self.verb(), fields);
    }

    /// The request as one line, `\n` included; for the cold paths and tests.
    pub fn to_line(&self) -> BytesMut {
        let mut line = BytesMut::new();
        self.encode(&mut line);
        line
    }
}

/// The `KIND` of an `error|KIND|ARG` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadName,
    NameTaken,
    AlreadyLoggedIn,
    NotLoggedIn,
    NoSuchUser,
    AlreadyInRoom,
    NotInRoom,
    UnknownCommand,
    BadArguments,
    LineTooLong,
    BadEncoding,
    RateLimited,
    TooManyRooms,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::BadName,
        ErrorKind::NameTaken,
        ErrorKind::AlreadyLoggedIn,
        ErrorKind::NotLoggedIn,
        ErrorKind::NoSuchUser,
        ErrorKind::AlreadyInRoom,
        ErrorKind::NotInRoom,
        ErrorKind::UnknownCommand,
        ErrorKind::BadArguments,
        ErrorKind::LineTooLong,
        ErrorKind::BadEncoding,
        ErrorKind::RateLimited,
        ErrorKind::TooManyRooms,
    ];

    /// The kind as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadName => "bad-name",
            ErrorKind::NameTaken => "name-taken",
            ErrorKind::AlreadyLoggedIn => "already-logged-in",
            ErrorKind::NotLoggedIn => "not-logged-in",
            ErrorKind::NoSuchUser => "no-such-user",
            ErrorKind::AlreadyInRoom => "already-in-room",
            ErrorKind::NotInRoom => "not-in-room",
            ErrorKind::UnknownCommand => "unknown-command",
            ErrorKind::BadArguments => "bad-arguments",
            ErrorKind::LineTooLong => "line-too-long",
            ErrorKind::BadEncoding => "bad-encoding",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::TooManyRooms => "too-many-rooms",
        }
    }

    fn from_wire(kind: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// Why the server closed a connection: the `REASON` of `bye|REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeReason {
    /// The peer did not read fast enough: its queued output passed `limits.max_outbound_bytes`.
    TooSlow,
    /// No line within the heartbeat timeout, or no login within the login timeout.
    Timeout,
    /// Far over the line rate for too long.
    Flood,
    /// `server.max_connections` reached.
    ServerFull,
    /// The server is stopping.
    Shutdown,
}

impl ByeReason {
    /// Every reason, in declaration order.
    pub const ALL: [ByeReason; 5] = [
        ByeReason::TooSlow,
        ByeReason::Timeout,
        ByeReason::Flood,
        ByeReason::ServerFull,
        ByeReason::Shutdown,
    ];

    /// The reason as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::TooSlow => "too-slow",
            ByeReason::Timeout => "timeout",
            ByeReason::Flood => "flood",
            ByeReason::ServerFull => "server-full",
            ByeReason::Shutdown => "shutdown",
        }
    }

    fn from_wire(reason: &str) -> Option<ByeReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == reason)
    }
}

impl fmt::Display for ByeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line the server sends, borrowed from wherever its fields live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `ok|login|NAME`: you are logged in as NAME.
    LoggedIn(&'a str),
    /// `ok|join|ROOM`
    Joined(&'a str),
    /// `ok|leave|ROOM`
    Left(&'a str),
    /// `login|NAME`: NAME is online.
    Online(&'a str),
    /// `logout|NAME`: NAME went offline.
    Offline(&'a str),
    /// `talk|FROM|TEXT`: a direct message.
    Talk { from: &'a str, text: &'a str },
    /// `users|A,B,C`: everyone online.
    Users(Vec<&'a str>),
    /// `members|ROOM|A,B`: a room's members, sent after `ok|join`.
    Members { room: &'a str, names: Vec<&'a str> },
    /// `join|ROOM|NAME`: NAME joined a room you are in.
    RoomJoined { room: &'a str, name: &'a str },
    /// `leave|ROOM|NAME`: NAME left a room you are in.
    RoomLeft { room: &'a str, name: &'a str },
    /// `say|ROOM|FROM|TEXT`: a room message.
    Say {
        room: &'a str,
        from: &'a str,
        text: &'a str,
    },
    /// `rooms|R1,R2`: every room that has members.
    Rooms(Vec<&'a str>),
    /// `ping`: answer with `pong`.
    Ping,
    /// `pong`: the answer to your `ping`.
    Pong,
    /// `bye` or `bye|REASON`: the server is closing the connection.
    Bye(Option<ByeReason>),
    /// `error|KIND|ARG`
    Error(ErrorKind, &'a str),
}

/// A server line that is not a valid [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised server line")]
pub struct BadEvent;

impl<'a> Event<'a> {
    /// Parses one server line (without its terminator), as [`Request::parse`] does a client's:
    /// a line that is not UTF-8 is not an event either.
    pub fn parse(line: &'a [u8]) -> Result<Event<'a>, BadEvent> {
        let line = std::str::from_utf8(line).map_err(|_| BadEvent)?;
        let (verb, args) = match line.split_once('|') {
            Some((verb, args)) => (verb, Some(args)),
            None => (line, None),
        };
        let field = || args.ok_or(BadEvent);
        let two = || field()?.split_once('|').ok_or(BadEvent);
        let list = |field: &'a str| -> Vec<&'a str> {
            if field.is_empty() {
                Vec::new()
            } else {
                field.split(',').collect()
            }
        };
        Ok(match verb {
            "ok" => match two()? {
                ("login", name) => Event::LoggedIn(name),
                ("join", room) => Event::Joined(room),
                ("leave", room) => Event::Left(room),
                _ => return Err(BadEvent),
            },
            "login" => Event::Online(field()?),
            "logout" => Event::Offline(field()?),
            "talk" => {
                let (from, text) = two()?;
                Event::Talk { from, text }
            }
            "users" => Event::Users(list(field()?)),
            "members" => {
                let (room, names) = two()?;
                Event::Members {
                    room,
                    names: list(names),
                }
            }
            "join" => {
                let (room, name) = two()?;
                Event::RoomJoined { room, name }
            }
            "leave" => {
                let (room, name) = two()?;
                Event::RoomLeft { room, name }
            }
            "say" => {
                let (room, rest) = two()?;
                let (from, text) = rest.split_once('|').ok_or(BadEvent)?;
                Event::Say { room, from, text }
            }
            "rooms" => Event::Rooms(list(field()?)),
            "ping" if args.is_none() => Event::Ping,
            "pong" if args.is_none() => Event::Pong,
            "bye" => match args {
                None => Event::Bye(None),
                Some(reason) => Event::Bye(Some(ByeReason::from_wire(reason).ok_or(BadEvent)?)),
            },
            "error" => {
                let (kind, arg) = two()?;
                Event::Error(ErrorKind::from_wire(kind).ok_or(BadEvent)?, arg)
            }
            _ => return Err(BadEvent),
        })
    }

    /// Appends the event as one line, `\n` included.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Event::LoggedIn(name) => put_line(dst, "ok", &["login", name]),
            Event::Joined(room) => put_line(dst, "ok", &["join", room]),
            Event::Left(room) => put_line(dst, "ok", &["leave", room]),
            Event::Online(name) => put_line(dst, "login", &[name]),
            Event::Offline(name) => put_line(dst, "logout", &[name]),
            Event::Talk { from, text } => put_line(dst, "talk", &[from, text]),
            Event::Users(names) => put_list_line(dst, "users", &[], names),
            Event::Members { room, names } => put_list_line(dst, "members", &[room], names),
            Event::RoomJoined { room, name } => put_line(dst, "join", &[room, name]),
            Event::RoomLeft { room, name } => put_line(dst, "leave", &[room, name]),
            Event::Say { room, from, text } => put_line(dst, "say", &[room, from, text]),
            Event::Rooms(names) => put_list_line(dst, "rooms", &[], names),
            Event::Ping => put_line(dst, "ping", &[]),
            Event::Pong => put_line(dst, "pong", &[]),
            Event::Bye(None) => put_line(dst, "bye", &[]),
            Event::Bye(Some(reason)) => put_line(dst, "bye", &[reason.as_str()]),
            Event::Error(kind, arg) => put_line(dst, "error", &[kind.as_str(), arg]),
        }
    }

    /// The event as one line, `\n` included; for the cold paths and tests.
    pub fn to_line(&self) -> BytesMut {
        let mut line = BytesMut::new();
        self.encode(&mut line);
        line
    }
}

fn put_line(dst: &mut BytesMut, verb: &str, fields: &[&str]) {
    put_fields(dst, verb, fields);
    dst.put_u8(b'\n');
}

/// A line whose last field is a comma-separated list of names.
fn put_list_line(dst: &mut BytesMut, verb: &str, fields: &[&str], names: &[&str]) {
    put_fields(dst, verb, fields);
    dst.put_u8(b'|');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            dst.put_u8(b',');
        }
        dst.put_slice(name.as_bytes());
    }
    dst.put_u8(b'\n');
}

fn put_fields(dst: &mut BytesMut, verb: &str, fields: &[&str]) {
    dst.reserve(verb.len() + fields.iter().map(|f| f.len() + 1).sum::<usize>() + 1);
    dst.put_slice(verb.as_bytes());
    for field in fields {
        dst.put_u8(b'|');
        dst.put_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf).expect("decoding never fails") {
            frames.push(frame);
        }
        frames
    }

    fn line(s: &str) -> Frame {
        Frame::Line(BytesMut::from(s))
    }

    #[test]
    fn max_list_reply_bytes_bounds_every_list_the_server_sends() {
        let longest = "n".repeat(MAX_NAME_LEN);
        for count in [1, 2, 3, 10, 1000] {
            let names = vec![longest.as_str(); count];
            let bound = max_list_reply_bytes(count);
            // Each as the server queues it: the join reply and the login greeting in one piece.
            let mut join_reply = Event::Joined(&longest).to_line();
            Event::Members {
                room: &longest,
                names: names.clone(),
            }
            .encode(&mut join_reply);
            let mut greeting = Event::LoggedIn(&longest).to_line();
            for _ in 0..count {
                Event::Online(&longest).encode(&mut greeting);
            }
            let replies = [
                Event::Users(names.clone()).to_line(),
                Event::Rooms(names.clone()).to_line(),
                join_reply,
                greeting,
            ];
            for reply in replies {
                assert!(
                    reply.len() <= bound,
                    "{count} names: {} > {bound}",
                    reply.len()
                );
            }
        }
    }

    #[test]
    fn splits_lines_strips_cr_and_skips_empty_lines() {
        let frames = decode_all(&mut LineCodec::new(100), b"who\r\n\n\r\nping\nrooms");
        assert_eq!(frames, vec![line("who"), line("ping")]);
    }

    #[test]
    fn line_at_the_limit_is_accepted_and_one_over_is_not() {
        let mut codec = LineCodec::new(4);
        let frames = decode_all(&mut codec, b"abcd\nabcd\r\nabcde\nok\n");
        assert_eq!(
            frames,
            vec![line("abcd"), line("abcd"), Frame::TooLong, line("ok")]
        );
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped_across_reads() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in [&b"0123456789"[..], b"abcdefghij", b"klm\nwho\n"] {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).expect("decoding never fails") {
                frames.push(frame);
            }
            assert!(buf.len() <= 8 + 2 + chunk.len(), "buffer stays bounded");
        }
        assert_eq!(frames, vec![Frame::TooLong, line("who")]);
    }

    #[test]
    fn unfinished_line_at_eof_is_dropped() {
        assert_eq!(
            decode_all(&mut LineCodec::new(100), b"who\ntalk|bob|hal"),
            vec![line("who")]
        );
    }

    #[test]
    fn names_follow_the_protocol() {
        assert!(is_valid_name("alice"));
        assert!(is_valid_name("A.b-c_9"));
        assert!(is_valid_name(&"x".repeat(32)));
        assert!(!is_valid_name(&"x".repeat(33)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("al ice"));
        assert!(!is_valid_name("a|b"));
        assert!(!is_valid_name("é"));
    }

    #[test]
    fn parses_every_request() {
        let cases: [(&[u8], Request); 10] = [
            (b"login|alice", Request::Login { name: "alice" }),
            (
                b"talk|bob|hi | there",
                Request::Talk {
                    to: "bob",
                    text: "hi | there",
                },
            ),
            (b"who", Request::Who),
            (b"join|rust", Request::Join { room: "rust" }),
            (b"leave|rust", Request::Leave { room: "rust" }),
            (
                b"say|rust|a|b",
                Request::Say {
                    room: "rust",
                    text: "a|b",
                },
            ),
            (b"rooms", Request::Rooms),
            (b"ping", Request::Ping),
            (b"pong", Request::Pong),
            (b"exit", Request::Exit),
        ];
        for (line, expected) in cases {
            assert_eq!(Request::parse(line), Ok(expected));
        }
    }

    #[test]
    fn rejects_malformed_requests() {
        use ParseError::*;
        let cases: [(&[u8], ParseError); 11] = [
            (b"login", BadArguments("login")),
            (b"login|", BadArguments("login")),
            (b"talk|bob", BadArguments("talk")),
            (b"talk|bob|", BadArguments("talk")),
            (b"talk||hi", BadArguments("talk")),
            (b"say|rust", BadArguments("say")),
            (b"join", BadArguments("join")),
            (b"who|me", BadArguments("who")),
            (b"LOGIN|x", UnknownCommand("LOGIN")),
            (b"dance|now", UnknownCommand("dance")),
            (b"talk|bob|\xff", BadEncoding),
        ];
        for (line, expected) in cases {
            assert_eq!(Request::parse(line), Err(expected));
        }
    }

    #[test]
    fn events_have_the_documented_wire_form() {
        let cases = [
            (Event::LoggedIn("alice"), "ok|login|alice\n"),
            (Event::Users(vec!["a", "B"]), "users|a,B\n"),
            (Event::Rooms(vec![]), "rooms|\n"),
            (
                Event::Members {
                    room: "rust",
                    names: vec!["a", "b"],
                },
                "members|rust|a,b\n",
            ),
            (
                Event::Say {
                    room: "r",
                    from: "a",
                    text: "x|y",
                },
                "say|r|a|x|y\n",
            ),
            (Event::Bye(None), "bye\n"),
            (Event::Bye(Some(ByeReason::TooSlow)), "bye|too-slow\n"),
            (
                Event::Error(ErrorKind::BadEncoding, ""),
                "error|bad-encoding|\n",
            ),
            (
                Event::Error(ErrorKind::LineTooLong, "4096"),
                "error|line-too-long|4096\n",
            ),
        ];
        for (event, wire) in cases {
            assert_eq!(&event.to_line()[..], wire.as_bytes());
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,32}"
    }

    /// Free text: anything but a newline, not ending in `\r` (which framing strips), non-empty.
    fn text() -> impl Strategy<Value = String> {
        "[^\n]{0,40}[^\n\r]"
    }

    fn names() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(name(), 0..5)
    }

    #[derive(Debug, Clone)]
    enum OwnedEvent {
        One(u8, String),
        Two(u8, String, String),
        Say(String, String, String),
        List(u8, Vec<String>),
        Members(String, Vec<String>),
        Bare(u8),
        Error(usize, String),
    }

    impl OwnedEvent {
        fn borrow(&self) -> Event<'_> {
            match self {
                OwnedEvent::One(k, a) => match k % 5 {
                    0 => Event::LoggedIn(a),
                    1 => Event::Joined(a),
                    2 => Event::Left(a),
                    3 => Event::Online(a),
                    _ => Event::Offline(a),
                },
                OwnedEvent::Two(k, a, b) => match k % 3 {
                    0 => Event::Talk { from: a, text: b },
                    1 => Event::RoomJoined { room: a, name: b },
                    _ => Event::RoomLeft { room: a, name: b },
                },
                OwnedEvent::Say(room, from, text) => Event::Say { room, from, text },
                OwnedEvent::List(k, names) => {
                    let names = names.iter().map(String::as_str).collect();
                    if k % 2 == 0 {
                        Event::Users(names)
                    } else {
                        Event::Rooms(names)
                    }
                }
                OwnedEvent::Members(room, names) => Event::Members {
                    room,
                    names: names.iter().map(String::as_str).collect(),
                },
                OwnedEvent::Bare(k) => match k % 7 {
                    0 => Event::Ping,
                    1 => Event::Pong,
                    2 => Event::Bye(None),
                    k => Event::Bye(Some(ByeReason::ALL[usize::from(k) - 3])),
                },
                OwnedEvent::Error(k, arg) => Event::Error(ErrorKind::ALL[k % 12], arg),
            }
        }
    }

    fn any_event() -> impl Strategy<Value = OwnedEvent> {
        prop_oneof![
            (any::<u8>(), name()).prop_map(|(k, a)| OwnedEvent::One(k, a)),
            (any::<u8>(), name(), text()).prop_map(|(k, a, b)| OwnedEvent::Two(k, a, b)),
            (name(), name(), text()).prop_map(|(r, f, t)| OwnedEvent::Say(r, f, t)),
            (any::<u8>(), names()).prop_map(|(k, n)| OwnedEvent::List(k, n)),
            (name(), names()).prop_map(|(r, n)| OwnedEvent::Members(r, n)),
            any::<u8>().prop_map(OwnedEvent::Bare),
            (any::<usize>(), "([^\n]{0,20}[^\n\r])?").prop_map(|(k, a)| OwnedEvent::Error(k, a)),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic_or_exceed_the_limit(
            input in prop::collection::vec(any::<u8>(), 0..2048),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in 1usize..64,
        ) {
            let mut codec = LineCodec::new(max);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut start = 0;
            for cut in cuts {
                buf.extend_from_slice(&input[start..cut]);
                start = cut;
                while let Some(frame) = codec.decode(&mut buf).expect("decoding never fails") {
                    if let Frame::Line(line) = frame {
                        prop_assert!(!line.is_empty() && line.len() <= max);
                        prop_assert!(!line.contains(&b'\n'));
                        // The parser accepts or rejects, never panics.
                        let _ = Request::parse(&line);
                        let _ = Event::parse(&line);
                    }
                }
                prop_assert!(buf.len() <= max + 1, "{} bytes left buffered", buf.len());
            }
        }

        #[test]
        fn each_line_yields_exactly_one_frame_in_order_however_the_input_is_split(
            lines in prop::collection::vec(("[a-z|]{1,8}", 0usize..40, any::<bool>()), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let max = 16;
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (word, padding, crlf) in &lines {
                let content = format!("{word}{}", "x".repeat(*padding));
                input.extend_from_slice(content.as_bytes());
                input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                expected.push(if content.len() > max { Frame::TooLong } else { line(&content) });
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut codec = LineCodec::new(max);
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            let mut start = 0;
            for cut in cuts {
                buf.extend_from_slice(&input[start..cut]);
                start = cut;
                while let Some(frame) = codec.decode(&mut buf).expect("decoding never fails") {
                    frames.push(frame);
                }
            }
            prop_assert_eq!(frames, expected);
        }

        #[test]
        fn every_event_encodes_to_a_line_that_parses_back_to_itself(event in any_event()) {
            let event = event.borrow();
            let wire = event.to_line();
            let mut codec = LineCodec::new(1 << 20);
            let mut buf = wire.clone();
            let Some(Frame::Line(line)) = codec.decode(&mut buf).expect("decoding never fails") else {
                panic!("{event:?} did not frame as one line");
            };
            prop_assert!(buf.is_empty());
            prop_assert_eq!(Event::parse(&line), Ok(event));
        }

        #[test]
        fn every_request_encodes_to_a_line_that_parses_back_to_itself(
            kind in 0u8..10, a in name(), b in text(),
        ) {
            let request = match kind {
                0 => Request::Login { name: &a },
                1 => Request::Talk { to: &a, text: &b },
                2 => Request::Who,
                3 => Request::Join { room: &a },
                4 => Request::Leave { room: &a },
                5 => Request::Say { room: &a, text: &b },
                6 => Request::Rooms,
                7 => Request::Ping,
                8 => Request::Pong,
                _ => Request::Exit,
            };
            let mut wire = BytesMut::new();
            request.encode(&mut wire);
            let mut codec = LineCodec::new(1 << 20);
            let Some(Frame::Line(line)) = codec.decode(&mut wire).expect("decoding never fails") else {
                panic!("{request:?} did not frame as one line");
            };
            prop_assert_eq!(Request::parse(&line), Ok(request));
        }
    }
}
