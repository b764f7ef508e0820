//! `actor-chat-server [--config PATH]`: runs the chat server until SIGINT or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use actor_chat::{
    config::Settings,
    server, signal,
    store::{StoreError, StoreHandle},
};
use clap::Parser;
use log::{info, warn};

/// Exit status for a configuration the server refuses.
const BAD_CONFIG: u8 = 2;

/// Descriptors the server needs beyond one per connection: the listener, the log, the runtime's
/// own, and slack for connections that are closing.
const SPARE_DESCRIPTORS: u64 = 64;

#[derive(Parser)]
#[command(
    version,
    about = about(),
    long_about = long_about(),
    after_help = EXIT_STATUS,
)]
struct Args {
    /// TOML config file (it must exist); without it, the built-in defaults apply. Every key can
    /// also be set in the environment as CHAT__SECTION__KEY, which wins over the file.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// What `-h` says first: what the binary is, and where it listens unless told otherwise.
fn about() -> String {
    format!(
        "actor-chat-server: the actor-chat text chat server (by default on {})",
        defaults().0
    )
}

/// What `--help` says first.
fn long_about() -> String {
    let (bind, max_connections) = defaults();
    format!(
        "actor-chat-server: the actor-chat text chat server. It accepts TCP connections from \
         actor-chat-client, nc or any program speaking its line protocol (docs/PROTOCOL.md), \
         and runs until SIGINT or SIGTERM.\n\
         \n\
         Configuration: --config PATH reads a TOML file (config/default.toml in the source \
         documents every key); without --config, the built-in defaults apply. Every key can \
         also be set in the environment as CHAT__SECTION__KEY, which wins over the file: for \
         example CHAT__SERVER__BIND=0.0.0.0:9999 listens on every interface.\n\
         \n\
         Defaults: listens on {bind} (this machine only), serves at most {max_connections} \
         connections, and logs to stderr at info (RUST_LOG overrides log.level)."
    )
}

/// The built-in listen address and connection limit, as the server would use them: read from
/// the defaults themselves so that the help cannot drift from them.
fn defaults() -> (String, usize) {
    match Settings::builder().build() {
        Ok(settings) => (settings.bind().to_string(), settings.max_connections()),
        Err(_) => ("127.0.0.1:9999".to_owned(), 10_000), // the defaults are always valid
    }
}

const EXIT_STATUS: &str = "\
Exit status:
  0    stopped cleanly: SIGINT or SIGTERM, every client told bye|shutdown
  1    cannot listen on server.bind (in use, not this machine's, or a port below 1024), or
       cannot open the store (store.url)
  2    bad configuration: the message names the key, or the --config file is missing; or
       the store's database was made by a newer actor-chat
  130  a second SIGINT or SIGTERM cut the graceful shutdown short";

/// The start-up warning for a descriptor limit too low for `max_connections`: what it means
/// and what to do about it.
fn descriptor_advice(limit: u64, max_connections: usize) -> String {
    let needed = max_connections as u64 + SPARE_DESCRIPTORS;
    let usable = limit.saturating_sub(SPARE_DESCRIPTORS);
    format!(
        "only {limit} file descriptors available; server.max_connections is {max_connections}, \
         so accepting will stall at about {usable} connections. Raise the limit to at least \
         {needed} (`ulimit -n {needed}` as root in the shell that starts the server, or \
         LimitNOFILE={needed} in its systemd unit), or lower server.max_connections to {usable}"
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("actor-chat-server: {error}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(settings.log_filter()),
    )
    .init();
    // Each connection is a file descriptor; the usual soft limit of 1024 is far too low.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < settings.max_connections() as u64 + SPARE_DESCRIPTORS => {
            warn!("{}", descriptor_advice(limit, settings.max_connections()))
        }
        Ok(_) => {}
        Err(error) => warn!("cannot raise the file descriptor limit: {error}"),
    }

    let bind = settings.bind();
    actix_rt::System::new().block_on(async move {
        // Before listening: a server that cannot keep what it promised to keep should not
        // start taking messages.
        let store = match StoreHandle::start(settings.store()).await {
            Ok(store) => store,
            Err(error @ StoreError::Newer { .. }) => {
                eprintln!("actor-chat-server: {error}");
                return ExitCode::from(BAD_CONFIG);
            }
            Err(error) => {
                eprintln!("actor-chat-server: {error}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(bind).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("actor-chat-server: cannot listen on {bind}: {error}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = match signal::shutdown_requested() {
            Ok(shutdown) => shutdown,
            Err(error) => {
                eprintln!("actor-chat-server: cannot handle signals: {error}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(addr) => info!("listening on {addr}"),
            Err(error) => warn!("listening, but the bound address is unknown: {error}"),
        }
        if let Err(error) = server::run(settings, store, listener, shutdown).await {
            eprintln!("actor-chat-server: cannot serve on {bind}: {error}");
            return ExitCode::FAILURE;
        }
        info!("stopped");
        ExitCode::SUCCESS
    })
}
