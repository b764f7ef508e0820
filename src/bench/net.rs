//! Connecting and logging in, for every workload.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use actix_http::ws::{CloseCode, OpCode as WsOpCode, Parser};
use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    time::{sleep, timeout_at, Instant},
};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_tungstenite::tungstenite::{
    handshake::{client::generate_key, derive_accept_key},
    protocol::frame::{
        coding::{Control, Data, OpCode},
        FrameHeader,
    },
};
use tokio_util::{codec::Decoder, io::poll_read_buf};

use super::{progress::Progress, BenchError, Options};
use crate::codec::{Event, Frame, LineCodec, Request, MAX_SERVER_LINE};

/// Connect attempts before giving up on an address that refuses: enough to ride out a burst
/// of refusals while the server's accept queue drains, short (about 0.3 s) when nothing listens.
const CONNECT_ATTEMPTS: u32 = 5;

/// How the tool speaks TLS (`--tls`): the connector, and the name certificates are checked
/// against — `localhost`, since the tool only ever talks to this machine.
#[derive(Clone)]
pub struct BenchTls {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

impl BenchTls {
    /// TLS trusting `ca` (or the system's roots), checking certificates against `name`.
    pub fn new(ca: Option<&std::path::Path>, name: &str) -> Result<BenchTls, BenchError> {
        let config =
            crate::tls::client_config(ca).map_err(|error| BenchError::Usage(error.to_string()))?;
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| BenchError::Usage(format!("{name:?} is not a valid server name")))?;
        Ok(BenchTls {
            connector: crate::tls::connector(config),
            name,
        })
    }
}

impl fmt::Debug for BenchTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BenchTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How every connection of a run reaches the server.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Plain TCP to `server.bind`: the baseline.
    #[default]
    Tcp,
    /// TLS to `tls.bind` (`--tls`).
    Tls(BenchTls),
    /// A WebSocket to `ws://ADDR/ws` on `http.bind` (`--ws`): one text frame per line, both
    /// ways, as the web client speaks.
    Ws,
}

/// The read half of a connection, TCP, TLS or WebSocket: an enum rather than a box, so that
/// plain TCP, the baseline the others are compared with, costs what it did.
pub(crate) enum Reader {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
    Ws(WsReader),
}

/// The write half, likewise. TLS and WebSocket may keep bytes the socket did not take:
/// writers flush.
pub(crate) enum Writer {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
    Ws(WsWriter),
}

/// The frames a WebSocket brings, read as the lines they carry: each text frame's text and a
/// newline, so the same [`LineCodec`] frames every transport.
///
/// The tool's WebSocket is its own, on the two halves of the TCP socket like the TCP baseline's,
/// rather than a WebSocket library's stream split behind a lock: the tool runs on one core, and
/// a client that costs more per line than the server would measure itself. Frame headers are
/// read by tungstenite's parser and a text frame's payload is copied straight into the line
/// buffer (a codec handing each frame over as a buffer of its own costs two atomic reference
/// count updates per frame, which showed in the tool's profile); frames are written by
/// actix-http's. It is still an honest client: every line is one masked text frame, a ping is
/// answered with a pong (by the writer, with its next write), a close ends the input.
pub(crate) struct WsReader {
    read: OwnedReadHalf,
    /// Bytes read and not yet taken as frames (first: whatever followed the handshake's reply).
    raw: BytesMut,
    /// Lines taken from frames that the caller's buffer had no room for.
    pending: BytesMut,
    /// Where a ping's payload waits for the writer to answer it.
    pong: Arc<PongSlot>,
    /// A close frame has arrived, or the socket has closed: the input has ended.
    closed: bool,
}

/// Lines written, sent as one masked text frame each (the newline is the frame's end, not its
/// text), encoded into one buffer and written with as few writes as the socket allows — as the
/// TCP baseline writes a batch of lines at once.
pub(crate) struct WsWriter {
    write: OwnedWriteHalf,
    /// Frames encoded and not yet written.
    out: BytesMut,
    /// The start of a line whose newline has not been written yet.
    partial: BytesMut,
    pong: Arc<PongSlot>,
    /// The close frame is in `out` (or written).
    close_sent: bool,
}

/// A ping the reader has seen and the writer has not answered yet (the last one: a pong
/// answers the most recent ping, RFC 6455 §5.5.3).
#[derive(Default)]
struct PongSlot {
    due: AtomicBool,
    payload: Mutex<Bytes>,
}

impl PongSlot {
    fn put(&self, payload: Bytes) {
        *self.payload.lock().unwrap_or_else(PoisonError::into_inner) = payload;
        self.due.store(true, Ordering::Release);
    }

    /// The payload to answer, if a ping is waiting: one atomic load otherwise.
    fn take(&self) -> Option<Bytes> {
        // The load first: a swap on every write would be a locked instruction each time.
        if !self.due.load(Ordering::Relaxed) || !self.due.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(std::mem::take(
            &mut *self.payload.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Frames written ahead of the socket before a write waits for it.
const WS_OUT_HIGH: usize = 64 * 1024;
/// Largest frame the tool accepts from the server: its longest line and some.
const WS_MAX_FRAME: usize = MAX_SERVER_LINE + 1024;

fn invalid(what: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl WsReader {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            self.take_frames(buf)?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if !self.pending.is_empty() || self.closed {
                continue;
            }
            if self.raw.capacity() - self.raw.len() < 1024 {
                self.raw.reserve(8 * 1024);
            }
            if std::task::ready!(poll_read_buf(Pin::new(&mut self.read), cx, &mut self.raw))? == 0 {
                // The socket closed without a close frame: the end all the same.
                self.closed = true;
            }
        }
    }

    /// Takes every whole frame in `raw`: text into the caller's buffer (or `pending`), a ping
    /// for the writer to answer; a close ends the input.
    fn take_frames(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        while !self.closed {
            let mut cursor = io::Cursor::new(&self.raw[..]);
            let Some((header, length)) = FrameHeader::parse(&mut cursor).map_err(invalid)? else {
                return Ok(());
            };
            if header.mask.is_some() || header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(invalid("a masked or extended frame from the server"));
            }
            let length = usize::try_from(length)
                .ok()
                .filter(|&length| length <= WS_MAX_FRAME)
                .ok_or_else(|| invalid("a frame longer than any line"))?;
            // `cursor` is at most 14 bytes in: the header's length.
            let start = usize::try_from(cursor.position()).map_err(invalid)?;
            let Some(payload) = self.raw.get(start..start + length) else {
                self.raw.reserve(start + length - self.raw.len());
                return Ok(());
            };
            match header.opcode {
                // The server does not fragment, but a client takes what the protocol allows.
                OpCode::Data(Data::Text | Data::Continue) => {
                    let end: &[u8] = if header.is_final { b"\n" } else { b"" };
                    if self.pending.is_empty() && buf.remaining() >= payload.len() + end.len() {
                        buf.put_slice(payload);
                        buf.put_slice(end);
                    } else {
                        self.pending.extend_from_slice(payload);
                        self.pending.extend_from_slice(end);
                    }
                }
                OpCode::Control(Control::Ping) => self.pong.put(Bytes::copy_from_slice(payload)),
                OpCode::Control(Control::Close) => self.closed = true,
                // The server sends nothing else the tool reads.
                OpCode::Data(_) | OpCode::Control(_) => {}
            }
            self.raw.advance(start + length);
        }
        Ok(())
    }
}

impl WsWriter {
    /// Encodes every complete line in `buf` as a text frame; keeps a trailing incomplete line
    /// for the next write. Takes nothing while `WS_OUT_HIGH` bytes of frames wait for the
    /// socket.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.out.len() >= WS_OUT_HIGH {
            std::task::ready!(self.poll_drain(cx))?;
        }
        self.answer_ping();
        let mut used = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[used..]) {
            let line = &buf[used..used + end];
            let text = if self.partial.is_empty() {
                line
            } else {
                self.partial.extend_from_slice(line);
                &self.partial[..]
            };
            // A text frame carries UTF-8; the tool only writes that, but never sends otherwise.
            std::str::from_utf8(text).map_err(invalid)?;
            Parser::write_message(&mut self.out, text, WsOpCode::Text, true, true);
            self.partial.clear();
            used += end + 1;
        }
        self.partial.extend_from_slice(&buf[used..]);
        // Start on the socket at once; what it does not take now, the flush writes.
        if let Poll::Ready(Err(error)) = self.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// Queues a pong if the reader has seen a ping.
    fn answer_ping(&mut self) {
        if let Some(payload) = self.pong.take() {
            Parser::write_message(&mut self.out, &payload, WsOpCode::Pong, true, true);
        }
    }

    /// Writes what is in `out` until all of it is written or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.write).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.answer_ping();
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.write).poll_flush(cx)
    }

    /// Sends a close frame (once), then shuts the socket's write side down.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sent {
            Parser::write_close(&mut self.out, Some(CloseCode::Normal.into()), true);
            self.close_sent = true;
        }
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

/// Upgrades `stream` to a WebSocket on `/ws` (RFC 6455 §4.1), and returns it with whatever
/// the server sent after its reply (a refusal's `bye` may follow at once).
async fn ws_upgrade(stream: &mut TcpStream, addr: SocketAddr) -> io::Result<BytesMut> {
    let key = generate_key();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut raw).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&raw).map_err(invalid)? {
            httparse::Status::Partial if raw.len() > 16 * 1024 => {
                return Err(invalid("an endless reply to the upgrade"))
            }
            httparse::Status::Partial => {}
            httparse::Status::Complete(length) => {
                if response.code != Some(101) {
                    return Err(invalid(format!("HTTP {}", response.code.unwrap_or(0))));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-accept"));
                if accept.map(|header| header.value)
                    != Some(derive_accept_key(key.as_bytes()).as_bytes())
                {
                    return Err(invalid("a wrong Sec-WebSocket-Accept"));
                }
                raw.advance(length);
                return Ok(raw);
            }
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(read) => Pin::new(read).poll_read(cx, buf),
            Reader::Tls(read) => Pin::new(read).poll_read(cx, buf),
            Reader::Ws(read) => read.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(write) => Pin::new(write).poll_write(cx, buf),
            Writer::Tls(write) => Pin::new(write).poll_write(cx, buf),
            Writer::Ws(write) => write.poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            Writer::Tls(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            Writer::Ws(write) => {
                let buf = bufs.iter().find(|buf| !buf.is_empty());
                write.poll_write(cx, buf.map_or(&[][..], |buf| &buf[..]))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Writer::Plain(write) => write.is_write_vectored(),
            Writer::Tls(write) => write.is_write_vectored(),
            Writer::Ws(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(write) => Pin::new(write).poll_flush(cx),
            Writer::Tls(write) => Pin::new(write).poll_flush(cx),
            Writer::Ws(write) => write.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(write) => Pin::new(write).poll_shutdown(cx),
            Writer::Tls(write) => Pin::new(write).poll_shutdown(cx),
            Writer::Ws(write) => write.poll_shutdown(cx),
        }
    }
}

/// A logged-in connection, split so that one task may read while another writes.
pub(crate) struct Conn {
    pub(crate) read: Reader,
    pub(crate) write: Writer,
    /// Bytes read but not yet framed; may already hold lines that followed the login reply.
    pub(crate) rbuf: BytesMut,
    pub(crate) codec: LineCodec,
}

impl Conn {
    /// The next line from the server, or `None` at the end of the stream.
    pub(crate) async fn next_line(&mut self) -> io::Result<Option<BytesMut>> {
        loop {
            match self.codec.decode(&mut self.rbuf)? {
                Some(Frame::Line(line)) => return Ok(Some(line)),
                Some(Frame::TooLong | Frame::Skipped) => continue,
                None => {
                    self.rbuf.reserve(1024);
                    if self.read.read_buf(&mut self.rbuf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Connects, retrying a refused connection a few times with a growing pause.
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, BenchError> {
    let mut pause = Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // The tool batches its own writes; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) if attempt < CONNECT_ATTEMPTS && retryable(&error) => {
                sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(source) => return Err(BenchError::Unreachable { addr, source }),
        }
    }
}

fn retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
    )
}

/// Connects and logs in as `name`, then joins `room` if given; returns once the last reply
/// (`ok|login|NAME` or `ok|join|ROOM`) has arrived.
pub(crate) async fn handshake(
    addr: SocketAddr,
    transport: &Transport,
    name: &str,
    room: Option<&str>,
) -> Result<Conn, BenchError> {
    let stream = connect(addr).await?;
    let (read, mut write) = match transport {
        Transport::Tcp => {
            let (read, write) = stream.into_split();
            (Reader::Plain(read), Writer::Plain(write))
        }
        Transport::Ws => {
            let mut stream = stream;
            let raw = ws_upgrade(&mut stream, addr)
                .await
                .map_err(|error| closed_during_login(name, format!(" (WebSocket: {error})")))?;
            let (read, write) = stream.into_split();
            let pong = Arc::new(PongSlot::default());
            (
                Reader::Ws(WsReader {
                    read,
                    raw,
                    pending: BytesMut::new(),
                    pong: pong.clone(),
                    closed: false,
                }),
                Writer::Ws(WsWriter {
                    write,
                    out: BytesMut::new(),
                    partial: BytesMut::new(),
                    pong,
                    close_sent: false,
                }),
            )
        }
        Transport::Tls(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), stream)
                .await
                .map_err(|error| closed_during_login(name, format!(" (TLS: {error})")))?;
            let (read, write) = tokio::io::split(stream);
            (Reader::Tls(read), Writer::Tls(write))
        }
    };
    let requests = login_requests(name, room);
    async {
        write.write_all(&requests).await?;
        write.flush().await
    }
    .await
    .map_err(|error| closed_during_login(name, format!(" ({error})")))?;
    let mut conn = Conn {
        read,
        write,
        rbuf: BytesMut::with_capacity(512),
        // Long enough for any list a server can send (see `MAX_SERVER_LINE`).
        codec: LineCodec::new(MAX_SERVER_LINE),
    };
    await_login(&mut conn, name, room).await?;
    Ok(conn)
}

/// `login|NAME`, then `join|ROOM` if given: both in one write, so joining costs no extra
/// round trip.
fn login_requests(name: &str, room: Option<&str>) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    Request::Login {
        name,
        password: None,
    }
    .encode(&mut out);
    if let Some(room) = room {
        Request::Join { room }.encode(&mut out);
    }
    out
}

/// Reads until the last reply [`login_requests`] asked for; an error reply, `bye` or the end
/// of the stream before it is the login's failure.
async fn await_login(conn: &mut Conn, name: &str, room: Option<&str>) -> Result<(), BenchError> {
    let mut logged_in = false;
    loop {
        let line = match conn.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(closed_during_login(name, String::new())),
            Err(error) => return Err(closed_during_login(name, format!(" ({error})"))),
        };
        match Event::parse(&line) {
            Ok(Event::LoggedIn(who)) if who == name => {
                logged_in = true;
                if room.is_none() {
                    return Ok(());
                }
            }
            // Room names are unique ignoring ASCII case, and the reply may spell it the server's way.
            Ok(Event::Joined(joined))
                if logged_in && room.is_some_and(|room| room.eq_ignore_ascii_case(joined)) =>
            {
                return Ok(())
            }
            Ok(Event::Error(..)) => {
                return Err(BenchError::LoginRefused {
                    name: name.to_owned(),
                    reply: String::from_utf8_lossy(&line).into_owned(),
                })
            }
            Ok(Event::Bye(_)) => {
                let text = String::from_utf8_lossy(&line);
                return Err(closed_during_login(name, format!(" (it sent `{text}`)")));
            }
            _ => {} // presence lists, room notices: not for the handshake
        }
    }
}

/// The server closed `name`'s connection before its login completed; `reason` is empty or
/// ` (why)`.
fn closed_during_login(name: &str, reason: String) -> BenchError {
    BenchError::ClosedDuringLogin {
        name: name.to_owned(),
        reason,
    }
}

/// Who connection `i` is: its user name and the room it joins, if any.
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) room: Option<String>,
}

/// [`connect_all`] for `who`, with a progress bar while the connections log in.
pub(crate) async fn connect_with_progress(
    options: &Options,
    who: Vec<Identity>,
    deadline: Instant,
) -> Result<Vec<Conn>, BenchError> {
    let total = who.len();
    let connected = Arc::new(AtomicUsize::new(0));
    let count = connected.clone();
    let _bar = Progress::start(options.progress, "connecting", total as u64, move || {
        let done = count.load(Ordering::Relaxed);
        (done as u64, format!("{done}/{total} logged in"))
    });
    connect_all(
        options.server,
        options.transport.clone(),
        who,
        options.connect_concurrency,
        deadline,
        connected,
    )
    .await
}

/// Opens and logs in every connection in `who`, at most `concurrency` at a time, counting
/// successes in `done` (for the progress bar). Returns them in order.
///
/// Bounded concurrency keeps the server's listen backlog from overflowing (a dropped SYN costs
/// a one-second retransmit) while still opening thousands of connections a second.
pub(crate) async fn connect_all(
    addr: SocketAddr,
    transport: Transport,
    who: Vec<Identity>,
    concurrency: usize,
    deadline: Instant,
    done: Arc<AtomicUsize>,
) -> Result<Vec<Conn>, BenchError> {
    let wanted = who.len();
    let queue = Arc::new(Queue {
        addr,
        transport,
        who,
        deadline,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        done,
    });
    let workers: Vec<_> = (0..concurrency.min(wanted))
        .map(|_| tokio::spawn(queue.clone().work()))
        .collect();
    let mut all = Vec::with_capacity(wanted);
    for worker in workers {
        // A worker only ends by returning (it never panics on network input); a join error
        // would mean the runtime is shutting down, which the count check below reports.
        if let Ok(opened) = worker.await {
            all.extend(opened);
        }
    }
    if let Some(error) = queue.first_error() {
        return Err(error);
    }
    if all.len() < wanted {
        return Err(BenchError::ConnectTimeout {
            done: all.len(),
            wanted,
        });
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, conn)| conn).collect())
}

/// The connections [`connect_all`] still has to open, shared by the workers that open them.
struct Queue {
    addr: SocketAddr,
    transport: Transport,
    who: Vec<Identity>,
    deadline: Instant,
    /// The index of the next identity to take.
    next: AtomicUsize,
    /// Set by the first failure: the others stop taking work, since the run is over.
    failed: AtomicBool,
    /// What the first failure was, unless it was the deadline.
    first_error: Mutex<Option<BenchError>>,
    /// Logged-in connections so far.
    done: Arc<AtomicUsize>,
}

impl Queue {
    /// One worker: logs in the next identity until none is left or some login has failed;
    /// returns what it opened, with each connection's index.
    async fn work(self: Arc<Self>) -> Vec<(usize, Conn)> {
        let mut opened = Vec::new();
        while !self.failed.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(identity) = self.who.get(i) else {
                break;
            };
            let attempt = handshake(
                self.addr,
                &self.transport,
                &identity.name,
                identity.room.as_deref(),
            );
            match timeout_at(self.deadline, attempt).await {
                Ok(Ok(conn)) => {
                    opened.push((i, conn));
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    self.failed.store(true, Ordering::Relaxed);
                    self.lock_error().get_or_insert(error);
                }
                Err(_) => self.failed.store(true, Ordering::Relaxed),
            }
        }
        opened
    }

    fn first_error(&self) -> Option<BenchError> {
        self.lock_error().take()
    }

    fn lock_error(&self) -> std::sync::MutexGuard<'_, Option<BenchError>> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
