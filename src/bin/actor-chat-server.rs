//! `actor-chat-server [--config PATH]`: runs the chat server until SIGINT or SIGTERM.
//! `actor-chat-server gen-cert --out DIR`: writes a self-signed certificate for trying TLS.
//! `actor-chat-server --config PATH account add|passwd|remove|list`: the accounts in the store,
//! with no server running.

use std::{
    fs,
    io::{self, BufRead, IsTerminal, Write},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use actor_chat::{
    accounts::{admin, REFRESH_EVERY},
    client::prompt_password,
    config::Settings,
    server::{self, Listeners},
    signal,
    store::{Store, StoreError, StoreHandle},
    tls::{self, Certificates},
    web::HttpListener,
};
use clap::{Parser, Subcommand};
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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a self-signed certificate and key (DIR/cert.pem, DIR/key.pem) for trying TLS
    /// out, and prints how to use them. Clients must be given the certificate (--ca), since
    /// nobody else vouches for it; for real use, get one from a certificate authority.
    GenCert {
        /// The folder to write into (created if need be); existing files are not overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A host name or IP address the certificate is for; repeat for more. Clients check
        /// it against the HOST they connect to. Default: localhost, 127.0.0.1 and ::1.
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
    /// Manages the accounts in the store that --config names (store.url), with or without a
    /// server running; a running server sees the change within a few seconds, or at once on
    /// SIGHUP, and logs out the user of an account that was removed.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
}

#[derive(Subcommand)]
enum AccountAction {
    /// Registers NAME. The password is read from the terminal without echo (twice), or from
    /// stdin (one line) when it is piped.
    Add { name: String },
    /// Gives NAME's account a new password, read as for `add`.
    Passwd { name: String },
    /// Deletes NAME's account: the name is free again, and its user, if online, is logged out.
    Remove { name: String },
    /// Lists every account, with the time it was made (UTC).
    List,
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
         and, with tls.bind, tls.cert and tls.key set, TLS connections on a port of their own \
         (SIGHUP reloads the certificate); it runs until SIGINT or SIGTERM.\n\
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
        Ok(settings) => (
            settings
                .bind()
                .map_or_else(|| "no plain port".to_owned(), |bind| bind.to_string()),
            settings.max_connections(),
        ),
        Err(_) => ("127.0.0.1:9999".to_owned(), 10_000), // the defaults are always valid
    }
}

const EXIT_STATUS: &str = "\
Exit status:
  0    stopped cleanly: SIGINT or SIGTERM, every client told bye|shutdown
  1    cannot listen on server.bind, tls.bind or http.bind (in use, not this machine's, or a
       port below 1024), or cannot open the store (store.url); for gen-cert, cannot write the
       files; for account, the command failed (no such account, the name is taken, a weak
       password)
  2    bad configuration: the message names the key (tls.cert and tls.key included), or the
       --config file is missing (for account: no store.url); or the store's database was
       made by a newer actor-chat
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
    match args.command {
        Some(Command::GenCert { out, names }) => {
            return gen_cert(args.config.as_deref(), &out, names)
        }
        Some(Command::Account { action }) => return account(args.config.as_deref(), action),
        None => {}
    }
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("actor-chat-server: {error}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    // Before anything listens: a certificate that will not load is a configuration mistake.
    let certificates = match settings.tls().map(Certificates::load).transpose() {
        Ok(certificates) => certificates,
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
    let tls_bind = settings.tls().map(|tls| tls.bind);
    let http = settings.http().map(|http| (http.bind(), http.tls()));
    actix_rt::System::new().block_on(async move {
        // Before listening: a server that cannot keep what it promised to keep should not
        // start taking messages.
        let store = match StoreHandle::start(settings.store()).await {
            Ok(store) => store,
            Err(error) => return store_failed(&error),
        };
        let mut listeners = Listeners::default();
        if let Some(bind) = bind {
            match listen(bind).await {
                Some(listener) => listeners.plain = Some(listener),
                None => return ExitCode::FAILURE,
            }
        }
        if let (Some(bind), Some(certificates)) = (tls_bind, &certificates) {
            match listen(bind).await {
                Some(listener) => listeners.tls = Some((listener, certificates.clone())),
                None => return ExitCode::FAILURE,
            }
        }
        if let Some((bind, https)) = http {
            match listen(bind).await {
                Some(listener) => {
                    let tls = if https { certificates.clone() } else { None };
                    listeners.http = Some(HttpListener { listener, tls })
                }
                None => return ExitCode::FAILURE,
            }
        }
        let hangup = Arc::new(tokio::sync::Notify::new());
        let shutdown = match signal::shutdown_requested(certificates, hangup.clone()) {
            Ok(shutdown) => shutdown,
            Err(error) => {
                eprintln!("actor-chat-server: cannot handle signals: {error}");
                return ExitCode::FAILURE;
            }
        };
        // Tests and scripts read the ports from these lines: keep their form.
        if let Some(listener) = &listeners.plain {
            match listener.local_addr() {
                Ok(addr) => info!("listening on {addr}"),
                Err(error) => warn!("listening, but the bound address is unknown: {error}"),
            }
        }
        if let Some((listener, _)) = &listeners.tls {
            match listener.local_addr() {
                Ok(addr) => info!("listening on {addr} (tls)"),
                Err(error) => warn!("listening for TLS, but the bound address is unknown: {error}"),
            }
        }
        if let Some(http) = &listeners.http {
            let scheme = if http.tls.is_some() { " (https)" } else { "" };
            match http.listener.local_addr() {
                Ok(addr) => info!("http listening on {addr}{scheme}"),
                Err(error) => warn!("http listening, but the bound address is unknown: {error}"),
            }
        }
        if let Err(error) = server::run(settings, store, listeners, shutdown, hangup).await {
            eprintln!("actor-chat-server: cannot serve: {error}");
            return ExitCode::FAILURE;
        }
        info!("stopped");
        ExitCode::SUCCESS
    })
}

/// `account …`: opens the store the config names and runs one account command on it. Exit
/// status 2 for a configuration without a store (or one the binary cannot use), 1 when the
/// command fails.
fn account(config: Option<&Path>, action: AccountAction) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("actor-chat-server: {error}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let Some(url) = settings.store().url().cloned() else {
        eprintln!(
            "actor-chat-server: accounts are kept in the store, and store.url is \"\": name \
             one in the config (--config FILE) or in CHAT__STORE__URL"
        );
        return ExitCode::from(BAD_CONFIG);
    };
    // Read before the store is opened, so a prompt is not held up by the database.
    let password = match &action {
        AccountAction::Add { name } | AccountAction::Passwd { name } => {
            match read_new_password(name) {
                Ok(password) => Some(password),
                Err(error) => {
                    eprintln!("actor-chat-server: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        AccountAction::Remove { .. } | AccountAction::List => None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("actor-chat-server: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let store = match Store::open(&url).await {
            Ok(store) => store,
            Err(error) => return store_failed(&error),
        };
        let password = password.unwrap_or_default();
        let done = match &action {
            AccountAction::Add { name } => admin::add(&store, name, &password)
                .await
                .map(|()| format!("registered {name}")),
            AccountAction::Passwd { name } => admin::passwd(&store, name, &password)
                .await
                .map(|()| format!("changed the password of {name}")),
            AccountAction::Remove { name } => admin::remove(&store, name).await.map(|()| {
                format!(
                    "removed the account {name}; a running server logs its user out within {} s \
                     (at once on SIGHUP)",
                    REFRESH_EVERY.as_secs()
                )
            }),
            AccountAction::List => admin::list(&store).await.map(|accounts| {
                accounts
                    .iter()
                    .map(|account| {
                        let made = jiff::Timestamp::from_millisecond(account.created_at_ms)
                            .map(|time| format!("{time:.0}"))
                            .unwrap_or_default();
                        format!("{}\t{made}", account.name)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        };
        store.close().await;
        match done {
            Ok(report) => {
                if !report.is_empty() {
                    println!("{report}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("actor-chat-server: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A new password for `name`: typed twice without echo on a terminal, or one line of piped
/// stdin (its line ending dropped).
fn read_new_password(name: &str) -> Result<String, String> {
    if io::stdin().is_terminal() {
        let first = prompt_password(&format!("New password for {name}: "))
            .map_err(|error| format!("cannot read the password: {error}"))?;
        let second = prompt_password("The same again: ")
            .map_err(|error| format!("cannot read the password: {error}"))?;
        if first != second {
            return Err("the two passwords differ; nothing was changed".to_owned());
        }
        return Ok(first);
    }
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from stdin: {error}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("no password on stdin; nothing was changed".to_owned());
    }
    Ok(password)
}

/// A listener on `bind`, or `None` after saying why there is none.
async fn listen(bind: SocketAddr) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            eprintln!("actor-chat-server: cannot listen on {bind}: {error}");
            None
        }
    }
}

/// `gen-cert`: writes `out/cert.pem` and `out/key.pem` (the key readable by its owner only) and
/// says how to use them.
fn gen_cert(config: Option<&Path>, out: &Path, names: Vec<String>) -> ExitCode {
    let names = if names.is_empty() {
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ]
    } else {
        names
    };
    let (cert, key) = match tls::self_signed(&names) {
        Ok(pair) => pair,
        Err(error) => {
            eprintln!("actor-chat-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    // Both or neither: a new key beside an old certificate would match nothing.
    if let Some(existing) = [&cert_path, &key_path]
        .into_iter()
        .find(|path| path.exists())
    {
        eprintln!(
            "actor-chat-server: {} already exists; remove it or choose another --out",
            existing.display()
        );
        return ExitCode::FAILURE;
    }
    let written = fs::create_dir_all(out)
        .and_then(|()| write_new(&key_path, key.as_bytes(), 0o600))
        .and_then(|()| write_new(&cert_path, cert.as_bytes(), 0o644));
    if let Err(error) = written {
        eprintln!(
            "actor-chat-server: cannot write the certificate into {}: {error}",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    // Absolute paths, so the advice holds wherever the server is started from.
    let absolute = |path: &Path| {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    let (cert_path, key_path) = (absolute(&cert_path), absolute(&key_path));
    // The TLS port next to the plain one the config has, if it can be read.
    let host = config
        .and_then(|config| Settings::load(Some(config)).ok())
        .unwrap_or_default()
        .bind()
        .map_or_else(|| "127.0.0.1".to_owned(), |bind| bind.ip().to_string());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let first = names.first().cloned().unwrap_or_default();
    let client_host = if first.contains(':') {
        format!("[{first}]")
    } else {
        first
    };
    println!(
        "Wrote a self-signed certificate for {} to {cert_path}\n\
         and its private key (mode 0600) to {key_path}.\n\
         \n\
         Turn TLS on in the server's config file:\n\
         \n\
         [tls]\n\
         bind = \"{host}:9443\"\n\
         cert = \"{cert_path}\"\n\
         key = \"{key_path}\"\n\
         \n\
         (or CHAT__TLS__BIND={host}:9443 CHAT__TLS__CERT={cert_path} CHAT__TLS__KEY={key_path}),\n\
         and point the client at it with the certificate as its trust root:\n\
         \n\
         actor-chat-client NAME --tls --server {client_host}:9443 --ca {cert_path}\n\
         \n\
         The client checks the HOST in --server against the certificate's names.",
        names.join(", ")
    );
    let _ = io::stdout().flush();
    ExitCode::SUCCESS
}

/// Writes `bytes` to a new file at `path` with `mode`; an existing file is left alone.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    error.kind(),
                    format!("{} already exists (remove it first)", path.display()),
                )
            } else {
                error
            }
        })?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Says why the store could not be opened; a database made by a newer binary is a
/// configuration problem (exit status 2: point `store.url` elsewhere, or upgrade), anything
/// else a failure to start.
fn store_failed(error: &StoreError) -> ExitCode {
    eprintln!("actor-chat-server: {error}");
    match error {
        StoreError::Newer { .. } => ExitCode::from(BAD_CONFIG),
        _ => ExitCode::FAILURE,
    }
}
