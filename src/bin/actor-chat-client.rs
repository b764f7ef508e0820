//! `actor-chat-client NAME [--server HOST:PORT] [--tls [--ca FILE]]`: log in to a chat server
//! and talk.
//!
//! Only argument parsing lives here; everything else is in `actor_chat::client`, where it can
//! be tested.

use std::{path::PathBuf, process::ExitCode};

use actor_chat::client::{self, Options, TlsOptions, DEFAULT_SERVER};
use clap::Parser;

/// A terminal client for actor-chat. Type /help once connected.
#[derive(Debug, Parser)]
#[command(version, about)]
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    client::run(&Options {
        name: args.name,
        server: args.server,
        tls: args.tls.then_some(TlsOptions { ca: args.ca }),
    })
}
