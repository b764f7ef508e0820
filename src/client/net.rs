//! The network conversation: connect, log in, then relay lines both ways until `bye`.
//!
//! Everything the session knows (the current target, whether we asked to leave) lives in the
//! one async task running [`converse`], so nothing is shared with the input thread, which only
//! ships lines over a channel. Requests are written by a task of their own ([`write_requests`])
//! so that a full socket never stops us reading.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::{
    io::AsyncWriteExt,
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::mpsc,
    time::Instant,
};
use tokio_util::codec::FramedRead;

use super::{
    error::{describe_io, ClientError},
    input::{parse_input, Action, Chat, HELP},
    render::{describe_error, render_event, sanitize},
    terminal::Output,
    Ending, Options,
};
use crate::codec::{ErrorKind, Event, Frame, LineCodec, Request, MAX_SERVER_LINE};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that accepts the connection but never answers the login is not a chat server.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `bye` after `exit`: without it we cannot know everything was delivered.
const BYE_TIMEOUT: Duration = Duration::from_secs(10);

/// Encoded requests waiting for the socket. While full, no more input is taken, but server
/// lines keep being read, so a slow server cannot stall the display.
const OUTBOUND_QUEUE: usize = 256;

/// Server lines, split and bounded by the codec.
pub(crate) type Reader = FramedRead<OwnedReadHalf, LineCodec>;

/// Connects to the server and logs in; returns the connection and the name the server
/// confirmed. Both steps are bounded in time, so a wrong address fails rather than hangs.
pub(crate) async fn connect_and_login(
    options: &Options,
) -> Result<(Reader, OwnedWriteHalf, String), ClientError> {
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
    let (read_half, mut writer) = stream.into_split();
    let mut reader = FramedRead::new(read_half, LineCodec::new(MAX_SERVER_LINE));
    let login = login(&mut reader, &mut writer, &options.name);
    match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
        Ok(Ok(name)) => Ok((reader, writer, name)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ClientError::LoginTimeout(server.clone())),
    }
}

/// Returns the name the server confirmed. Events that follow `ok|login` (the initial online
/// list) stay buffered in `reader` for the session.
async fn login(
    reader: &mut Reader,
    writer: &mut OwnedWriteHalf,
    name: &str,
) -> Result<String, ClientError> {
    writer
        .write_all(&encode(Request::Login { name }))
        .await
        .map_err(ClientError::Lost)?;
    loop {
        let line = match reader.next().await {
            Some(Ok(Frame::Line(line))) => line,
            Some(Ok(Frame::TooLong | Frame::Skipped)) => continue,
            Some(Err(err)) => return Err(ClientError::Lost(err)),
            None => return Err(ClientError::ClosedBeforeLogin),
        };
        match Event::parse(&line) {
            Ok(Event::LoggedIn(name)) => return Ok(name.to_owned()),
            Ok(Event::Ping) => writer
                .write_all(&encode(Request::Pong))
                .await
                .map_err(ClientError::Lost)?,
            Ok(Event::Error(ErrorKind::NameTaken, name)) => {
                return Err(ClientError::NameTaken(name.to_owned()))
            }
            Ok(Event::Error(ErrorKind::BadName, name)) => {
                return Err(ClientError::NameRefused(name.to_owned()))
            }
            Ok(Event::Error(kind, arg)) => {
                return Err(ClientError::LoginRefused(describe_error(kind, arg)))
            }
            Ok(Event::Bye(reason)) => return Err(ClientError::Refused(reason)),
            _ => {}
        }
    }
}

/// The session proper: shows server events and sends what the user types, until `bye` or the
/// connection ends.
pub(crate) async fn converse(
    reader: &mut Reader,
    writer: OwnedWriteHalf,
    mut inputs: mpsc::Receiver<String>,
    output: &mut Output,
) -> Result<Ending, ClientError> {
    let mut chat = Chat::default();
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    // Writing on its own task keeps us reading while the socket is full: a server that is
    // blocked writing to us must never wait on us blocked writing to it.
    tokio::spawn(write_requests(writer, queue));
    let mut bye_deadline = None;
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
                match Event::parse(&line) {
                    Err(_) => output.line(&sanitize(String::from_utf8_lossy(&line).into_owned())),
                    Ok(Event::Ping) => {
                        // Only fails when the queue is full, and then the server is not
                        // reading either: a lost pong changes nothing.
                        let _ = outbound.try_send(encode(Request::Pong));
                    }
                    // Only a plain `bye` answers our `exit`: a `bye|REASON` (shutdown,
                    // too-slow…) means the server closed on its own, even mid-quit, and some
                    // of what we sent may have been dropped.
                    Ok(Event::Bye(None)) if bye_deadline.is_some() => return Ok(Ending::Quit),
                    Ok(Event::Bye(reason)) => return Ok(Ending::ClosedByServer(reason)),
                    Ok(event) => {
                        chat.observe(&event);
                        if let Some(line) = render_event(&event) {
                            output.line(&line);
                        }
                    }
                }
            }
            (permit, input) = next_input(&outbound, &mut inputs), if bye_deadline.is_none() => {
                let action = match &input {
                    Some(line) => parse_input(line, chat.target()),
                    // End of input (EOF, Ctrl-D, Ctrl-C) means leave, but only after the
                    // server has confirmed it got everything.
                    None => Action::Quit,
                };
                match action {
                    Action::Nothing => {}
                    Action::Send(request) => permit.send(encode(request)),
                    Action::SetTarget(target) => {
                        output.line(&format!("* talking to {target}"));
                        chat.set_target(target);
                    }
                    Action::Help => HELP.iter().for_each(|line| output.line(line)),
                    Action::Hint(hint) => output.line(&hint),
                    Action::Quit => {
                        permit.send(encode(Request::Exit));
                        bye_deadline = Some(Instant::now() + BYE_TIMEOUT);
                    }
                }
            }
            () = sleep_until(bye_deadline) => return Err(ClientError::NoBye),
        }
    }
}

/// The next typed line, but only once there is room to send whatever it turns into, so input
/// waits rather than piling up behind a stalled socket. `None` means input has ended.
async fn next_input<'a>(
    outbound: &'a mpsc::Sender<Bytes>,
    inputs: &mut mpsc::Receiver<String>,
) -> (mpsc::Permit<'a, Bytes>, Option<String>) {
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
async fn write_requests(mut writer: OwnedWriteHalf, mut queue: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = queue.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            // The reader sees the same broken connection and ends the session.
            break;
        }
    }
}

fn encode(request: Request<'_>) -> Bytes {
    request.to_line().freeze()
}
