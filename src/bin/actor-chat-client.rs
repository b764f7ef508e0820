//! `actor-chat-client NAME [--server HOST:PORT]`: log in to a chat server and talk.
//!
//! Only argument parsing lives here; everything else is in `actor_chat::client`, where it can
//! be tested.

use std::process::ExitCode;

use actor_chat::client::{self, Options, DEFAULT_SERVER};
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    client::run(&Options {
        name: args.name,
        server: args.server,
    })
}
