//! `GET /ws`: a WebSocket as one more transport for a `Session`.
//!
//! One text frame is one protocol line, both ways. The session is started on the HTTP worker
//! thread that serves the WebSocket ([`Gate::admit_here`](crate::server::Gate::admit_here)),
//! so that its reading, its writing and the HTTP connection are tasks of one thread: a line
//! crosses no thread and no pipe between the socket and the session. The [`WsTransport`] it
//! is given is two adapters over the connection:
//!
//! * **in** ([`WsReader`]): the session reads the client's frames, parsed straight from the
//!   request's payload, as lines — a text frame is its text and a `\n`; a binary frame becomes
//!   a line that is not UTF-8, so the session answers `error|bad-encoding|` exactly as it does
//!   on TCP (and counts it against flood control); a pong becomes the line `pong`, a sign of
//!   life for the session's heartbeat; a ping is answered with a pong and passed on as an empty
//!   line (flood control counts it); a close ends the session's input.
//! * **out** ([`WsWriter`]): what the session writes is framed as it is written, one text frame
//!   per line, into a small buffer ([`LINK_BYTES`]) that the response body ([`Outbound`])
//!   takes from; after the protocol's `ping` comes a WebSocket ping (which a browser answers by
//!   itself); when the session shuts its output down (after its `bye`), a close frame. The body
//!   is read only as fast as the client takes the bytes, and the writer waits while the buffer
//!   is full, so a client that stops reading fills it and then the session's outbox, whose
//!   too-slow rule (`bye|too-slow`, and the shared budget) applies unchanged: nothing between
//!   the outbox and the socket grows.
//!
//! A newline cannot end a line inside a frame, so a frame cannot carry two commands: one
//! trailing line ending (`\n` or `\r\n`) is dropped, and any other `\n` reaches the session as
//! a `\r`, a control character, which `talk` and `say` refuse with `error|bad-text|VERB` and
//! every other command fails to parse. A frame of more than `max(64 KiB, 4 ×
//! limits.max_line_bytes)` bytes closes the connection (code 1009); a shorter one over
//! `limits.max_line_bytes` gets `error|line-too-long|` as on TCP.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use actix_http::ws::{self, CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser};
use actix_web::{
    body::{BodyStream, MessageBody},
    http::header,
    web::{Data, Payload},
    HttpRequest, HttpResponse,
};
use bytes::{Buf, BytesMut};
use futures_util::Stream;
use log::debug;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::Decoder;

use super::{client_address, forwarded, health::plain, Web};
use crate::{
    connection::{Security, Transport},
    metrics::TransportKind,
};

/// Frames waiting for the client, at most (give or take one write): the session's writer waits
/// while there are this many. Small: it is per connection, and the outbox behind it is where a
/// backlog is counted and judged.
const LINK_BYTES: usize = 16 * 1024;
/// Largest frame accepted, at least: a bigger one closes the connection.
const MIN_MAX_FRAME: usize = 64 * 1024;

/// A WebSocket as the session sees it: a byte stream like any other, whose halves are adapters
/// over the HTTP connection (see the module docs). Not `Send`: it is served on the thread that
/// holds the connection.
pub(crate) struct WsTransport {
    reader: WsReader,
    writer: WsWriter,
    /// Whether the page came over HTTPS: `http.tls`, or a trusted proxy that says so.
    secure: bool,
}

impl Transport for WsTransport {
    type Reader = WsReader;
    type Writer = WsWriter;
    const KIND: TransportKind = TransportKind::Ws;

    async fn open(self) -> io::Result<(Self::Reader, Self::Writer)> {
        Ok((self.reader, self.writer))
    }

    fn security(&self) -> Security {
        if self.secure {
            Security::Encrypted
        } else {
            Security::Plain
        }
    }
}

/// `GET /ws`: checks the origin, upgrades, and hands the connection to the gate (which starts
/// a session, or says why not: `bye|server-full` and the like, then a close frame).
pub(crate) async fn upgrade(req: HttpRequest, payload: Payload, web: Data<Web>) -> HttpResponse {
    if web.stop.is_cancelled() {
        return plain(HttpResponse::ServiceUnavailable(), "shutting down");
    }
    let Some(peer) = client_address(&web, &req) else {
        return plain(HttpResponse::BadRequest(), "no peer address");
    };
    if !origin_allowed(&web, &req) {
        debug!(
            "{peer}: WebSocket refused: origin {:?}",
            req.headers().get(header::ORIGIN)
        );
        return plain(HttpResponse::Forbidden(), "origin not allowed");
    }
    let mut response = match ws::handshake(req.head()) {
        Ok(response) => response,
        Err(error) => return HttpResponse::from_error(error),
    };
    let max_frame = MIN_MAX_FRAME.max(4 * web.max_line_bytes);
    let (reader, writer, body) = adapters(payload, max_frame);
    match web.gate.slot(peer) {
        Ok(slot) => {
            let transport = WsTransport {
                reader,
                writer,
                secure: web.secure || proxied_over_https(&web, &req),
            };
            web.gate.admit_here(transport, peer, slot);
        }
        // Both halves as one stream: a refusal's `bye`, its close frame, and the wait for the
        // client's.
        Err(reason) => web
            .gate
            .refuse(tokio::io::join(reader, writer), peer, reason),
    }
    match response.message_body(BodyStream::new(body).boxed()) {
        Ok(response) => response.into(),
        Err(error) => HttpResponse::from_error(error),
    }
}

/// The three ends of one WebSocket: the session's reader and writer, and the response body.
fn adapters(payload: Payload, max_frame: usize) -> (WsReader, WsWriter, Outbound) {
    let link = Rc::new(RefCell::new(Link::default()));
    let reader = WsReader {
        payload,
        codec: Codec::new().max_size(max_frame),
        raw: BytesMut::new(),
        lines: BytesMut::new(),
        message: Message::None,
        ended: false,
        link: link.clone(),
    };
    let writer = WsWriter {
        partial: BytesMut::new(),
        link: link.clone(),
    };
    (reader, writer, Outbound { link })
}

/// Whether the request's `Origin` may open a WebSocket: no `Origin` at all (not a browser: a
/// script or a bot, which no other site can drive), one listed in `http.allowed_origins`, or —
/// when that list is empty — the page's own origin: the scheme and `Host` of this request (as
/// a trusted proxy reports them, if it does).
fn origin_allowed(web: &Web, req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(crate::config::normal_origin) else {
        return false;
    };
    let origin = without_default_port(&origin);
    if !web.http.allowed_origins.is_empty() {
        return web
            .http
            .allowed_origins
            .iter()
            .any(|allowed| without_default_port(allowed) == origin);
    }
    let (proto, host) = match req.peer_addr() {
        Some(peer) => forwarded::proto_and_host(peer, req.headers(), &web.http.trusted_proxies),
        None => (None, None),
    };
    let scheme = proto.unwrap_or_else(|| if web.secure { "https" } else { "http" }.to_owned());
    let Some(host) = host.or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_ascii_lowercase)
    }) else {
        return false;
    };
    without_default_port(&format!("{scheme}://{host}")) == origin
}

/// Whether a trusted proxy says the browser reached it over HTTPS (`X-Forwarded-Proto: https`,
/// `Forwarded: proto=https`): then the connection is encrypted as far as the network goes, the
/// proxy being this server's own front.
fn proxied_over_https(web: &Web, req: &HttpRequest) -> bool {
    req.peer_addr().is_some_and(|peer| {
        let (proto, _) = forwarded::proto_and_host(peer, req.headers(), &web.http.trusted_proxies);
        proto.as_deref() == Some("https")
    })
}

/// `https://host:443` → `https://host`, `http://host:80` → `http://host`: how a browser writes
/// an origin.
fn without_default_port(origin: &str) -> &str {
    origin
        .strip_suffix(":443")
        .filter(|_| origin.starts_with("https://"))
        .or_else(|| {
            origin
                .strip_suffix(":80")
                .filter(|_| origin.starts_with("http://"))
        })
        .unwrap_or(origin)
}

/// What the reader, the writer and the response body of one WebSocket share. They are tasks
/// of one thread, so a `RefCell`, borrowed only inside a poll, never across one.
#[derive(Default)]
struct Link {
    /// Frames for the client, not yet taken by the body; no allocation while there are none.
    out: BytesMut,
    /// The body, when it waits for frames.
    body: Option<Waker>,
    /// The session's writer, when it waits for room in `out`.
    writer: Option<Waker>,
    /// The close frame is in `out`: nothing is framed after it, and the body ends once `out`
    /// is empty.
    closed: bool,
    /// The body is gone (the HTTP connection has ended): nothing written reaches the client.
    gone: bool,
}

impl Link {
    fn wake_body(&mut self) {
        if let Some(waker) = self.body.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// Queues a close frame (once); the body ends after it.
    fn close(&mut self, reason: Option<CloseReason>) {
        if !self.closed {
            Parser::write_close(&mut self.out, reason, false);
            self.closed = true;
            self.wake_body();
        }
    }

    /// Queues a control frame unless the client already owes [`LINK_BYTES`]: a client that
    /// pings faster than it reads loses pongs rather than costing memory.
    fn control(&mut self, payload: &[u8], op: OpCode) {
        if !self.closed && self.out.len() < LINK_BYTES {
            Parser::write_message(&mut self.out, payload, op, true, false);
            self.wake_body();
        }
    }
}

/// What the reader is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// Between messages.
    None,
    /// A fragmented text message: its fragments go to the session as they come.
    Text,
    /// A fragmented binary message: dropped, and answered as one binary frame when it ends.
    Binary,
}

/// The client's frames as lines (see the module docs), parsed from the request's payload as
/// the session reads. Ends when the client closes or goes.
pub(crate) struct WsReader {
    payload: Payload,
    codec: Codec,
    /// Bytes of the payload not yet parsed; no allocation while there are none.
    raw: BytesMut,
    /// Lines parsed and not yet read by the session; no allocation while there are none.
    lines: BytesMut,
    message: Message,
    /// The client has closed, gone, or broken the protocol: the input has ended.
    ended: bool,
    link: Rc<RefCell<Link>>,
}

/// What a binary frame becomes: a line that is not UTF-8, which the session refuses with
/// `error|bad-encoding|`.
const NOT_TEXT: &[u8] = b"\xff\n";

impl WsReader {
    /// Parses the frames in `raw` into lines for the session — into `buf` while it has room,
    /// then into `lines` — and queues the control frames they call for, until `raw` holds no
    /// whole frame or the input has ended.
    fn parse(&mut self, buf: &mut ReadBuf<'_>) {
        let mut to = Lines {
            buf,
            lines: &mut self.lines,
        };
        while !self.ended {
            if self.message == Message::None && take_text_frame(&mut self.raw, &mut to) {
                continue;
            }
            let frame = match self.codec.decode(&mut self.raw) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(error) => {
                    debug!("WebSocket closed: {error}");
                    let code = match error {
                        ws::ProtocolError::Overflow => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    self.link.borrow_mut().close(Some(code.into()));
                    self.ended = true;
                    return;
                }
            };
            match frame {
                Frame::Text(text) => {
                    self.message = Message::None;
                    to.line(&text, true);
                }
                Frame::Binary(_) => {
                    self.message = Message::None;
                    to.put(NOT_TEXT);
                }
                Frame::Continuation(item) => match item {
                    Item::FirstText(text) => {
                        self.message = Message::Text;
                        to.line(&text, false);
                    }
                    Item::FirstBinary(_) => self.message = Message::Binary,
                    Item::Continue(text) if self.message == Message::Text => to.line(&text, false),
                    Item::Continue(_) => {}
                    Item::Last(text) => match std::mem::replace(&mut self.message, Message::None) {
                        Message::Text => to.line(&text, true),
                        Message::Binary | Message::None => to.put(NOT_TEXT),
                    },
                },
                // Answered here, and passed on as an empty line: no reply, no sign of life, but
                // a flood of pings costs flood-control tokens like a flood of empty lines.
                Frame::Ping(payload) => {
                    self.link.borrow_mut().control(&payload, OpCode::Pong);
                    to.put(b"\n");
                }
                // The browser's answer to our ping: alive, whatever its page's script is doing.
                Frame::Pong(_) => to.put(b"pong\n"),
                Frame::Close(reason) => {
                    self.link.borrow_mut().close(reason);
                    self.ended = true;
                }
            }
        }
    }
}

/// Takes the frame nearly every line comes in, if it is next and whole: a masked, final text
/// frame of less than 64 KiB (so under the frame limit) with no extension bits, outside a
/// fragmented message (the caller checks). Its text goes to `to`, unmasked. Anything else,
/// or a frame not yet whole, is left to the codec, which checks and parses every frame.
///
/// Why by hand: the codec hands each frame over as a buffer of its own split from `raw`, and
/// the reference counting of those splits (atomic, per frame) plus the codec itself were the
/// largest part of what a line cost the server more over a WebSocket than over TCP.
fn take_text_frame(raw: &mut BytesMut, to: &mut Lines<'_, '_>) -> bool {
    // FIN and opcode 1 (text), no RSV bits; then the mask bit and a 7-bit or 16-bit length.
    let (length, header) = match raw[..] {
        [0x81, second, ..] if second & 0x80 != 0 && second & 0x7f < 126 => {
            (usize::from(second & 0x7f), 2)
        }
        [0x81, 0xfe, high, low, ..] => (usize::from(u16::from_be_bytes([high, low])), 4),
        _ => return false,
    };
    let Some(frame) = raw.get_mut(header..header + 4 + length) else {
        return false; // not all here yet
    };
    let (mask, text) = frame.split_at_mut(4);
    for (i, byte) in text.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    to.line(text, true);
    raw.advance(header + 4 + length);
    true
}

/// Where parsed lines go: straight into the session's read buffer while they fit, then (in
/// order) into the reader's own.
struct Lines<'a, 'b> {
    buf: &'a mut ReadBuf<'b>,
    lines: &'a mut BytesMut,
}

impl Lines<'_, '_> {
    fn put(&mut self, bytes: &[u8]) {
        if self.lines.is_empty() && self.buf.remaining() >= bytes.len() {
            self.buf.put_slice(bytes);
        } else {
            self.lines.extend_from_slice(bytes);
        }
    }

    /// `text` as (part of) one line: no `\n` of its own ends it (see the module docs); with
    /// `last`, one trailing line ending is dropped and the line is ended.
    fn line(&mut self, text: &[u8], last: bool) {
        let text = match text.strip_suffix(b"\n") {
            Some(text) if last => text.strip_suffix(b"\r").unwrap_or(text),
            _ => text,
        };
        if memchr::memchr(b'\n', text).is_some() {
            let text: Vec<u8> = text
                .iter()
                .map(|&b| if b == b'\n' { b'\r' } else { b })
                .collect();
            self.put(&text);
        } else {
            self.put(text);
        }
        if last {
            self.put(b"\n");
        }
    }
}

impl AsyncRead for WsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.lines.is_empty() {
                let n = this.lines.len().min(buf.remaining());
                buf.put_slice(&this.lines[..n]);
                this.lines.advance(n);
                if this.lines.is_empty() {
                    this.lines = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(())); // the end of the input
            }
            let before = buf.filled().len();
            this.parse(buf);
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if !this.lines.is_empty() || this.ended {
                continue;
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) if this.raw.is_empty() => {
                    this.raw = BytesMut::from(&bytes[..]);
                }
                Poll::Ready(Some(Ok(bytes))) => this.raw.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(_)) | None) => this.ended = true,
                Poll::Pending => {
                    if this.raw.is_empty() {
                        this.raw = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The session's output, framed as it is written (see the module docs).
pub(crate) struct WsWriter {
    /// The start of a line whose end has not been written yet.
    partial: BytesMut,
    link: Rc<RefCell<Link>>,
}

impl WsWriter {
    /// Frames the lines in `bufs`, as much of them as fits under [`LINK_BYTES`]; waits while
    /// nothing fits.
    fn frame(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut link = self.link.borrow_mut();
        if link.gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if link.closed {
            // The client has closed: like a socket whose peer has stopped reading, it takes
            // what it is given until the session sees its input end.
            return Poll::Ready(Ok(total));
        }
        if link.out.len() >= LINK_BYTES {
            if !link
                .writer
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                link.writer = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let mut room = LINK_BYTES - link.out.len();
        let offered = total.min(room);
        // Framed, a line takes at most twice its bytes (an empty one: 1 byte, a 2-byte frame):
        // one allocation for the lot rather than a growing buffer.
        link.out.reserve(2 * offered + 16);
        let mut taken = 0;
        for buf in bufs {
            if room == 0 {
                break;
            }
            let buf = &buf[..buf.len().min(room)];
            room -= buf.len();
            taken += buf.len();
            frame_lines(&mut link.out, &mut self.partial, buf);
        }
        link.wake_body();
        Poll::Ready(Ok(taken))
    }
}

/// Frames every line that `bytes` ends, the first one's start being in `partial`; keeps what
/// follows the last `\n` in `partial`.
fn frame_lines(out: &mut BytesMut, partial: &mut BytesMut, mut bytes: &[u8]) {
    while let Some(end) = memchr::memchr(b'\n', bytes) {
        let line = if partial.is_empty() {
            &bytes[..end]
        } else {
            partial.extend_from_slice(&bytes[..end]);
            &partial[..]
        };
        match std::str::from_utf8(line) {
            Ok(_) => Parser::write_message(&mut *out, line, OpCode::Text, true, false),
            Err(_) => Parser::write_message(
                &mut *out,
                String::from_utf8_lossy(line).as_bytes(),
                OpCode::Text,
                true,
                false,
            ),
        }
        if line == b"ping" {
            // The browser answers this one itself; its pong is a sign of life (`WsReader`).
            Parser::write_message(&mut *out, b"", OpCode::Ping, true, false);
        }
        partial.clear();
        bytes = &bytes[end + 1..];
    }
    if !bytes.is_empty() {
        partial.extend_from_slice(bytes);
    } else if partial.capacity() > 0 && partial.is_empty() {
        *partial = BytesMut::new();
    }
}

impl AsyncWrite for WsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().frame(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().frame(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing to flush: what is framed is the body's to take.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The end of the session's output (its `bye` is written): a close frame.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.link.borrow_mut().close(Some(CloseCode::Normal.into()));
        Poll::Ready(Ok(()))
    }
}

impl Drop for WsWriter {
    /// A session that ends without shutting its output down (it was stopped) still closes
    /// the WebSocket: otherwise the HTTP connection would wait for frames for ever.
    fn drop(&mut self) {
        if let Ok(mut link) = self.link.try_borrow_mut() {
            link.close(Some(CloseCode::Normal.into()));
        }
    }
}

/// The response body: the frames the reader and the writer queue, as the client takes them.
struct Outbound {
    link: Rc<RefCell<Link>>,
}

impl Stream for Outbound {
    type Item = Result<bytes::Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut link = self.link.borrow_mut();
        if !link.out.is_empty() {
            // The whole buffer: the next frames get a new one (see `WsWriter::frame`), and
            // an idle connection keeps none.
            let chunk = std::mem::take(&mut link.out).freeze();
            link.wake_writer();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if link.closed {
            return Poll::Ready(None);
        }
        if !link.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            link.body = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Outbound {
    /// The HTTP connection is gone: the session's writes fail from now on, as a reset
    /// socket's would, and a writer waiting for room learns it.
    fn drop(&mut self) {
        if let Ok(mut link) = self.link.try_borrow_mut() {
            link.gone = true;
            link.wake_writer();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// What a text frame of `text` becomes for the session, through a read buffer of
    /// `room` bytes.
    fn line_in(text: &[u8], room: usize) -> Vec<u8> {
        let mut storage = vec![0u8; room];
        let mut buf = ReadBuf::new(&mut storage);
        let mut lines = BytesMut::new();
        Lines {
            buf: &mut buf,
            lines: &mut lines,
        }
        .line(text, true);
        let mut all = buf.filled().to_vec();
        all.extend_from_slice(&lines);
        all
    }

    fn line_of(text: &[u8]) -> Vec<u8> {
        let direct = line_in(text, 64);
        // The same when the session's buffer has little or no room left.
        for room in [0, 1, 3] {
            assert_eq!(line_in(text, room), direct, "with {room} bytes of room");
        }
        direct
    }

    #[test]
    fn a_frame_is_one_line_whatever_it_holds() {
        assert_eq!(line_of(b"who"), b"who\n");
        assert_eq!(line_of(b"who\n"), b"who\n");
        assert_eq!(line_of(b"who\r\n"), b"who\n");
        assert_eq!(line_of(b"who\nexit"), b"who\rexit\n");
        assert_eq!(line_of(b"talk|bob|a\n\nb\n"), b"talk|bob|a\r\rb\n");
        assert_eq!(line_of(b""), b"\n");
    }

    /// What `take_text_frame` makes of `raw`: whether it took a frame, the line, what is left.
    fn taken(raw: &[u8]) -> (bool, Vec<u8>, usize) {
        let mut raw = BytesMut::from(raw);
        let mut storage = vec![0u8; 1 << 17];
        let mut buf = ReadBuf::new(&mut storage);
        let mut lines = BytesMut::new();
        let took = take_text_frame(
            &mut raw,
            &mut Lines {
                buf: &mut buf,
                lines: &mut lines,
            },
        );
        (took, buf.filled().to_vec(), raw.len())
    }

    /// A frame as a browser sends it: masked.
    fn client_frame(payload: &[u8], op: OpCode, fin: bool) -> BytesMut {
        let mut out = BytesMut::new();
        Parser::write_message(&mut out, payload, op, fin, true);
        out
    }

    #[test]
    fn a_whole_masked_text_frame_is_taken_as_the_codec_would_take_it() {
        for text in [
            &b""[..],
            b"who",
            b"talk|bob|a\nb\r\n",
            &[b'x'; 125],
            &[b'y'; 126],
            &[b'z'; 65535],
        ] {
            let mut frames = client_frame(text, OpCode::Text, true);
            frames.extend_from_slice(&client_frame(b"next", OpCode::Text, true));
            let first = frames.len() - client_frame(b"next", OpCode::Text, true).len();
            let (took, line, left) = taken(&frames);
            assert!(took, "a text frame of {} bytes", text.len());
            assert_eq!(left, frames.len() - first, "only the first frame is taken");
            let mut codec = Codec::new().max_size(MIN_MAX_FRAME);
            let Ok(Some(Frame::Text(by_codec))) = codec.decode(&mut frames) else {
                panic!("the codec takes it too");
            };
            assert_eq!(line, line_in(&by_codec, 1 << 17));
        }
    }

    #[test]
    fn every_other_frame_is_left_to_the_codec() {
        let text = client_frame(b"who", OpCode::Text, true);
        // Not whole yet.
        for cut in 0..text.len() {
            assert_eq!(taken(&text[..cut]), (false, Vec::new(), cut));
        }
        // A fragment, a binary frame, a ping, a close.
        for frame in [
            client_frame(b"who", OpCode::Text, false),
            client_frame(b"who", OpCode::Continue, true),
            client_frame(b"who", OpCode::Binary, true),
            client_frame(b"who", OpCode::Ping, true),
            client_frame(b"", OpCode::Close, true),
        ] {
            assert_eq!(taken(&frame), (false, Vec::new(), frame.len()));
        }
        // Unmasked (a protocol error the codec reports), an extension bit, a 64-bit length.
        let mut unmasked = BytesMut::new();
        Parser::write_message(&mut unmasked, b"who", OpCode::Text, true, false);
        let mut rsv = text.clone();
        rsv[0] |= 0x40;
        let long = client_frame(&[b'x'; 65536], OpCode::Text, true);
        for frame in [unmasked, rsv, long] {
            assert_eq!(taken(&frame), (false, Vec::new(), frame.len()));
        }
    }

    /// The frames in `out`, parsed as a client would.
    fn frames(out: &mut BytesMut) -> Vec<Frame> {
        let mut codec = Codec::new().client_mode();
        let mut all = Vec::new();
        while let Some(frame) = codec.decode(out).expect("valid frames") {
            all.push(frame);
        }
        all
    }

    fn text(frame: &Frame) -> &[u8] {
        match frame {
            Frame::Text(text) => text,
            other => panic!("not a text frame: {other:?}"),
        }
    }

    #[test]
    fn lines_become_text_frames_across_writes_with_a_websocket_ping_after_ping() {
        let mut out = BytesMut::new();
        let mut partial = BytesMut::new();
        frame_lines(&mut out, &mut partial, b"ok|login|ann\npi");
        frame_lines(&mut out, &mut partial, b"ng\ntalk|bob|h");
        frame_lines(&mut out, &mut partial, b"i\n");
        assert!(partial.is_empty());
        let frames = frames(&mut out);
        assert_eq!(frames.len(), 4);
        assert_eq!(text(&frames[0]), b"ok|login|ann");
        assert_eq!(text(&frames[1]), b"ping");
        assert!(matches!(&frames[2], Frame::Ping(payload) if payload.is_empty()));
        assert_eq!(text(&frames[3]), b"talk|bob|hi");
    }

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Count {
        /// A waker that counts into a new `Count`, and the count.
        fn waker() -> (Arc<Count>, Waker) {
            let count = Arc::new(Count(AtomicUsize::new(0)));
            (count.clone(), Waker::from(count))
        }

        fn get(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A session's writer and the response body, linked as [`adapters`] links them.
    fn writer_and_body() -> (Rc<RefCell<Link>>, WsWriter, Outbound) {
        let link = Rc::new(RefCell::new(Link::default()));
        let writer = WsWriter {
            partial: BytesMut::new(),
            link: link.clone(),
        };
        (link.clone(), writer, Outbound { link })
    }

    #[test]
    fn the_writer_waits_while_the_client_owes_link_bytes_and_the_body_ends_with_a_close() {
        let (link, mut writer, mut body) = writer_and_body();
        let (count, waker) = Count::waker();
        let mut cx = Context::from_waker(&waker);
        // Lines of 100 bytes, written as a writer does: each write offers what is left.
        let lines = [b'x'; 99]
            .iter()
            .chain(b"\n")
            .copied()
            .cycle()
            .take(100 * 1000)
            .collect::<Vec<u8>>();
        let mut taken = 0;
        while let Poll::Ready(written) = Pin::new(&mut writer).poll_write(&mut cx, &lines[taken..])
        {
            taken += written.expect("the body is there");
            assert!(taken < 2 * LINK_BYTES, "the writer must wait");
        }
        assert!(taken >= LINK_BYTES);
        assert!(link.borrow().out.len() < LINK_BYTES + 100 + 4);
        // The body takes the frames: the writer is woken, and may write again.
        let before = count.get();
        let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) else {
            panic!("frames are waiting");
        };
        assert!(chunk.len() >= LINK_BYTES);
        assert!(count.get() > before);
        assert!(Pin::new(&mut writer)
            .poll_write(&mut cx, &lines[taken..])
            .is_ready());
        // Shutting the output down queues a close frame, and the body ends after it.
        assert!(Pin::new(&mut writer).poll_shutdown(&mut cx).is_ready());
        let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) else {
            panic!("the last frames are waiting");
        };
        let mut chunk = BytesMut::from(&chunk[..]);
        let frames = frames(&mut chunk);
        assert!(
            matches!(frames.last(), Some(Frame::Close(Some(reason))) if reason.code == CloseCode::Normal)
        );
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn once_the_body_is_gone_writes_fail_and_a_waiting_writer_is_woken() {
        let (_, mut writer, body) = writer_and_body();
        let (count, waker) = Count::waker();
        let mut cx = Context::from_waker(&waker);
        let line = [b'y'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let lines = line.repeat(100);
        let mut taken = 0;
        while let Poll::Ready(written) = Pin::new(&mut writer).poll_write(&mut cx, &lines[taken..])
        {
            taken += written.expect("the body is there");
        }
        drop(body);
        assert_eq!(count.get(), 1);
        match Pin::new(&mut writer).poll_write(&mut cx, &line) {
            Poll::Ready(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected a broken pipe, got {other:?}"),
        }
    }

    #[test]
    fn default_ports_are_left_out_as_a_browser_does() {
        assert_eq!(without_default_port("https://a.org:443"), "https://a.org");
        assert_eq!(without_default_port("http://a.org:80"), "http://a.org");
        assert_eq!(without_default_port("http://a.org:443"), "http://a.org:443");
        assert_eq!(
            without_default_port("http://a.org:8080"),
            "http://a.org:8080"
        );
    }
}
