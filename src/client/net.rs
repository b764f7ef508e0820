//! The network conversation: connect, log in, then relay lines both ways until `bye`.
//!
//! Everything the session knows (the [`Chat`] state, whether we asked to leave) lives in the
//! one async task running [`converse`] and [`reconnect`], so nothing is shared with the input
//! thread, which only ships lines over a channel. Requests are written by a task of their own ([`write_requests`])
//! so that a full socket never stops us reading.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    sync::mpsc,
    time::Instant,
};
use tokio_util::codec::FramedRead;

use super::{
    chat::{Chat, Step},
    error::{describe_io, ClientError},
    input::{parse_input, Action, HELP},
    render::{describe_error, render_event, sanitize},
    terminal::Output,
    Ending, Options, Secret, TlsOptions, Typed,
};
use crate::codec::{ErrorKind, Event, Frame, LineCodec, Password, Request, MAX_SERVER_LINE};
use crate::tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that accepts the connection but never answers the login is not a chat server.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `bye` after `exit`: without it we cannot know everything was delivered.
const BYE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `/to` waits for the server to say whether its target is there.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Encoded requests waiting for the socket. While full, no more input is taken, but server
/// lines keep being read, so a slow server cannot stall the display.
const OUTBOUND_QUEUE: usize = 256;

/// A byte stream to the server: TCP, or TLS over TCP.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for S {}

/// The connection, whichever it is: boxed, since one client has one or two connections in its
/// life and the indirection costs nothing it would notice.
type Stream = Box<dyn ByteStream>;

/// The half of the connection requests are written to.
pub(crate) type Writer = WriteHalf<Stream>;

/// Server lines, split and bounded by the codec.
pub(crate) type Reader = FramedRead<ReadHalf<Stream>, LineCodec>;

/// Connects to the server and logs in; returns the connection and the name the server
/// confirmed. Both steps are bounded in time, so a wrong address fails rather than hangs.
///
/// `password` is the account's password, when known (`--password-stdin`, or asked for
/// earlier). When the server says the name needs one and none is known, it is asked for on the
/// terminal without echo if `ask` (then kept in `password` for reconnecting), and the login is
/// tried again on the same connection; otherwise that is [`ClientError::PasswordRequired`].
pub(crate) async fn connect_and_login(
    options: &Options,
    password: &mut Option<Secret>,
    ask: bool,
) -> Result<Connection, ClientError> {
    let server = &options.server;
    let connect_error = |reason: String| ClientError::Connect {
        server: server.clone(),
        reason,
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(connect_error(describe_io(&err))),
        Err(_) => return Err(connect_error("timed out".to_owned())),
    };
    // Chat lines are small and interactive: don't let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let stream: Stream = match &options.tls {
        None => Box::new(stream),
        Some(tls) => Box::new(handshake(stream, server, tls).await?),
    };
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read_half, LineCodec::new(MAX_SERVER_LINE));
    loop {
        let secret = password.as_ref().map(|secret| secret.0.as_str());
        let login = login(&mut reader, &mut writer, &options.name, secret);
        match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
            Ok(Ok(name)) => {
                return Ok(Connection {
                    reader,
                    writer,
                    name,
                })
            }
            Ok(Err(ClientError::PasswordRequired(name))) if password.is_none() && ask => {
                // Blocks the runtime while the user types; nothing else is under way yet.
                match super::secret::prompt_password(&format!("Password for {name}: ")) {
                    Ok(typed) if !typed.is_empty() => *password = Some(Secret(typed)),
                    _ => return Err(ClientError::PasswordRequired(name)),
                }
            }
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(ClientError::LoginTimeout(server.clone())),
        }
    }
}

/// The TLS handshake, checking the certificate against the HOST of `server`; bounded like the
/// connect. A certificate that does not verify is [`ClientError::Certificate`].
async fn handshake(
    stream: TcpStream,
    server: &str,
    tls: &TlsOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let tls_error = |reason: String| ClientError::Tls {
        server: server.to_owned(),
        reason,
    };
    let config = tls::client_config(tls.ca.as_deref()).map_err(|err| tls_error(err.to_string()))?;
    let name = tls::server_name(server).map_err(|err| tls_error(err.to_string()))?;
    let handshake = tls::connector(config).connect(name, stream);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => {
            // rustls says why in the inner error: a certificate it does not trust is the
            // one mistake worth its own sentence.
            let inner = err
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match inner {
                Some(rustls::Error::InvalidCertificate(why)) => Err(ClientError::Certificate {
                    server: server.to_owned(),
                    reason: describe_certificate_error(why),
                }),
                Some(other) => Err(tls_error(other.to_string())),
                None => Err(tls_error(describe_io(&err))),
            }
        }
        Err(_) => Err(tls_error("the TLS handshake timed out".to_owned())),
    }
}

/// Why a certificate was refused, in words rather than as rustls's debug names.
fn describe_certificate_error(error: &rustls::CertificateError) -> String {
    match error {
        // A bad signature: signed by another key than the one trusted (another self-signed
        // certificate of the same name, say).
        rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
            "it is not signed by an authority this machine trusts (for a self-signed \
             certificate, give it with --ca FILE)"
                .to_owned()
        }
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. } => {
            "it is for another host name (the HOST in --server must be one of its names)".to_owned()
        }
        rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        rustls::CertificateError::NotValidYet
        | rustls::CertificateError::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        // The rest (a signature algorithm no trusted certificate can check, a revoked or
        // malformed certificate…) come down to the same advice; rustls's own words are debug
        // names, not a sentence.
        _ => "it does not verify against the trusted certificates (for a self-signed \
              certificate, give it with --ca FILE)"
            .to_owned(),
    }
}

/// Returns the name the server confirmed. Events that follow `ok|login` (the initial online
/// list) stay buffered in `reader` for the session.
async fn login(
    reader: &mut Reader,
    writer: &mut Writer,
    name: &str,
    password: Option<&str>,
) -> Result<String, ClientError> {
    writer
        .write_all(&encode(Request::Login {
            name,
            password: password.map(Password),
        }))
        .await
        .map_err(ClientError::Lost)?;
    writer.flush().await.map_err(ClientError::Lost)?;
    loop {
        let line = match reader.next().await {
            Some(Ok(Frame::Line(line))) => line,
            Some(Ok(Frame::TooLong | Frame::Skipped)) => continue,
            Some(Err(err)) => return Err(ClientError::Lost(err)),
            None => return Err(ClientError::ClosedBeforeLogin),
        };
        match Event::parse(&line) {
            Ok(Event::LoggedIn(name)) => return Ok(name.to_owned()),
            Ok(Event::Ping) => {
                writer
                    .write_all(&encode(Request::Pong))
                    .await
                    .map_err(ClientError::Lost)?;
                writer.flush().await.map_err(ClientError::Lost)?;
            }
            Ok(Event::Error(ErrorKind::NameTaken, name)) => {
                return Err(ClientError::NameTaken(name.to_owned()))
            }
            Ok(Event::Error(ErrorKind::BadName, name)) => {
                return Err(ClientError::NameRefused(name.to_owned()))
            }
            Ok(Event::Error(ErrorKind::PasswordRequired, name)) => {
                return Err(ClientError::PasswordRequired(name.to_owned()))
            }
            Ok(Event::Error(ErrorKind::BadPassword, name)) => {
                return Err(ClientError::BadPassword(name.to_owned()))
            }
            Ok(Event::Error(ErrorKind::RateLimited, "login")) => {
                return Err(ClientError::Throttled)
            }
            Ok(Event::Error(ErrorKind::TlsRequired, _)) => return Err(ClientError::TlsRequired),
            Ok(Event::Error(kind, arg)) => {
                return Err(ClientError::LoginRefused(describe_error(kind, arg)))
            }
            Ok(Event::Bye(reason)) => return Err(ClientError::Refused(reason)),
            _ => {}
        }
    }
}

/// The online notices that came in the same read as the login reply (the server sends its
/// peer list right after `ok|login`), taken before the terminal starts, so that the first
/// prompt already shows the target they set instead of changing just as the user begins to
/// type. Only complete lines already buffered are looked at, and only `login|NAME` lines are
/// taken: anything else is left for the session.
pub(crate) fn take_greeting(connection: &mut Connection, chat: &mut Chat) -> Vec<Step> {
    let mut steps = Vec::new();
    loop {
        let online = {
            let buffered = connection.reader.read_buffer();
            buffered
                .iter()
                .position(|&b| b == b'\n')
                .is_some_and(|end| matches!(Event::parse(&buffered[..end]), Ok(Event::Online(_))))
        };
        if !online {
            return steps;
        }
        // A complete line is buffered, so this is ready without touching the socket.
        match connection.reader.next().now_or_never() {
            Some(Some(Ok(Frame::Line(line)))) => match Event::parse(&line) {
                Ok(event) => steps.push(chat.event(&event)),
                Err(_) => return steps,
            },
            _ => return steps,
        }
    }
}

/// A connection that got past the login.
pub(crate) struct Connection {
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
    /// The name the server confirmed.
    pub(crate) name: String,
}

/// How one connection's session ends: an [`Ending`], or the error that cut it short (a
/// connection lost or closed without `bye` among them).
pub(crate) type Session = Result<Ending, ClientError>;

/// The session proper: shows server events and sends what the user types, until `bye` or the
/// connection ends. `chat` outlives the connection, so a reconnect can pick up where it was.
pub(crate) async fn converse(
    connection: Connection,
    inputs: &mut mpsc::Receiver<Typed>,
    output: &mut Output,
    chat: &mut Chat,
) -> Session {
    let Connection {
        mut reader, writer, ..
    } = connection;
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    // Writing on its own task keeps us reading while the socket is full: a server that is
    // blocked writing to us must never wait on us blocked writing to it.
    tokio::spawn(write_requests(writer, queue));
    let mut bye_deadline = None;
    // While a `/to` waits for the server's answer, no further input is taken (so a line typed
    // after `/to carol` goes to carol), and the terminal's next prompt waits too; bounded.
    let mut lookup_deadline = None;
    loop {
        tokio::select! {
            // Server lines first: the greeting's `login|PEER` lines may already be buffered
            // when piped input arrives, and a line must be read against the target they set.
            biased;
            frame = reader.next() => {
                let line = match frame {
                    Some(Ok(Frame::Line(line))) => line,
                    Some(Ok(Frame::Skipped)) => continue,
                    Some(Ok(Frame::TooLong)) => {
                        output.line(&format!(
                            "! skipped a server line longer than {} MiB",
                            MAX_SERVER_LINE >> 20
                        ));
                        continue;
                    }
                    Some(Err(err)) => return Err(ClientError::Lost(err)),
                    None => return Err(ClientError::Closed),
                };
                let event = match Event::parse(&line) {
                    Ok(event) => event,
                    Err(_) => {
                        output.line(&sanitize(String::from_utf8_lossy(&line).into_owned()));
                        continue;
                    }
                };
                match event {
                    // Only a plain `bye` answers our `exit`: a `bye|REASON` (shutdown,
                    // too-slow…) means the server closed on its own, even mid-quit, and some
                    // of what we sent may have been dropped.
                    Event::Bye(None) if bye_deadline.is_some() => return Ok(Ending::Quit),
                    Event::Bye(reason) => return Ok(Ending::ClosedByServer(reason)),
                    event => {
                        let prompt = chat.prompt();
                        let step = chat.event(&event);
                        show(output, &step);
                        // Only a pong, and only dropped when the queue is full, when the
                        // server is not reading either: a lost pong changes nothing.
                        if !step.send.is_empty() {
                            let _ = outbound.try_send(step.send.freeze());
                        }
                        if lookup_deadline.is_some() && !chat.awaiting() {
                            lookup_deadline = None;
                            output.ready(&chat.prompt());
                        } else if chat.prompt() != prompt {
                            output.set_prompt(&chat.prompt());
                        }
                    }
                }
            }
            (permit, input) = next_input(&outbound, inputs),
                if bye_deadline.is_none() && lookup_deadline.is_none() =>
            {
                let step = match &input {
                    Some(typed) => {
                        chat.input_with(&typed.line, typed.prompt.as_deref(), &typed.secrets)
                    }
                    // End of input (EOF, Ctrl-D, Ctrl-C) means leave, but only after the
                    // server has confirmed it got everything.
                    None => chat.input("/quit", None),
                };
                show(output, &step);
                if !step.send.is_empty() {
                    permit.send(step.send.freeze());
                }
                if step.quit {
                    bye_deadline = Some(Instant::now() + BYE_TIMEOUT);
                } else if chat.awaiting() {
                    lookup_deadline = Some(Instant::now() + LOOKUP_TIMEOUT);
                } else {
                    output.ready(&chat.prompt());
                }
            }
            () = sleep_until(bye_deadline) => return Err(ClientError::NoBye),
            () = sleep_until(lookup_deadline) => {
                show(output, &chat.abandon_lookups());
                lookup_deadline = None;
                output.ready(&chat.prompt());
            }
        }
    }
}

/// Shows a step's lines.
pub(crate) fn show(output: &mut Output, step: &Step) {
    for line in &step.show {
        output.shown(line);
    }
}

/// How long the terminal client waits before each attempt to reconnect: 1 s, then twice as
/// long each time, up to 30 s (`attempt` counts from 0). Quick enough for a server restart,
/// and a server that is down for long is not hammered.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(MAX_BACKOFF)
}

/// After the connection is gone: waits, connects and logs in again, with [`backoff`] between
/// attempts, until it works, and rejoins the rooms `chat` was in. Meanwhile typed lines are
/// not sent (there is nowhere to send them), but `/quit` and end of input stop trying: then
/// `Ok(None)`. A login the server refuses (the name was taken meanwhile) is an error: trying
/// again would not change the answer.
pub(crate) async fn reconnect(
    options: &Options,
    password: &mut Option<Secret>,
    inputs: &mut mpsc::Receiver<Typed>,
    output: &mut Output,
    chat: &mut Chat,
) -> Result<Option<Connection>, ClientError> {
    // Missed messages that came before the connection was lost are not to be lost with it.
    show(output, &chat.connection_lost());
    // The editor may be waiting for the answer to a line the old connection never gave.
    output.ready(&chat.prompt());
    let mut attempt = 0;
    loop {
        let delay = backoff(attempt);
        attempt = attempt.saturating_add(1);
        output.line(&format!("* reconnecting in {} s…", delay.as_secs()));
        if offline(tokio::time::sleep(delay), inputs, output, chat)
            .await
            .is_none()
        {
            return Ok(None);
        }
        // No prompt here: the editor owns the terminal. A password asked for at the start is
        // kept for this.
        let login = connect_and_login(options, password, false);
        let Some(result) = offline(login, inputs, output, chat).await else {
            return Ok(None);
        };
        match result {
            Ok(mut connection) => {
                output.line(&render_event(&Event::LoggedIn(&connection.name)).unwrap_or_default());
                let rejoin = chat.reconnected(&connection.name);
                connection
                    .writer
                    .write_all(&rejoin)
                    .await
                    .map_err(ClientError::Lost)?;
                connection.writer.flush().await.map_err(ClientError::Lost)?;
                return Ok(Some(connection));
            }
            Err(
                err @ (ClientError::NameTaken(_)
                | ClientError::NameRefused(_)
                | ClientError::LoginRefused(_)
                | ClientError::PasswordRequired(_)
                | ClientError::BadPassword(_)
                | ClientError::TlsRequired
                | ClientError::Certificate { .. }),
            ) => return Err(ClientError::Relogin(Box::new(err))),
            Err(err) => output.line(&format!("! {err}")),
        }
    }
}

/// Runs `work` while no connection is up, answering typed lines meanwhile; `None` if the user
/// chose to quit first.
async fn offline<T>(
    work: impl std::future::Future<Output = T>,
    inputs: &mut mpsc::Receiver<Typed>,
    output: &mut Output,
    chat: &Chat,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return Some(result),
            input = inputs.recv() => {
                // End of input: the user is done, connected or not.
                let typed = input?;
                match parse_input(&typed.line) {
                    Action::Nothing => {}
                    Action::Quit => return None,
                    Action::Help => HELP.iter().for_each(|line| output.line(line)),
                    Action::Hint(hint) => output.line(&sanitize(hint)),
                    _ => output.line("! not connected, so nothing was sent (reconnecting…)"),
                }
                output.ready(&chat.prompt());
            }
        }
    }
}

/// The next typed line, but only once there is room to send whatever it turns into, so input
/// waits rather than piling up behind a stalled socket. `None` means input has ended.
async fn next_input<'a>(
    outbound: &'a mpsc::Sender<Bytes>,
    inputs: &mut mpsc::Receiver<Typed>,
) -> (mpsc::Permit<'a, Bytes>, Option<Typed>) {
    let Ok(permit) = outbound.reserve().await else {
        // The writer is gone, so the socket is too: the reader will report it.
        return std::future::pending().await;
    };
    (permit, inputs.recv().await)
}

/// `select!` needs a future for every branch: with no deadline, one that never completes.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The writer task: sends queued requests in order until the queue closes or the socket fails.
async fn write_requests(mut writer: Writer, mut queue: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = queue.recv().await {
        // Flushed, for TLS, which may keep bytes the socket did not take at once.
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            // The reader sees the same broken connection and ends the session.
            break;
        }
    }
}

fn encode(request: Request<'_>) -> Bytes {
    request.to_line().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_30_s() {
        let secs: Vec<u64> = (0..9).map(|attempt| backoff(attempt).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
