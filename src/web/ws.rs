//! `GET /ws`: a WebSocket as one more transport for a `Session`.
//!
//! One text frame is one protocol line, both ways. The connection is adapted to the byte stream
//! a session reads and writes by an in-memory pipe ([`tokio::io::duplex`]): the session's end is
//! the [`WsTransport`] admitted through the [`Gate`](crate::server::Gate) like a TCP socket, and
//! this end is served on the HTTP worker by two halves:
//!
//! * **in** ([`inbound`]): frames from the client become lines on the pipe — a text frame is
//!   its text and a `\n`; a binary frame becomes a line that is not UTF-8, so the session
//!   answers `error|bad-encoding|` exactly as it does on TCP (and counts it against flood
//!   control); a pong becomes the line `pong`, a sign of life for the session's heartbeat; a
//!   ping is answered with a pong and passed on as an empty line (flood control counts it); a
//!   close ends the session's input.
//! * **out** ([`Outbound`]): the response body reads the session's lines from the pipe and
//!   frames each as one text frame; after the protocol's `ping` it adds a WebSocket ping (which
//!   a browser answers by itself); at the end of the session's output (after its `bye`) comes a
//!   close frame. The body is read only as fast as the client takes the bytes, so a client
//!   that stops reading fills the pipe and then the session's outbox, whose too-slow rule
//!   (`bye|too-slow`, and the shared budget) applies unchanged: nothing between the outbox and
//!   the socket grows.
//!
//! A newline cannot end a line inside a frame, so a frame cannot carry two commands: one
//! trailing line ending (`\n` or `\r\n`) is dropped, and any other `\n` reaches the session as
//! a `\r`, a control character, which `talk` and `say` refuse with `error|bad-text|VERB` and
//! every other command fails to parse. A frame of more than `max(64 KiB, 4 ×
//! limits.max_line_bytes)` bytes closes the connection (code 1009); a shorter one over
//! `limits.max_line_bytes` gets `error|line-too-long|` as on TCP.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use actix_http::ws::{self, CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser};
use actix_web::{
    body::{BodyStream, MessageBody},
    http::header,
    web::{Data, Payload},
    HttpRequest, HttpResponse,
};
use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use log::debug;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf},
    sync::mpsc,
};
use tokio_util::{codec::Decoder, io::poll_read_buf};

use super::{client_address, forwarded, health::plain, Web};
use crate::{
    connection::{Security, Transport},
    metrics::TransportKind,
};

/// Bytes in flight each way between a WebSocket and its session. Small: it is per connection,
/// and the outbox behind it is where a backlog is counted and judged.
const PIPE_BYTES: usize = 16 * 1024;
/// Control frames (pongs, the close) waiting to go out; a client that pings faster than it
/// reads loses pongs rather than costing memory.
const CONTROL_FRAMES: usize = 8;
/// Largest frame accepted, at least: a bigger one closes the connection.
const MIN_MAX_FRAME: usize = 64 * 1024;
/// Read from the session's pipe per body chunk, at most.
const READ_CHUNK: usize = 8 * 1024;
/// Stop adding frames to one body chunk past this many bytes.
const MAX_CHUNK: usize = 64 * 1024;

/// A WebSocket's end of the pipe, as the session sees it: a byte stream like any other.
pub(crate) struct WsTransport {
    pipe: DuplexStream,
    /// Whether the page came over HTTPS: `http.tls`, or a trusted proxy that says so.
    secure: bool,
}

impl Transport for WsTransport {
    type Reader = ReadHalf<DuplexStream>;
    type Writer = WriteHalf<DuplexStream>;
    const KIND: TransportKind = TransportKind::Ws;

    async fn open(self) -> io::Result<(Self::Reader, Self::Writer)> {
        Ok(tokio::io::split(self.pipe))
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
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (from_session, to_session) = tokio::io::split(ours);
    let (control, controls) = mpsc::channel(CONTROL_FRAMES);
    let max_frame = MIN_MAX_FRAME.max(4 * web.max_line_bytes);
    actix_rt::spawn(inbound(payload, to_session, control, max_frame));
    let transport = WsTransport {
        pipe: theirs,
        secure: web.secure || proxied_over_https(&web, &req),
    };
    match web.gate.slot(peer) {
        Ok(slot) => web.gate.admit(transport, peer, slot),
        Err(reason) => web.gate.refuse(transport.pipe, peer, reason),
    }
    let body = Outbound {
        pipe: from_session,
        controls,
        pending: BytesMut::new(),
        out: BytesMut::new(),
        state: OutState::Open,
    };
    match response.message_body(BodyStream::new(body).boxed()) {
        Ok(response) => response.into(),
        Err(error) => HttpResponse::from_error(error),
    }
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

/// A frame the inbound half asks the outbound half to send.
#[derive(Debug)]
enum Control {
    Pong(bytes::Bytes),
    Close(Option<CloseReason>),
}

/// What the inbound half is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// Between messages.
    None,
    /// A fragmented text message: its fragments go to the session as they come.
    Text,
    /// A fragmented binary message: dropped, and answered as one binary frame when it ends.
    Binary,
}

/// The client's frames, as lines on the session's pipe (see the module docs). Ends when the
/// client closes or goes, or the session does.
async fn inbound(
    mut payload: Payload,
    mut session: WriteHalf<DuplexStream>,
    control: mpsc::Sender<Control>,
    max_frame: usize,
) {
    let mut codec = Codec::new().max_size(max_frame);
    let mut buffer = BytesMut::new();
    let mut message = Message::None;
    loop {
        loop {
            let frame = match codec.decode(&mut buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    debug!("WebSocket closed: {error}");
                    let code = match error {
                        ws::ProtocolError::Overflow => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    let _ = control.try_send(Control::Close(Some(code.into())));
                    let _ = session.shutdown().await;
                    return;
                }
            };
            let written = match frame {
                Frame::Text(text) => {
                    message = Message::None;
                    write_line(&mut session, &text, true).await
                }
                Frame::Binary(_) => {
                    message = Message::None;
                    session.write_all(NOT_TEXT).await
                }
                Frame::Continuation(item) => match item {
                    Item::FirstText(text) => {
                        message = Message::Text;
                        write_line(&mut session, &text, false).await
                    }
                    Item::FirstBinary(_) => {
                        message = Message::Binary;
                        Ok(())
                    }
                    Item::Continue(text) if message == Message::Text => {
                        write_line(&mut session, &text, false).await
                    }
                    Item::Continue(_) => Ok(()),
                    Item::Last(text) => match std::mem::replace(&mut message, Message::None) {
                        Message::Text => write_line(&mut session, &text, true).await,
                        Message::Binary | Message::None => session.write_all(NOT_TEXT).await,
                    },
                },
                // Answered here, and passed on as an empty line: no reply, no sign of life, but
                // a flood of pings costs flood-control tokens like a flood of empty lines.
                Frame::Ping(bytes) => {
                    let _ = control.try_send(Control::Pong(bytes));
                    session.write_all(b"\n").await
                }
                // The browser's answer to our ping: alive, whatever its page's script is doing.
                Frame::Pong(_) => session.write_all(b"pong\n").await,
                Frame::Close(reason) => {
                    let _ = control.try_send(Control::Close(reason));
                    let _ = session.shutdown().await;
                    return;
                }
            };
            if written.is_err() {
                return; // the session is gone
            }
        }
        match payload.next().await {
            Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
            Some(Err(_)) | None => {
                let _ = session.shutdown().await;
                return;
            }
        }
    }
}

/// What a binary frame becomes: a line that is not UTF-8, which the session refuses with
/// `error|bad-encoding|`.
const NOT_TEXT: &[u8] = b"\xff\n";

/// Writes `text` to the session as (part of) one line: no `\n` of its own ends it (see the
/// module docs); with `last`, one trailing line ending is dropped and the line is ended.
async fn write_line<W: AsyncWrite + Unpin>(
    session: &mut W,
    text: &[u8],
    last: bool,
) -> io::Result<()> {
    let text = match text.strip_suffix(b"\n") {
        Some(text) if last => text.strip_suffix(b"\r").unwrap_or(text),
        _ => text,
    };
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend(text.iter().map(|&b| if b == b'\n' { b'\r' } else { b }));
    if last {
        line.push(b'\n');
    }
    session.write_all(&line).await
}

/// Where the outbound half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Forwarding the session's lines.
    Open,
    /// The close frame is written; what is left of `out` goes, then the body ends.
    Closing,
    /// Ended.
    Done,
}

/// The response body: the session's lines as text frames, control frames from [`inbound`],
/// and a close frame at the end (see the module docs).
struct Outbound {
    pipe: ReadHalf<DuplexStream>,
    controls: mpsc::Receiver<Control>,
    /// A partial line read from the pipe; no allocation while there is none.
    pending: BytesMut,
    /// Frames ready to go.
    out: BytesMut,
    state: OutState,
}

impl Outbound {
    /// Frames every complete line in `pending`.
    fn frame_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line = self.pending.split_to(end + 1);
            let line = &line[..end];
            match std::str::from_utf8(line) {
                Ok(text) => Parser::write_message(&mut self.out, text, OpCode::Text, true, false),
                Err(_) => Parser::write_message(
                    &mut self.out,
                    String::from_utf8_lossy(line).as_bytes(),
                    OpCode::Text,
                    true,
                    false,
                ),
            }
            if line == b"ping" {
                // The browser answers this one itself; its pong is a sign of life (`inbound`).
                Parser::write_message(&mut self.out, b"", OpCode::Ping, true, false);
            }
        }
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        }
    }

    fn close(&mut self, reason: Option<CloseReason>) {
        Parser::write_close(&mut self.out, reason, false);
        self.state = OutState::Closing;
    }
}

impl Stream for Outbound {
    type Item = Result<bytes::Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while this.state == OutState::Open {
            match this.controls.poll_recv(cx) {
                Poll::Ready(Some(Control::Pong(bytes))) => {
                    Parser::write_message(&mut this.out, &bytes, OpCode::Pong, true, false);
                    continue;
                }
                Poll::Ready(Some(Control::Close(reason))) => {
                    this.close(reason);
                    break;
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            if this.out.len() >= MAX_CHUNK {
                break;
            }
            if this.pending.capacity() - this.pending.len() < READ_CHUNK / 2 {
                this.pending.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut this.pipe), cx, &mut this.pending) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // The session has finished (its `bye` is the last line): say goodbye.
                    this.frame_lines();
                    this.close(Some(CloseCode::Normal.into()));
                }
                Poll::Ready(Ok(_)) => this.frame_lines(),
                Poll::Pending => {
                    if this.pending.is_empty() {
                        this.pending = BytesMut::new();
                    }
                    break;
                }
            }
        }
        if !this.out.is_empty() {
            let chunk = this.out.split().freeze();
            if this.out.capacity() > MAX_CHUNK {
                this.out = BytesMut::new();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match this.state {
            OutState::Open => Poll::Pending,
            OutState::Closing | OutState::Done => {
                this.state = OutState::Done;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn line_of(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_line(&mut out, text, true)
            .await
            .expect("a Vec takes it");
        out
    }

    #[actix_rt::test]
    async fn a_frame_is_one_line_whatever_it_holds() {
        assert_eq!(line_of(b"who").await, b"who\n");
        assert_eq!(line_of(b"who\n").await, b"who\n");
        assert_eq!(line_of(b"who\r\n").await, b"who\n");
        assert_eq!(line_of(b"who\nexit").await, b"who\rexit\n");
        assert_eq!(line_of(b"talk|bob|a\n\nb\n").await, b"talk|bob|a\r\rb\n");
        assert_eq!(line_of(b"").await, b"\n");
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
