//! The terminal client.
//!
//! One file per job, so each can be read (and tested) on its own:
//!
//! - `input`: the input language, what a typed line means (`/msg`, `/to`, …);
//! - `render`: server events as the lines a user reads;
//! - `net`: the network conversation, from connect and login to `bye`;
//! - `terminal`: the rustyline editor thread and the `Output` that prints above its prompt;
//! - `piped`: plain line reading when stdin is not a terminal;
//! - `error`: why the client stopped early, as one sentence each.
//!
//! The pure parts (`input`, `render`) are kept apart from the I/O so they can be tested without
//! a socket or a terminal. The I/O runs the network on a single-threaded tokio runtime and reads
//! the user's lines on a plain thread, because both rustyline and blocking stdin reads block.

mod error;
mod input;
mod net;
mod piped;
mod render;
mod terminal;

use std::{
    io::{self, IsTerminal},
    process::ExitCode,
};

use tokio::sync::mpsc;

use self::{
    error::ClientError,
    render::render_event,
    terminal::{print_plain, Output},
};
use crate::codec::{is_valid_name, ByeReason, Event};

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
    let (mut reader, writer, name) = runtime.block_on(net::connect_and_login(options))?;

    let (lines, inputs) = mpsc::channel(INPUT_QUEUE);
    let mut output = if io::stdin().is_terminal() && io::stdout().is_terminal() {
        terminal::start(lines).map_err(ClientError::Terminal)?
    } else {
        piped::start(lines);
        Output::Plain
    };

    output.line(&render_event(&Event::LoggedIn(&name)).unwrap_or_default());
    let ending = runtime.block_on(net::converse(&mut reader, writer, inputs, &mut output));
    output.close();
    let ending = ending?;
    if let Ending::ClosedByServer(reason) = ending {
        // Printed after the editor is gone, so it cannot be lost in rustyline's print queue.
        print_plain(&render_event(&Event::Bye(reason)).unwrap_or_default());
    }
    Ok(ending)
}
