//! `actor-chat-client NAME [--server HOST:PORT] [--tls [--ca FILE]]`: log in to a chat server
//! and talk.
//!
//! Only argument parsing lives here; everything else is in `actor_chat::client`, where it can
//! be tested.

use std::{io, path::PathBuf, process::ExitCode};

use actor_chat::client::{self, Options, Secret, TlsOptions, DEFAULT_SERVER};
use clap::Parser;

/// actor-chat-client: the terminal client of the actor-chat server.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "actor-chat-client: the terminal client of the actor-chat chat server",
    long_about = "actor-chat-client: the terminal client of the actor-chat chat server.\n\n\
        Logs in as NAME and lets you chat: a plain line goes to the user or room shown in the \
        prompt, /msg NAME TEXT to one user, /join ROOM and /say ROOM TEXT for rooms, /help for \
        every command, /quit or Ctrl-D to leave. On a terminal it has line editing and \
        history and reconnects after a lost connection; with stdin piped it sends each line, \
        then `exit`, and waits for the server to confirm.",
    after_help = format!(
        "Defaults: --server {DEFAULT_SERVER} (or $CHAT_SERVER).\n\
         Exit status: 0 after a confirmed exit; 1 when the login is refused (a wrong password \
         included), the server cannot be reached, or the connection ends otherwise."
    )
)]
struct Args {
    /// The name to log in with: 1 to 32 of A-Z a-z 0-9 _ . -
    name: String,

    /// The server to connect to, as HOST:PORT.
    #[arg(long, env = "CHAT_SERVER", default_value = DEFAULT_SERVER)]
    server: String,

    /// Connect over TLS (the server's tls.bind port); the server's certificate must be valid
    /// for the HOST in --server.
    #[arg(long)]
    tls: bool,

    /// With --tls: trust the certificate(s) in this PEM file (for a self-signed server, the
    /// cert.pem of `actor-chat-server gen-cert`) instead of the system's trust store.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,

    /// Read the password of the account NAME from the first line of stdin (the rest of stdin
    /// is chat, as usual). Without it, the password of a registered name is asked for on the
    /// terminal, without echo.
    #[arg(long)]
    password_stdin: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let password = if args.password_stdin {
        let mut line = String::new();
        // std's stdin is buffered once for the whole process: the lines after this one are
        // still there for the session.
        match io::stdin().read_line(&mut line) {
            Ok(_) if !line.trim_end_matches(['\n', '\r']).is_empty() => {
                Some(Secret(line.trim_end_matches(['\n', '\r']).to_owned()))
            }
            Ok(_) => {
                eprintln!("--password-stdin: no password on the first line of stdin");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("--password-stdin: cannot read stdin: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    client::run(&Options {
        name: args.name,
        server: args.server,
        tls: args.tls.then_some(TlsOptions { ca: args.ca }),
        password,
    })
}
