//! The terminal client.
//!
//! The pure parts — what a typed line means ([`parse_input`]), how a server event reads
//! ([`render_event`]) and where plain lines go ([`Chat`]) — are kept apart from the I/O so they
//! can be tested without a socket or a terminal.
//!
//! The I/O runs the network on a single-threaded tokio runtime and reads the user's lines on a
//! plain thread, because both rustyline and blocking stdin reads block. Everything the session
//! knows (the current target, whether we asked to leave) lives in the one async task, so no state
//! is shared between threads; the input thread only ships lines.

use std::{
    fmt,
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    thread,
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use rustyline::{error::ReadlineError, DefaultEditor, ExternalPrinter};
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

use crate::codec::{
    is_valid_name, ByeReason, ErrorKind, Event, Frame, LineCodec, Request, MAX_SERVER_LINE,
};

/// Where the client connects when neither `--server` nor `CHAT_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that accepts the connection but never answers the login is not a chat server.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for `bye` after `exit`: without it we cannot know everything was delivered.
const BYE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines typed ahead of the network; small, so piped input is read only as fast as it is sent.
const INPUT_QUEUE: usize = 64;
/// Encoded requests waiting for the socket. While full, no more input is taken, but server
/// lines keep being read, so a slow server cannot stall the display.
const OUTBOUND_QUEUE: usize = 256;

const PROMPT: &str = "> ";

const HELP: &[&str] = &[
    "* a plain line goes to the current target; start it with // to send a line beginning with /",
    "* /msg NAME TEXT    send TEXT to NAME only",
    "* /to NAME          send plain lines to NAME",
    "* /to #ROOM         send plain lines to ROOM",
    "* /who              list who is online",
    "* /join ROOM        join ROOM (it is created if needed)",
    "* /leave ROOM       leave ROOM",
    "* /say ROOM TEXT    say TEXT in ROOM",
    "* /rooms            list the rooms that have members",
    "* /quit             leave the chat (so do `exit` and Ctrl-D)",
];

/// What the binary collects from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The name to log in with.
    pub name: String,
    /// `HOST:PORT` of the chat server.
    pub server: String,
}

/// Where a plain (non-command) line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A direct message: `talk|NAME|TEXT`.
    User(String),
    /// A room message: `say|ROOM|TEXT`.
    Room(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(name) => f.write_str(name),
            Target::Room(room) => write!(f, "#{room}"),
        }
    }
}

/// What one typed line asks for. Requests borrow from the line or the target, so interpreting
/// a line allocates only for the rare local outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// A blank line: nothing to do.
    Nothing,
    /// Send this to the server.
    Send(Request<'a>),
    /// Change where plain lines go.
    SetTarget(Target),
    /// Show the command list.
    Help,
    /// Leave: send `exit` and wait for `bye`.
    Quit,
    /// A line that cannot be sent as typed; show this one-line explanation and send nothing.
    Hint(String),
}

/// The session state that decides where plain lines go.
///
/// Until the user picks a target, it follows the last online notice, as the original program
/// did: in a two-person chat, whoever logged in is whom you want to talk to. Once the user has
/// chosen with `/to`, later arrivals no longer move it, so a message is never silently
/// redirected to someone who just happened to log in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chat {
    target: Option<Target>,
    chosen: bool,
}

impl Chat {
    /// Where a plain line would go now.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The user's explicit choice; it sticks.
    pub fn set_target(&mut self, target: Target) {
        self.target = Some(target);
        self.chosen = true;
    }

    /// Lets an incoming event move the default target.
    pub fn observe(&mut self, event: &Event<'_>) {
        if let Event::Online(name) = event {
            if !self.chosen {
                self.target = Some(Target::User((*name).to_owned()));
            }
        }
    }
}

/// Interprets one typed line, given where plain lines currently go.
pub fn parse_input<'a>(line: &'a str, target: Option<&'a Target>) -> Action<'a> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Action::Nothing;
    }
    if quits(line) {
        return Action::Quit;
    }
    let Some(command) = line.strip_prefix('/') else {
        return to_target(line, target);
    };
    if command.starts_with('/') {
        return to_target(command, target);
    }
    let (verb, args) = split_word(command);
    match verb {
        "msg" => match split_word(args) {
            (name, text) if !name.is_empty() && !text.trim().is_empty() => match user(name) {
                Ok(to) => Action::Send(Request::Talk { to, text }),
                Err(hint) => hint,
            },
            _ => usage("/msg NAME TEXT"),
        },
        "to" => match split_word(args) {
            (name, "") if !name.is_empty() => {
                if name.starts_with('#') {
                    match room(name) {
                        Ok(room) => Action::SetTarget(Target::Room(room.to_owned())),
                        Err(hint) => hint,
                    }
                } else {
                    match user(name) {
                        Ok(name) => Action::SetTarget(Target::User(name.to_owned())),
                        Err(hint) => hint,
                    }
                }
            }
            _ => match target {
                Some(target) => Action::Hint(format!(
                    "! usage: /to NAME or /to #ROOM (now talking to {target})"
                )),
                None => usage("/to NAME or /to #ROOM"),
            },
        },
        "who" if args.is_empty() => Action::Send(Request::Who),
        "who" => usage("/who"),
        "rooms" if args.is_empty() => Action::Send(Request::Rooms),
        "rooms" => usage("/rooms"),
        "join" | "leave" => match split_word(args) {
            (name, "") if !name.is_empty() => match room(name) {
                Ok(room) if verb == "join" => Action::Send(Request::Join { room }),
                Ok(room) => Action::Send(Request::Leave { room }),
                Err(hint) => hint,
            },
            _ => usage(&format!("/{verb} ROOM")),
        },
        "say" => match split_word(args) {
            (name, text) if !name.is_empty() && !text.trim().is_empty() => match room(name) {
                Ok(room) => Action::Send(Request::Say { room, text }),
                Err(hint) => hint,
            },
            _ => usage("/say ROOM TEXT"),
        },
        "help" => Action::Help,
        _ => Action::Hint(format!("! unknown command /{verb}: try /help")),
    }
}

/// Whether a typed line means leave: `/quit`, `/exit`, or — as in the original client, which
/// had no commands — `exit` on its own.
fn quits(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line.trim() == "exit"
        || line
            .strip_prefix('/')
            .is_some_and(|command| matches!(split_word(command).0, "quit" | "exit"))
}

/// A plain line, sent wherever plain lines go.
fn to_target<'a>(text: &'a str, target: Option<&'a Target>) -> Action<'a> {
    match target {
        Some(Target::User(to)) => Action::Send(Request::Talk { to, text }),
        Some(Target::Room(room)) => Action::Send(Request::Say { room, text }),
        None => Action::Hint("! no one to talk to yet: use /to NAME or /msg NAME TEXT".to_owned()),
    }
}

/// The first word and the rest, with the separating whitespace dropped but the rest's own
/// spacing kept, since it may be message text.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], s[end..].trim_start()),
        None => (s, ""),
    }
}

/// What a valid user or room name is made of (see [`is_valid_name`]).
const NAME_RULE: &str = "use 1 to 32 of A-Z a-z 0-9 _ . -";

fn user(name: &str) -> Result<&str, Action<'static>> {
    checked(name, name, "name")
}

/// Users think of rooms as `#rust`; the wire says `rust`.
fn room(name: &str) -> Result<&str, Action<'static>> {
    checked(name.strip_prefix('#').unwrap_or(name), name, "room name")
}

/// Names are checked here because a `|` or a stray character would otherwise change the
/// meaning of the line the server receives. `typed` is the name as the user wrote it.
fn checked<'a>(name: &'a str, typed: &str, what: &str) -> Result<&'a str, Action<'static>> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(Action::Hint(format!(
            "! \"{typed}\" is not a valid {what}: {NAME_RULE}"
        )))
    }
}

fn usage(form: &str) -> Action<'static> {
    Action::Hint(format!("! usage: {form}"))
}

/// The line shown for a server event, or `None` for events the user need not see (`ping` is
/// answered silently; `ok|join` is followed by `members`, which says the same and more).
pub fn render_event(event: &Event<'_>) -> Option<String> {
    let line = match event {
        Event::LoggedIn(name) => format!("* logged in as {name}"),
        Event::Joined(_) | Event::Ping | Event::Pong => return None,
        Event::Left(room) => format!("* you left #{room}"),
        Event::Online(name) => format!("* {name} is online"),
        Event::Offline(name) => format!("* {name} left"),
        Event::Talk { from, text } => format!("<{from}> {text}"),
        Event::Users(names) => format!("users: {}", list(names, "")),
        Event::Members { room, names } => {
            format!("* you joined #{room} (members: {})", list(names, ""))
        }
        Event::RoomJoined { room, name } => format!("* {name} joined #{room}"),
        Event::RoomLeft { room, name } => format!("* {name} left #{room}"),
        Event::Say { room, from, text } => format!("[#{room}] <{from}> {text}"),
        Event::Rooms(rooms) => format!("rooms: {}", list(rooms, "#")),
        Event::Bye(None) => "* server closed the connection".to_owned(),
        Event::Bye(Some(reason)) => format!("* server closed the connection: {reason}"),
        Event::Error(kind, arg) => format!("! {}", describe_error(*kind, arg)),
    };
    Some(sanitize(line))
}

fn list(names: &[&str], prefix: &str) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut out = String::with_capacity(names.iter().map(|n| n.len() + prefix.len() + 2).sum());
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(prefix);
        out.push_str(name);
    }
    out
}

/// A server error as a sentence a user can act on.
fn describe_error(kind: ErrorKind, arg: &str) -> String {
    match kind {
        ErrorKind::BadName if arg.is_empty() => "that is not a valid name".to_owned(),
        ErrorKind::BadName => format!("\"{arg}\" is not a valid name"),
        ErrorKind::NameTaken => format!("the name \"{arg}\" is already taken"),
        ErrorKind::AlreadyLoggedIn => "you are already logged in".to_owned(),
        ErrorKind::NotLoggedIn => "you are not logged in".to_owned(),
        ErrorKind::NoSuchUser => format!("no such user: {arg}"),
        ErrorKind::AlreadyInRoom => format!("you are already in #{arg}"),
        ErrorKind::NotInRoom => format!("you are not in #{arg}"),
        ErrorKind::UnknownCommand => format!("the server does not know the command \"{arg}\""),
        ErrorKind::BadArguments => format!("the server rejected the arguments of \"{arg}\""),
        ErrorKind::LineTooLong if arg.is_empty() => "that line is too long".to_owned(),
        ErrorKind::LineTooLong => format!("that line is too long (the limit is {arg} bytes)"),
        ErrorKind::BadEncoding => "the server could not read that line: it is not UTF-8".to_owned(),
        ErrorKind::RateLimited => "slow down: rate limited".to_owned(),
        ErrorKind::TooManyRooms => {
            format!("cannot join #{arg}: you are in too many rooms, or the server has too many")
        }
    }
}

/// Other users' text reaches our terminal: control characters (escape sequences above all)
/// must not be able to move the cursor, retitle the window or hide text.
fn sanitize(line: String) -> String {
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if line.contains(unsafe_char) {
        line.chars()
            .map(|c| {
                if unsafe_char(c) {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect()
    } else {
        line
    }
}

/// Why the client stopped early; each displays as the one sentence shown on stderr.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("\"{0}\" is not a valid name: {rule}", rule = NAME_RULE)]
    InvalidName(String),
    #[error("cannot start: {0}")]
    Runtime(io::Error),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("no answer from {0} to the login")]
    LoginTimeout(String),
    #[error("the name \"{0}\" is already taken")]
    NameTaken(String),
    #[error("the server does not accept the name \"{0}\"")]
    NameRefused(String),
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    #[error("{}", refusal(*.0))]
    Refused(Option<ByeReason>),
    #[error("the server closed the connection before the login completed")]
    ClosedBeforeLogin,
    #[error("the server closed the connection unexpectedly")]
    Closed,
    #[error("lost the connection to the server: {}", describe_io(.0))]
    Lost(io::Error),
    #[error("the server did not confirm the exit; some lines may not have been delivered")]
    NoBye,
    #[error("cannot use the terminal: {0}")]
    Terminal(ReadlineError),
}

fn refusal(reason: Option<ByeReason>) -> String {
    match reason {
        Some(ByeReason::ServerFull) => "the server is full; try again later".to_owned(),
        Some(ByeReason::Shutdown) => "the server is shutting down".to_owned(),
        Some(reason) => format!("the server closed the connection: {reason}"),
        None => "the server closed the connection".to_owned(),
    }
}

/// `Connection refused (os error 111)` reads better without its errno.
fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// How a session that got past the login ended.
#[derive(Debug)]
enum Ending {
    /// We said `exit` and the server said `bye`.
    Quit,
    /// The server said `bye` on its own.
    ClosedByServer(Option<ByeReason>),
}

/// Runs the client to the end and reports the outcome as the process exit code; errors are
/// printed here, as one sentence on stderr, so the binary stays a thin argument parser.
pub fn run(options: &Options) -> ExitCode {
    match run_client(options) {
        Ok(Ending::Quit) => ExitCode::SUCCESS,
        Ok(Ending::ClosedByServer(_)) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(options: &Options) -> Result<Ending, ClientError> {
    if !is_valid_name(&options.name) {
        return Err(ClientError::InvalidName(options.name.clone()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    // Log in before touching the terminal, so a refusal is a plain message, not a torn prompt.
    let (mut reader, writer, name) = runtime.block_on(connect_and_login(options))?;

    let (lines, inputs) = mpsc::channel(INPUT_QUEUE);
    let mut output = Output::Plain;
    let mut editor_thread = None;
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        let mut editor = DefaultEditor::new().map_err(ClientError::Terminal)?;
        // Fails on terminals rustyline does not drive (TERM=dumb); it then reads plain lines
        // without raw mode, and plain output is right.
        let printer = editor.create_external_printer().ok();
        let reading = thread::spawn(move || read_terminal(editor, lines));
        if let Some(printer) = printer {
            output = Output::Terminal(Box::new(printer));
            editor_thread = Some(reading);
        }
    } else {
        thread::spawn(move || read_plain(lines));
    }

    output.line(&render_event(&Event::LoggedIn(&name)).unwrap_or_default());
    let ending = runtime.block_on(converse(&mut reader, writer, inputs, &mut output));
    if let Some(editor_thread) = editor_thread {
        stop_editor(editor_thread);
    }
    drop(output);
    let ending = ending?;
    if let Ending::ClosedByServer(reason) = ending {
        // Printed after the editor is gone, so it cannot be lost in rustyline's print queue.
        print_plain(&render_event(&Event::Bye(reason)).unwrap_or_default());
    }
    Ok(ending)
}

type Reader = FramedRead<OwnedReadHalf, LineCodec>;

async fn connect_and_login(
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
            Some(Ok(Frame::TooLong)) => continue,
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
async fn converse(
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

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

/// Reads lines with rustyline until the user leaves or the session interrupts us. The editor
/// is handed back rather than dropped so its SIGINT handler stays installed until the session
/// is done interrupting (see [`stop_editor`]).
///
/// Known rustyline 17.0.2 limitation (kkawakam/rustyline#976): once an external printer exists,
/// keys that arrive in one read (a paste, a scripted pty) are handled one per later arrival, so
/// the tail of a paste may wait for the next keystroke. Typed input is unaffected.
fn read_terminal(mut editor: DefaultEditor, lines: mpsc::Sender<String>) -> DefaultEditor {
    // Ctrl-C, Ctrl-D, an error, or the session telling us it is over: all end the loop, and
    // the session takes the end of input to mean leave.
    while let Ok(line) = editor.readline(PROMPT) {
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        // Stop prompting at once: the session is only waiting for `bye` now.
        let quit = quits(&line);
        if lines.blocking_send(line).is_err() || quit {
            break;
        }
    }
    editor
}

/// Reads stdin lines as they come. Bytes that are not UTF-8 are replaced rather than
/// rejected: a typo in an encoding should not end the session.
fn read_plain(lines: mpsc::Sender<String>) {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                // `parse_input` drops the line ending.
                let line = String::from_utf8_lossy(&buf).into_owned();
                if lines.blocking_send(line).is_err() {
                    break;
                }
            }
        }
    }
}

/// Makes the editor thread's `readline` return and waits for it, so the terminal leaves raw
/// mode before we exit. rustyline has no way to cancel a pending `readline` except the SIGINT
/// its own handler turns into `Interrupted`; that handler is installed whenever an external
/// printer could be made, which is the only case this is called for.
fn stop_editor(editor_thread: thread::JoinHandle<DefaultEditor>) {
    // The last line printed may still sit in rustyline's one-slot print queue, and a pending
    // interrupt wins over it: give the editor thread a moment to show it.
    thread::sleep(Duration::from_millis(50));
    #[cfg(unix)]
    {
        // SAFETY: `kill` has no memory-safety preconditions; SIGINT goes to rustyline's handler,
        // which stays installed until the editor is dropped below.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGINT);
        }
        let _ = editor_thread.join();
    }
    #[cfg(not(unix))]
    drop(editor_thread); // no portable way to interrupt it; exiting the process ends it
}

/// Where session lines go: through rustyline's external printer when it owns the terminal, so
/// incoming lines appear above the prompt without clobbering what is being typed.
enum Output {
    Plain,
    Terminal(Box<dyn ExternalPrinter>),
}

impl Output {
    fn line(&mut self, line: &str) {
        if let Output::Terminal(printer) = self {
            // Outside raw mode rustyline writes the message as is: it needs its own newline.
            if printer.print(format!("{line}\n")).is_ok() {
                return;
            }
        }
        print_plain(line);
    }
}

/// One line, flushed at once: a reader on the other end of a pipe must see each event as it
/// happens. A closed stdout is not worth dying for; the session goes on.
fn print_plain(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_target(name: &str) -> Target {
        Target::User(name.to_owned())
    }

    fn room_target(room: &str) -> Target {
        Target::Room(room.to_owned())
    }

    fn talk<'a>(to: &'a str, text: &'a str) -> Action<'a> {
        Action::Send(Request::Talk { to, text })
    }

    fn say<'a>(room: &'a str, text: &'a str) -> Action<'a> {
        Action::Send(Request::Say { room, text })
    }

    fn is_hint(action: &Action<'_>) -> bool {
        matches!(action, Action::Hint(hint) if hint.starts_with("! ") && !hint.contains('\n'))
    }

    #[test]
    fn plain_lines_go_to_the_current_target() {
        let bob = user_target("bob");
        assert_eq!(parse_input("hi there", Some(&bob)), talk("bob", "hi there"));
        let rust = room_target("rust");
        assert_eq!(parse_input("a|b", Some(&rust)), say("rust", "a|b"));
        assert_eq!(
            parse_input("  indented\r\n", Some(&bob)),
            talk("bob", "  indented")
        );
    }

    #[test]
    fn a_plain_line_without_a_target_is_a_hint() {
        let action = parse_input("hello", None);
        assert!(is_hint(&action), "{action:?}");
        assert!(matches!(&action, Action::Hint(h) if h.contains("/to NAME")));
    }

    #[test]
    fn a_double_slash_sends_a_literal_slash() {
        let bob = user_target("bob");
        assert_eq!(parse_input("//shrug", Some(&bob)), talk("bob", "/shrug"));
    }

    #[test]
    fn blank_lines_do_nothing() {
        let bob = user_target("bob");
        for line in ["", "   ", "\t", "\r\n"] {
            assert_eq!(parse_input(line, Some(&bob)), Action::Nothing);
        }
    }

    #[test]
    fn exit_and_quit_leave() {
        let bob = user_target("bob");
        for line in ["exit", " exit ", "/quit", "/exit"] {
            assert_eq!(parse_input(line, Some(&bob)), Action::Quit, "{line}");
        }
        // Only `exit` alone: a sentence starting with it is a message.
        assert_eq!(parse_input("exit now", Some(&bob)), talk("bob", "exit now"));
    }

    #[test]
    fn msg_sends_a_direct_message_without_changing_the_target() {
        assert_eq!(
            parse_input("/msg carol  hi  you ", None),
            talk("carol", "hi  you ")
        );
        for line in ["/msg", "/msg carol", "/msg carol   "] {
            assert_eq!(parse_input(line, None), usage("/msg NAME TEXT"), "{line}");
        }
        assert!(is_hint(&parse_input("/msg ca|rol hi", None)));
        assert!(is_hint(&parse_input("/msg #rust hi", None)));
    }

    #[test]
    fn to_sets_a_user_or_room_target() {
        assert_eq!(
            parse_input("/to bob", None),
            Action::SetTarget(user_target("bob"))
        );
        assert_eq!(
            parse_input("/to #rust", None),
            Action::SetTarget(room_target("rust"))
        );
        assert!(is_hint(&parse_input("/to", None)));
        assert!(is_hint(&parse_input("/to bob carol", None)));
        assert!(is_hint(&parse_input("/to b|b", None)));
        assert!(is_hint(&parse_input("/to #", None)));
        let bob = user_target("bob");
        assert!(matches!(parse_input("/to", Some(&bob)), Action::Hint(h) if h.contains("bob")));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse_input("/who", None), Action::Send(Request::Who));
        assert_eq!(parse_input("/rooms", None), Action::Send(Request::Rooms));
        assert_eq!(parse_input("/help", None), Action::Help);
        assert_eq!(parse_input("/who bob", None), usage("/who"));
        assert_eq!(parse_input("/rooms all", None), usage("/rooms"));
    }

    #[test]
    fn room_commands_accept_an_optional_hash() {
        for line in ["/join rust", "/join #rust", "/join   #rust  "] {
            assert_eq!(
                parse_input(line, None),
                Action::Send(Request::Join { room: "rust" })
            );
        }
        for line in ["/leave rust", "/leave #rust"] {
            assert_eq!(
                parse_input(line, None),
                Action::Send(Request::Leave { room: "rust" })
            );
        }
        for line in ["/say rust hi all", "/say #rust hi all"] {
            assert_eq!(parse_input(line, None), say("rust", "hi all"));
        }
        assert_eq!(parse_input("/join", None), usage("/join ROOM"));
        assert_eq!(parse_input("/join a b", None), usage("/join ROOM"));
        assert_eq!(parse_input("/leave", None), usage("/leave ROOM"));
        assert_eq!(parse_input("/say rust", None), usage("/say ROOM TEXT"));
        assert_eq!(parse_input("/say", None), usage("/say ROOM TEXT"));
        assert!(is_hint(&parse_input("/join ##rust", None)));
        assert!(is_hint(&parse_input("/join r|ust", None)));
        assert!(is_hint(&parse_input(
            &format!("/join {}", "x".repeat(33)),
            None
        )));
    }

    #[test]
    fn unknown_commands_are_a_hint() {
        for line in ["/dance", "/MSG bob hi", "/ who"] {
            let action = parse_input(line, None);
            assert!(is_hint(&action), "{line}: {action:?}");
        }
        assert_eq!(
            parse_input("/dance now", None),
            Action::Hint("! unknown command /dance: try /help".to_owned())
        );
    }

    #[test]
    fn the_default_target_follows_the_last_online_notice() {
        let mut chat = Chat::default();
        assert_eq!(chat.target(), None);
        chat.observe(&Event::Online("bob"));
        chat.observe(&Event::Online("carol"));
        assert_eq!(chat.target(), Some(&user_target("carol")));
        assert_eq!(parse_input("hi", chat.target()), talk("carol", "hi"));
        // Other events leave it alone, even carol leaving: the server will say she is gone.
        chat.observe(&Event::Offline("carol"));
        chat.observe(&Event::Talk {
            from: "bob",
            text: "hey",
        });
        assert_eq!(chat.target(), Some(&user_target("carol")));
    }

    #[test]
    fn a_chosen_target_sticks() {
        let mut chat = Chat::default();
        chat.observe(&Event::Online("bob"));
        chat.set_target(room_target("rust"));
        chat.observe(&Event::Online("carol"));
        assert_eq!(chat.target(), Some(&room_target("rust")));
        assert_eq!(
            parse_input("hello all", chat.target()),
            say("rust", "hello all")
        );
    }

    fn render(event: Event<'_>) -> Option<String> {
        render_event(&event)
    }

    #[test]
    fn renders_every_event() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            render(Event::LoggedIn("alice")),
            some("* logged in as alice")
        );
        assert_eq!(render(Event::Joined("rust")), None);
        assert_eq!(render(Event::Left("rust")), some("* you left #rust"));
        assert_eq!(render(Event::Online("bob")), some("* bob is online"));
        assert_eq!(render(Event::Offline("bob")), some("* bob left"));
        assert_eq!(
            render(Event::Talk {
                from: "bob",
                text: "hi | x"
            }),
            some("<bob> hi | x")
        );
        assert_eq!(
            render(Event::Users(vec!["alice", "bob"])),
            some("users: alice, bob")
        );
        assert_eq!(render(Event::Users(vec![])), some("users: none"));
        assert_eq!(
            render(Event::Members {
                room: "rust",
                names: vec!["alice", "bob"]
            }),
            some("* you joined #rust (members: alice, bob)")
        );
        assert_eq!(
            render(Event::RoomJoined {
                room: "rust",
                name: "bob"
            }),
            some("* bob joined #rust")
        );
        assert_eq!(
            render(Event::RoomLeft {
                room: "rust",
                name: "bob"
            }),
            some("* bob left #rust")
        );
        assert_eq!(
            render(Event::Say {
                room: "rust",
                from: "bob",
                text: "hi"
            }),
            some("[#rust] <bob> hi")
        );
        assert_eq!(render(Event::Rooms(vec!["a", "b"])), some("rooms: #a, #b"));
        assert_eq!(render(Event::Rooms(vec![])), some("rooms: none"));
        assert_eq!(render(Event::Ping), None);
        assert_eq!(render(Event::Pong), None);
        assert_eq!(
            render(Event::Bye(None)),
            some("* server closed the connection")
        );
        assert_eq!(
            render(Event::Bye(Some(ByeReason::Timeout))),
            some("* server closed the connection: timeout")
        );
    }

    #[test]
    fn renders_every_error_as_a_sentence() {
        let cases = [
            (ErrorKind::BadName, "b b", "! \"b b\" is not a valid name"),
            (
                ErrorKind::NameTaken,
                "bob",
                "! the name \"bob\" is already taken",
            ),
            (
                ErrorKind::AlreadyLoggedIn,
                "bob",
                "! you are already logged in",
            ),
            (ErrorKind::NotLoggedIn, "talk", "! you are not logged in"),
            (ErrorKind::NoSuchUser, "carol", "! no such user: carol"),
            (
                ErrorKind::AlreadyInRoom,
                "rust",
                "! you are already in #rust",
            ),
            (ErrorKind::NotInRoom, "rust", "! you are not in #rust"),
            (
                ErrorKind::UnknownCommand,
                "dance",
                "! the server does not know the command \"dance\"",
            ),
            (
                ErrorKind::BadArguments,
                "talk",
                "! the server rejected the arguments of \"talk\"",
            ),
            (
                ErrorKind::LineTooLong,
                "4096",
                "! that line is too long (the limit is 4096 bytes)",
            ),
            (ErrorKind::LineTooLong, "", "! that line is too long"),
            (
                ErrorKind::BadEncoding,
                "",
                "! the server could not read that line: it is not UTF-8",
            ),
            (ErrorKind::RateLimited, "", "! slow down: rate limited"),
        ];
        for (kind, arg, expected) in cases {
            assert_eq!(render(Event::Error(kind, arg)).as_deref(), Some(expected));
        }
    }

    #[test]
    fn control_characters_from_peers_are_defused() {
        let line = render(Event::Talk {
            from: "bob",
            text: "\x1b[2Jgone\ttab\x07",
        });
        assert_eq!(line.as_deref(), Some("<bob> \u{fffd}[2Jgone\ttab\u{fffd}"));
    }

    #[test]
    fn errors_are_one_sentence_without_errno() {
        let refused = io::Error::from_raw_os_error(111);
        let err = ClientError::Connect {
            server: "127.0.0.1:9999".to_owned(),
            reason: describe_io(&refused),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to 127.0.0.1:9999: "),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
        assert_eq!(
            ClientError::NameTaken("bob".to_owned()).to_string(),
            "the name \"bob\" is already taken"
        );
        assert_eq!(
            ClientError::Refused(Some(ByeReason::ServerFull)).to_string(),
            "the server is full; try again later"
        );
    }
}
