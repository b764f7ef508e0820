//! The terminal client.
//!
//! One file per job, so each can be read (and tested) on its own:
//!
//! - `input`: the input language, what a typed line means (`/msg`, `/to`, …);
//! - `chat`: the session's state: where plain lines go, the rooms we are in, the answers we
//!   wait for;
//! - `render`: server events as the lines a user reads;
//! - `net`: the network conversation, from connect and login to `bye`;
//! - `terminal`: the rustyline editor thread and the `Output` that prints above its prompt;
//! - `piped`: plain line reading when stdin is not a terminal;
//! - `error`: why the client stopped early, as one sentence each.
//!
//! The pure parts (`input`, `chat`, `render`) are kept apart from the I/O so they can be tested
//! without a socket or a terminal. The I/O runs the network on a single-threaded tokio runtime
//! and reads the user's lines on a plain thread, because both rustyline and blocking stdin reads
//! block.
//!
//! On a terminal, a connection that is lost (or closed by the server, say for a restart) is
//! made again, with a growing wait between attempts (`net::reconnect`), and the rooms are
//! rejoined; piped mode ends instead, with exit code 1, so a script sees the failure.

mod chat;
mod error;
mod input;
mod net;
mod piped;
mod render;
mod secret;
mod terminal;

use std::{
    io::{self, IsTerminal},
    process::ExitCode,
};

use tokio::sync::mpsc;

use self::{
    chat::Chat,
    error::ClientError,
    render::render_event,
    terminal::{print_plain, Output},
};
use crate::codec::{is_valid_name, ByeReason, Event};

pub use self::secret::prompt_password;

/// Where the client connects when neither `--server` nor `CHAT_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:9999";

/// Lines typed ahead of the network; small, so piped input is read only as fast as it is sent.
const INPUT_QUEUE: usize = 64;

/// What the binary collects from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The name to log in with.
    pub name: String,
    /// `HOST:PORT` of the chat server.
    pub server: String,
    /// Connect over TLS, when set.
    pub tls: Option<TlsOptions>,
    /// The password of the account NAME (`--password-stdin`); without it, a registered name's
    /// password is asked for on the terminal.
    pub password: Option<Secret>,
}

/// A password in the client's hands: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How the client speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// Trust the certificates in this PEM file (a self-signed server's) instead of the system's
    /// trust store.
    pub ca: Option<std::path::PathBuf>,
}

/// What the user typed: one line, or several from a paste.
#[derive(Debug)]
pub(crate) struct Typed {
    pub(crate) line: String,
    /// The prompt it was typed at, which shows where plain lines go; `None` without one.
    pub(crate) prompt: Option<String>,
    /// The passwords `/register` or `/passwd` asked for (see `input::secrets_for`).
    pub(crate) secrets: Vec<Secret>,
}

/// How a session that got past the login ended.
#[derive(Debug)]
enum Ending {
    /// We said `exit` and the server said `bye`.
    Quit,
    /// The server said `bye` on its own.
    ClosedByServer(Option<ByeReason>),
    /// The connection was gone and the user quit while the client tried to reconnect.
    GaveUp,
}

/// Runs the client to the end and reports the outcome as the process exit code; errors are
/// printed here, as one sentence on stderr, so the binary stays a thin argument parser.
pub fn run(options: &Options) -> ExitCode {
    match run_client(options) {
        Ok(Ending::Quit) => ExitCode::SUCCESS,
        // Not confirmed by the server: what was sent last may not have arrived.
        Ok(Ending::ClosedByServer(_) | Ending::GaveUp) => ExitCode::FAILURE,
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
    let interactive = io::stdin().is_terminal() && io::stdout().is_terminal();
    let mut password = options.password.clone();
    let mut connection = runtime.block_on(net::connect_and_login(
        options,
        &mut password,
        io::stdin().is_terminal(),
    ))?;
    let mut chat = Chat::new(&connection.name);
    let greeting = net::take_greeting(&mut connection, &mut chat);

    let (lines, mut inputs) = mpsc::channel(INPUT_QUEUE);
    let mut output = if interactive {
        terminal::start(lines, &chat.prompt()).map_err(ClientError::Terminal)?
    } else {
        piped::start(lines);
        Output::plain()
    };

    output.line(&render_event(&Event::LoggedIn(&connection.name)).unwrap_or_default());
    for step in &greeting {
        net::show(&mut output, step);
    }
    let ending = runtime.block_on(async {
        let mut connection = connection;
        loop {
            let ending = net::converse(connection, &mut inputs, &mut output, &mut chat).await;
            // A person at a terminal would only start the client again: it does so itself.
            // Scripts (piped mode) get the failure and decide for themselves. A user who
            // asked to leave has left, however the connection ended.
            if !interactive || chat.quitting() || !worth_reconnecting(&ending) {
                return ending;
            }
            match &ending {
                Ok(Ending::ClosedByServer(reason)) => {
                    output.line(&render_event(&Event::Bye(*reason)).unwrap_or_default())
                }
                Err(err) => output.line(&format!("! {err}")),
                Ok(_) => {}
            }
            match net::reconnect(options, &mut password, &mut inputs, &mut output, &mut chat)
                .await?
            {
                Some(next) => connection = next,
                None => return Ok(Ending::GaveUp),
            }
        }
    });
    output.close();
    let ending = ending?;
    if let Ending::ClosedByServer(reason) = ending {
        // Printed after the editor is gone, so it cannot be lost in rustyline's print queue.
        print_plain(&render_event(&Event::Bye(reason)).unwrap_or_default());
    }
    Ok(ending)
}

/// Whether a session's end is one the terminal client recovers from by reconnecting: the
/// connection was lost, or the server closed it on its own (shutting down for a restart, or
/// cutting us off as too slow or silent, say after a laptop slept). Not after our own `exit`,
/// not after `bye|flood` (the server asked us to stop sending, and coming straight back would
/// only repeat it), and not after `bye|account-removed` (the password opens nothing now).
fn worth_reconnecting(ending: &Result<Ending, ClientError>) -> bool {
    match ending {
        Ok(Ending::ClosedByServer(reason)) => {
            !matches!(reason, Some(ByeReason::Flood | ByeReason::AccountRemoved))
        }
        Err(ClientError::Lost(_) | ClientError::Closed) => true,
        Ok(Ending::Quit | Ending::GaveUp) | Err(_) => false,
    }
}
