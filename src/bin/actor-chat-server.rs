//! `actor-chat-server [--config PATH]`: runs the chat server until SIGINT or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use actor_chat::{config::Settings, server, signal};
use clap::Parser;
use log::{info, warn};

/// A fast, robust, self-hosted chat server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file; every key can also be set as CHAT__SECTION__KEY in the environment.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("actor-chat-server: {error}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(settings.log_filter()),
    )
    .init();
    // Each connection is a file descriptor; the usual soft limit of 1024 is far too low.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < settings.max_connections() + 64 => warn!(
            "only {limit} file descriptors available; server.max_connections is {}",
            settings.max_connections()
        ),
        Ok(_) => {}
        Err(error) => warn!("cannot raise the file descriptor limit: {error}"),
    }

    let bind = settings.bind();
    actix_rt::System::new().block_on(async move {
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
        if let Err(error) = server::run(settings, listener, shutdown).await {
            eprintln!("actor-chat-server: cannot serve on {bind}: {error}");
            return ExitCode::FAILURE;
        }
        info!("stopped");
        ExitCode::SUCCESS
    })
}
