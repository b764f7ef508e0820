//! Server settings: built-in defaults, overlaid by an optional TOML file, overlaid by environment
//! variables named `CHAT__SECTION__KEY`.
//!
//! Parse, don't validate: the file and the environment are read into a private raw form that
//! mirrors the keys, and [`Settings`] is made from it once, by one conversion that checks every
//! value and turns it into the type the server uses (a [`Duration`], a resolved worker count,
//! flood control on or off). A `Settings` therefore cannot hold an unchecked value, and the rest of
//! the server never re-checks or re-converts one. Tests build theirs through the same
//! conversion ([`Settings::builder`]). A bad value stops start-up with a sentence that names the
//! key (see [`ConfigError`]); each limit's text is formatted from the constant its check uses.
//!
//! A new config key: a field in the raw section below (with its default), the validated field it
//! becomes and its check in [`Settings::from_raw`], a line in `config/default.toml`, and a row
//! in the tables of the README and docs/CONFIGURATION.md.

use std::{
    fmt,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    num::{NonZeroU32, NonZeroUsize},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::codec::{max_list_reply_bytes, MAX_LISTED};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "CHAT";

/// Upper bounds that keep every derived quantity (deadlines, buffer sizes, thread counts) far
/// from overflow; no sensible configuration comes near them.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;
const LINE_LIMITS: RangeInclusive<usize> = 64..=1 << 20;
const MAX_WORKERS: usize = 1024;
const ROOMS_PER_USER: RangeInclusive<usize> = 1..=1024;
const LISTED: RangeInclusive<usize> = 1..=MAX_LISTED;
/// Lines per second and burst: up to a million, far above what a connection can send.
const LINE_RATES: RangeInclusive<usize> = 0..=1_000_000;
/// Messages waiting for the store: up to ten million (a few GiB at most).
const BACKLOG: RangeInclusive<usize> = 1..=10_000_000;
/// Up to a hundred years; 0 keeps messages for ever.
const RETENTION_DAYS: RangeInclusive<usize> = 0..=36_500;
/// A page of history must fit in a client's outbound queue many times over.
const HISTORY_PAGE: RangeInclusive<usize> = 1..=10_000;
/// Nice values a thread may lower itself to without privileges.
const WRITER_NICE: RangeInclusive<usize> = 0..=19;
const PRESENCE: &[(&str, Presence)] = &[("all", Presence::All), ("none", Presence::None)];
const AUTH_MODES: &[(&str, AuthMode)] =
    &[("open", AuthMode::Open), ("accounts", AuthMode::Accounts)];
const REGISTRATIONS: &[(&str, Registration)] = &[
    ("open", Registration::Open),
    ("closed", Registration::Closed),
];
const PLAINTEXT_PASSWORDS: &[(bool, PlaintextPasswords)] = &[
    (false, PlaintextPasswords::Refused),
    (true, PlaintextPasswords::Allowed),
];

/// Everything the server can be told, checked and converted (see the module docs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) server: ServerSettings,
    pub(crate) limits: Limits,
    pub(crate) heartbeat: Heartbeat,
    pub(crate) log: LogSettings,
    /// `None` when `tls.bind` is empty (the default): no TLS listener.
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) store: StoreSettings,
    pub(crate) auth: AuthSettings,
    /// `None` when `http.bind` is empty: no HTTP listener (no web client, no WebSocket).
    pub(crate) http: Option<HttpSettings>,
}

/// `[auth]`: who may use which name, and how passwords may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub registration: Registration,
    pub plaintext_passwords: PlaintextPasswords,
}

/// `auth.mode`: whether a name needs an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone may log in under a free name that is not registered; registered names need their
    /// password.
    Open,
    /// Every login needs an account (and so a store).
    Accounts,
}

/// `auth.registration`: who makes accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Clients, with `register|NAME|PASSWORD`.
    Open,
    /// The operator only (`actor-chat-server account add`); `register` gets
    /// `error|registration-closed`.
    Closed,
}

/// `auth.allow_plaintext_passwords`: whether a password may arrive over plain TCP from
/// another machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextPasswords {
    /// Only over TLS, or from this machine (loopback): otherwise `error|tls-required|VERB`.
    Refused,
    /// From anywhere (a trusted network, or TLS ended by a proxy in front).
    Allowed,
}

/// `http.metrics`: who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Clients on a loopback address only: a scraper on this machine, or an SSH tunnel. The
    /// address is the client's as `http.trusted_proxies` resolves it, so a proxy on this
    /// machine does not make every visitor loopback.
    Loopback,
    /// Anyone who reaches the listener.
    All,
    /// Nobody: `/metrics` is not there (404).
    Off,
}

const METRICS_ACCESS: &[(&str, MetricsAccess)] = &[
    ("loopback", MetricsAccess::Loopback),
    ("all", MetricsAccess::All),
    ("off", MetricsAccess::Off),
];

/// `[http]`, when `http.bind` is set: the web client, `/healthz`, `/readyz` and WebSockets.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free port (the log says which).
    pub(crate) bind: SocketAddr,
    /// Serve HTTPS with the `[tls]` certificate (and its SIGHUP reloads) instead of HTTP.
    pub(crate) tls: bool,
    /// Origins a WebSocket may be opened from, as `scheme://host[:port]` in lower case; empty
    /// means only the page's own origin.
    pub(crate) allowed_origins: Vec<String>,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers name the real client.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Who may read `GET /metrics`.
    pub(crate) metrics: MetricsAccess,
}

impl HttpSettings {
    /// The address to listen on.
    pub fn bind(&self) -> SocketAddr {
        self.bind
    }

    /// Whether the listener speaks HTTPS (with the `[tls]` certificate).
    pub fn tls(&self) -> bool {
        self.tls
    }
}

/// `[server]`
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    /// Address to listen on for plain TCP; port 0 picks a free port (the log says which).
    /// `None` when `server.bind` is empty, for a server that speaks only TLS.
    pub(crate) bind: Option<SocketAddr>,
    /// Worker threads running sessions (`server.workers`, with 0 resolved to one per core).
    pub(crate) workers: NonZeroUsize,
    /// Connections served at once; the next one is told `bye|server-full`.
    pub(crate) max_connections: usize,
    /// Rooms that may exist at once; joining a new one past it gets `too-many-rooms`.
    pub(crate) max_rooms: usize,
    /// Who hears about logins and logouts.
    pub(crate) presence: Presence,
    /// How long a stopping server, or a closing connection, may spend flushing what it owes.
    pub(crate) shutdown_grace: Duration,
}

/// Who is told when a user logs in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Everyone online: `login|NAME` / `logout|NAME`, and the list of who is online at login.
    All,
    /// No one: for large servers, where each login would otherwise cost a line per user.
    None,
}

/// `[limits]`
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Longest accepted line, in bytes, without its newline.
    pub(crate) max_line_bytes: usize,
    /// Most bytes queued for one connection before it is cut off as too slow.
    pub(crate) max_outbound_bytes: usize,
    /// Rooms one user may be in at once.
    pub(crate) rooms_per_user: usize,
    /// `None` when `limits.lines_per_sec` is 0.
    pub(crate) flood: Option<FloodLimit>,
    /// Most bytes all clients together may owe before the largest debtors are cut off.
    pub(crate) max_total_outbound_bytes: usize,
    /// How long a client owing more than `max_outbound_bytes` may go without taking a byte.
    pub(crate) slow_reader_grace: Duration,
    /// Connections one address may have open at once, outside `exempt_networks`.
    pub(crate) max_connections_per_ip: usize,
    /// Addresses the per-address limit does not apply to.
    pub(crate) exempt_networks: Vec<IpNet>,
    /// Connections that may be waiting to log in at once; past it the oldest is closed.
    pub(crate) max_pending_logins: usize,
}

/// Flood control's budget, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FloodLimit {
    /// Sustained lines per second.
    pub(crate) lines_per_sec: NonZeroU32,
    /// Lines allowed at once above the sustained rate.
    pub(crate) burst: NonZeroU32,
}

/// `[heartbeat]`
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    /// Silence after which the server sends `ping`.
    pub(crate) interval: Duration,
    /// Silence after which the connection is closed with `bye|timeout`; longer than `interval`.
    pub(crate) timeout: Duration,
    /// Time a new connection has to log in.
    pub(crate) login_timeout: Duration,
}

/// `[log]`
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    /// env_logger filter used when `RUST_LOG` is not set; known to parse.
    pub(crate) level: String,
}

/// `[tls]`, when `tls.bind` is set.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Address to listen on for TLS; port 0 picks a free port (the log says which).
    pub bind: SocketAddr,
    /// The certificate chain (PEM), resolved against the config file's folder.
    pub cert: PathBuf,
    /// The private key (PEM), resolved the same way.
    pub key: PathBuf,
}

/// `[store]`
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where messages are kept; `None` for `store.url = ""` (nothing is kept).
    pub(crate) url: Option<StoreUrl>,
    /// Messages waiting to be written past which new ones are dropped (and counted), so a slow
    /// or absent database costs bounded memory, never a delay in delivery.
    pub(crate) max_backlog: usize,
    /// How long messages are kept; `None` for `store.retention_days = 0` (for ever).
    pub(crate) retention: Option<Duration>,
    /// Most messages one `history` request may ask for.
    pub(crate) max_history_page: usize,
    /// The writer's scheduling priority (a nice value, 0 to 19): above 0, under a load that
    /// keeps every core busy, chat goes first and the store keeps what the spare CPU allows.
    /// 0 by default: what was said is kept, at the price of some throughput when the box is
    /// saturated (docs/PERFORMANCE.md, "The store's cost", has both).
    pub(crate) writer_nice: u8,
}

impl StoreSettings {
    /// Where messages are kept, if anywhere.
    pub fn url(&self) -> Option<&StoreUrl> {
        self.url.as_ref()
    }
}

/// A store the server can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file; a relative path is resolved against the config file's folder (the
    /// current folder without a config file), so the server finds the same file wherever it is
    /// started from.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, as written.
    Postgres(String),
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            // Without the password, which a log line has no business showing.
            StoreUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let user = &url[scheme + 3..at];
                    let user = user.split(':').next().unwrap_or_default();
                    write!(f, "{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// Why the settings could not be loaded; the message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("{0}")]
    Invalid(#[from] config::ConfigError),
    /// A key's value is not what it must be; the reason reads on from the key ("must be …").
    #[error("{key} {reason}")]
    Value { key: &'static str, reason: String },
}

/// Collects the sources [`Settings`] are made from: an optional file, then `CHAT__…`
/// environment variables, then explicit overrides (for tests and embedding). `build` is the one
/// way to a `Settings`.
#[derive(Debug, Clone, Default)]
pub struct SettingsBuilder {
    file: Option<PathBuf>,
    overrides: Vec<(String, String)>,
}

impl SettingsBuilder {
    /// Reads this TOML file (it must exist) over the defaults.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Overrides the key `section.key` (for example `heartbeat.interval_secs`) with `value`,
    /// written as it would be in the environment.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        let name = format!(
            "{ENV_PREFIX}__{}",
            key.replace('.', "__").to_ascii_uppercase()
        );
        self.overrides.push((name, value.to_string()));
        self
    }

    /// Overrides keys from `CHAT__SECTION__KEY` variables; others are ignored.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let prefix = format!("{ENV_PREFIX}__");
        self.overrides
            .extend(vars.into_iter().filter(|(key, _)| key.starts_with(&prefix)));
        self
    }

    /// Reads, checks and converts everything.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = &self.file {
            if !file.is_file() {
                return Err(ConfigError::Missing(file.display().to_string()));
            }
            builder = builder.add_source(
                config::File::from(file.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let raw: RawSettings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(self.overrides.into_iter().collect())),
            )
            .build()?
            .try_deserialize()?;
        let raw = RawSettings {
            // Relative certificate paths are relative to the file that names them.
            base: self
                .file
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf),
            ..raw
        };
        let mut settings = Settings::from_raw(raw)?;
        // A relative SQLite path belongs to the config file's folder, not to wherever the
        // server happens to be started from.
        if let (Some(StoreUrl::Sqlite(path)), Some(folder)) = (
            &mut settings.store.url,
            self.file.as_deref().and_then(Path::parent),
        ) {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
        Ok(settings)
    }
}

impl Settings {
    /// Loads the defaults, then `file` if given (it must exist), then `CHAT__…` variables from
    /// the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = Self::builder();
        if let Some(file) = file {
            builder = builder.file(file);
        }
        builder.env(env).build()
    }

    /// Settings from the built-in defaults, changed key by key (see [`SettingsBuilder`]).
    pub fn builder() -> SettingsBuilder {
        SettingsBuilder::default()
    }

    /// The address to listen on for plain TCP, unless `server.bind` is empty.
    pub fn bind(&self) -> Option<SocketAddr> {
        self.server.bind
    }

    /// The TLS listener's settings, when `tls.bind` is set.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// The HTTP listener's settings, when `http.bind` is set.
    pub fn http(&self) -> Option<&HttpSettings> {
        self.http.as_ref()
    }

    /// Connections served at once.
    pub fn max_connections(&self) -> usize {
        self.server.max_connections
    }

    /// The log filter to use when `RUST_LOG` is not set.
    pub fn log_filter(&self) -> &str {
        &self.log.level
    }

    /// The store settings.
    pub fn store(&self) -> &StoreSettings {
        &self.store
    }

    /// The `[auth]` settings.
    pub fn auth(&self) -> AuthSettings {
        self.auth
    }

    /// The one conversion from what was read to what the server uses.
    fn from_raw(raw: RawSettings) -> Result<Settings, ConfigError> {
        let RawSettings {
            server,
            limits,
            heartbeat,
            log,
            tls,
            base,
            store,
            auth,
            http,
        } = raw;
        let bind = optional_socket_address("server.bind", server.bind)?;
        let workers = whole("server.workers", server.workers, 0..=MAX_WORKERS)?;
        let workers = NonZeroUsize::new(workers)
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
        let max_connections = whole("server.max_connections", server.max_connections, LISTED)?;
        let max_rooms = whole("server.max_rooms", server.max_rooms, LISTED)?;
        let presence = choice("server.presence", server.presence, PRESENCE)?;
        let rooms_per_user = whole(
            "limits.rooms_per_user",
            limits.rooms_per_user,
            ROOMS_PER_USER,
        )?;
        let max_line_bytes = whole("limits.max_line_bytes", limits.max_line_bytes, LINE_LIMITS)?;
        let max_outbound_bytes = whole(
            "limits.max_outbound_bytes",
            limits.max_outbound_bytes,
            max_line_bytes * 2..=usize::MAX,
        )?;
        // A reply that lists every user (`users|…`, the peer list at login, a room's members)
        // or every room must fit in a client's queue, or asking for it would cut the asker off
        // as too slow.
        let longest_list = max_list_reply_bytes(max_connections.max(max_rooms));
        if max_outbound_bytes < longest_list {
            return invalid(
                "limits.max_outbound_bytes",
                format!(
                    "must be at least {longest_list} here, so that a list of every user (up to \
                     server.max_connections) or every room (up to server.max_rooms) fits"
                ),
            );
        }
        let lines_per_sec = whole("limits.lines_per_sec", limits.lines_per_sec, LINE_RATES)?;
        let burst = whole("limits.burst", limits.burst, LINE_RATES)?;
        let flood = match (
            u32::try_from(lines_per_sec).ok().and_then(NonZeroU32::new),
            u32::try_from(burst).ok().and_then(NonZeroU32::new),
        ) {
            (None, _) => None,
            (Some(lines_per_sec), Some(burst)) => Some(FloodLimit {
                lines_per_sec,
                burst,
            }),
            (Some(_), None) => {
                return invalid(
                    "limits.burst",
                    "must be at least 1 when flood control is on".to_owned(),
                )
            }
        };
        let max_total_outbound_bytes = whole(
            "limits.max_total_outbound_bytes",
            limits.max_total_outbound_bytes,
            max_outbound_bytes..=usize::MAX,
        )?;
        let slow_reader_grace = seconds(
            "limits.slow_reader_grace_secs",
            limits.slow_reader_grace_secs,
        )?;
        let max_connections_per_ip = whole(
            "limits.max_connections_per_ip",
            limits.max_connections_per_ip,
            LISTED,
        )?;
        let exempt_networks = networks("limits.exempt_networks", limits.exempt_networks)?;
        let max_pending_logins = whole(
            "limits.max_pending_logins",
            limits.max_pending_logins,
            LISTED,
        )?;
        let shutdown_grace = seconds("server.shutdown_grace_secs", server.shutdown_grace_secs)?;
        let interval = seconds("heartbeat.interval_secs", heartbeat.interval_secs)?;
        let timeout = seconds("heartbeat.timeout_secs", heartbeat.timeout_secs)?;
        let login_timeout = seconds("heartbeat.login_timeout_secs", heartbeat.login_timeout_secs)?;
        if timeout <= interval {
            return invalid(
                "heartbeat.timeout_secs",
                "must be longer than heartbeat.interval_secs".to_owned(),
            );
        }
        let level = log_filter("log.level", log.level)?;
        // [tls]
        let tls = match optional_socket_address("tls.bind", tls.bind)? {
            None => None,
            Some(tls_bind) => Some(TlsSettings {
                bind: tls_bind,
                cert: file_path("tls.cert", tls.cert, base.as_deref())?,
                key: file_path("tls.key", tls.key, base.as_deref())?,
            }),
        };
        let http = {
            let bind = optional_socket_address("http.bind", http.bind)?;
            let https = boolean("http.tls", http.tls)?;
            let allowed_origins = origins("http.allowed_origins", http.allowed_origins)?;
            let trusted_proxies = networks("http.trusted_proxies", http.trusted_proxies)?;
            let metrics = choice("http.metrics", http.metrics, METRICS_ACCESS)?;
            if https && bind.is_some() && tls.is_none() {
                return invalid(
                    "http.tls",
                    "can be true only with [tls] set up (tls.bind, tls.cert and tls.key): HTTPS \
                     is served with that certificate"
                        .to_owned(),
                );
            }
            bind.map(|bind| HttpSettings {
                bind,
                tls: https,
                allowed_origins,
                trusted_proxies,
                metrics,
            })
        };
        if bind.is_none() && tls.is_none() && http.is_none() {
            return invalid(
                "server.bind",
                "must be HOST:PORT when tls.bind and http.bind are empty: the server needs \
                 somewhere to listen"
                    .to_owned(),
            );
        }
        let store = {
            let url = store_url("store.url", store.url)?;
            let max_backlog = whole("store.max_backlog", store.max_backlog, BACKLOG)?;
            let days = whole("store.retention_days", store.retention_days, RETENTION_DAYS)?;
            let retention = (days > 0).then(|| Duration::from_secs(days as u64 * 24 * 3600));
            let max_history_page = whole(
                "store.max_history_page",
                store.max_history_page,
                HISTORY_PAGE,
            )?;
            let writer_nice = whole("store.writer_nice", store.writer_nice, WRITER_NICE)?;
            StoreSettings {
                url,
                max_backlog,
                retention,
                max_history_page,
                // At most 19 (the range above).
                writer_nice: u8::try_from(writer_nice).unwrap_or(19),
            }
        };
        let auth = AuthSettings {
            mode: choice("auth.mode", auth.mode, AUTH_MODES)?,
            registration: choice("auth.registration", auth.registration, REGISTRATIONS)?,
            plaintext_passwords: flag(
                "auth.allow_plaintext_passwords",
                auth.allow_plaintext_passwords,
                PLAINTEXT_PASSWORDS,
            )?,
        };
        if auth.mode == AuthMode::Accounts && store.url.is_none() {
            return invalid(
                "auth.mode",
                "must be \"open\" when store.url is \"\": accounts are kept in the store"
                    .to_owned(),
            );
        }
        Ok(Settings {
            server: ServerSettings {
                bind,
                workers,
                max_connections,
                max_rooms,
                presence,
                shutdown_grace,
            },
            limits: Limits {
                max_line_bytes,
                max_outbound_bytes,
                rooms_per_user,
                flood,
                max_total_outbound_bytes,
                slow_reader_grace,
                max_connections_per_ip,
                exempt_networks,
                max_pending_logins,
            },
            heartbeat: Heartbeat {
                interval,
                timeout,
                login_timeout,
            },
            log: LogSettings { level },
            tls,
            store,
            auth,
            http,
        })
    }
}

impl Default for Settings {
    /// The built-in defaults, which are valid by construction (a unit test holds them to it).
    fn default() -> Self {
        match Settings::from_raw(RawSettings::default()) {
            Ok(settings) => settings,
            Err(error) => unreachable!("the built-in defaults are valid: {error}"),
        }
    }
}

fn invalid<T>(key: &'static str, reason: String) -> Result<T, ConfigError> {
    Err(ConfigError::Value { key, reason })
}

/// A value as the file or the environment gave it, before it is known to be of the key's type:
/// each key's conversion below checks it and says, in plain words, what it must be.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Loose {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Loose>),
}

impl fmt::Display for Loose {
    /// As the user would have written it, quoted if it is text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loose::Bool(value) => write!(f, "{value}"),
            Loose::Int(value) => write!(f, "{value}"),
            Loose::Float(value) => write!(f, "{value}"),
            Loose::Text(value) => write!(f, "{value:?}"),
            Loose::List(values) => {
                let values: Vec<String> = values.iter().map(Loose::to_string).collect();
                write!(f, "[{}]", values.join(", "))
            }
        }
    }
}

impl From<&str> for Loose {
    fn from(text: &str) -> Loose {
        Loose::Text(text.to_owned())
    }
}

impl From<i64> for Loose {
    fn from(value: i64) -> Loose {
        Loose::Int(value)
    }
}

impl From<f64> for Loose {
    fn from(value: f64) -> Loose {
        Loose::Float(value)
    }
}

/// A whole number in `range`.
fn whole(
    key: &'static str,
    value: Loose,
    range: RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    match value {
        Loose::Int(n) if usize::try_from(n).is_ok_and(|n| range.contains(&n)) => Ok(n as usize),
        other if *range.end() == usize::MAX => invalid(
            key,
            format!(
                "must be a whole number, at least {} (got {other})",
                range.start()
            ),
        ),
        other => invalid(
            key,
            format!(
                "must be a whole number from {} to {} (got {other})",
                range.start(),
                range.end()
            ),
        ),
    }
}

/// A duration key, in seconds, which may be fractional: above 0 and at most a year.
fn seconds(key: &'static str, value: Loose) -> Result<Duration, ConfigError> {
    let secs = match value {
        Loose::Int(n) => n as f64,
        Loose::Float(x) => x,
        _ => f64::NAN,
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if secs > 0.0 && secs <= MAX_SECS => Ok(duration),
        _ => invalid(
            key,
            format!("must be a number of seconds above 0 and at most {MAX_SECS} (got {value})"),
        ),
    }
}

/// One of `choices`, as its wire word.
fn choice<T: Copy>(
    key: &'static str,
    value: Loose,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    if let Loose::Text(text) = &value {
        if let Some((_, chosen)) = choices.iter().find(|(word, _)| word == text) {
            return Ok(*chosen);
        }
    }
    let words: Vec<String> = choices
        .iter()
        .map(|(word, _)| format!("{word:?}"))
        .collect();
    let words = match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    invalid(key, format!("must be {words} (got {value})"))
}

/// `true` or `false` (in the environment, the words), as one of two `choices`.
fn flag<T: Copy>(key: &'static str, value: Loose, choices: &[(bool, T)]) -> Result<T, ConfigError> {
    let chosen = match &value {
        Loose::Bool(value) => Some(*value),
        Loose::Text(text) if text == "true" => Some(true),
        Loose::Text(text) if text == "false" => Some(false),
        _ => None,
    };
    match chosen.and_then(|chosen| choices.iter().find(|(word, _)| *word == chosen)) {
        Some((_, value)) => Ok(*value),
        None => invalid(key, format!("must be true or false (got {value})")),
    }
}

/// `HOST:PORT`, where HOST is an IPv4 address, an IPv6 address in brackets, or a name that
/// resolves (the first address it resolves to is used).
fn socket_address(key: &'static str, value: Loose) -> Result<SocketAddr, ConfigError> {
    if let Loose::Text(text) = &value {
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        if let Some(addr) = text
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
        {
            return Ok(addr);
        }
    }
    invalid(
        key,
        format!(
            "must be HOST:PORT, such as 127.0.0.1:9999, [::1]:9999, 0.0.0.0:9999 or \
             localhost:9999 (got {value})"
        ),
    )
}

/// [`socket_address`], or `None` for an empty string (that listener is off).
fn optional_socket_address(
    key: &'static str,
    value: Loose,
) -> Result<Option<SocketAddr>, ConfigError> {
    match &value {
        Loose::Text(text) if text.trim().is_empty() => Ok(None),
        _ => socket_address(key, value).map(Some),
    }
}

/// A file's path, required (not empty); a relative one is taken from `base` (the config file's
/// folder) when there is one, so a config file and its certificate can move together. Whether
/// the file exists and parses is checked when it is loaded, at start and on every reload.
fn file_path(key: &'static str, value: Loose, base: Option<&Path>) -> Result<PathBuf, ConfigError> {
    match value {
        Loose::Text(text) if !text.trim().is_empty() => {
            let path = PathBuf::from(text);
            Ok(match base {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            })
        }
        other => invalid(
            key,
            format!("must be the path of a PEM file when tls.bind is set (got {other})"),
        ),
    }
}

/// A list as a TOML array or a comma-separated string (which is how the environment gives a
/// list; an empty string is an empty list), each item converted by `parse`; the first item it
/// refuses is named in the error, after `rule`.
fn list_of<T>(
    key: &'static str,
    value: Loose,
    rule: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    let items: Vec<Loose> = match &value {
        Loose::List(items) => items.clone(),
        Loose::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Loose::from)
            .collect(),
        _ => vec![value.clone()],
    };
    items
        .iter()
        .map(|item| {
            let parsed = match item {
                Loose::Text(text) => parse(text),
                _ => None,
            };
            parsed.ok_or_else(|| ConfigError::Value {
                key,
                reason: format!("must be {rule} (got {item} in {value})"),
            })
        })
        .collect()
}

/// A list of networks in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host).
fn networks(key: &'static str, value: Loose) -> Result<Vec<IpNet>, ConfigError> {
    list_of(
        key,
        value,
        "a list of networks such as [\"127.0.0.0/8\", \"::1/128\"]",
        |text| {
            text.parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        },
    )
}

/// `true` or `false` (also as the environment's text).
fn boolean(key: &'static str, value: Loose) -> Result<bool, ConfigError> {
    match &value {
        Loose::Bool(value) => Ok(*value),
        Loose::Text(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Loose::Text(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        _ => invalid(key, format!("must be true or false (got {value})")),
    }
}

/// Web origins, `http://HOST[:PORT]` or `https://HOST[:PORT]` (no path), as a TOML array or a
/// comma-separated string; kept in lower case without a trailing `/`, the form a browser's
/// `Origin` header is compared in.
fn origins(key: &'static str, value: Loose) -> Result<Vec<String>, ConfigError> {
    list_of(
        key,
        value,
        "a list of origins such as [\"https://chat.example.org\", \"http://localhost:8080\"]",
        normal_origin,
    )
}

/// `scheme://host[:port]` in lower case, if `text` is an http or https origin.
pub(crate) fn normal_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    valid.then_some(text)
}

/// The levels a log filter may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// An env_logger filter that parses and names a known level in each of its directives
/// (`info`, `warn,actor_chat=debug`): a misspelled level would otherwise parse as the name of a
/// module, and the server would start and log nothing at all.
fn log_filter(key: &'static str, value: Loose) -> Result<String, ConfigError> {
    let rule =
        "must be a log level (error, warn, info, debug, trace or off), or a comma-separated \
                list of LEVEL and MODULE=LEVEL";
    let Loose::Text(filter) = value else {
        return invalid(key, format!("{rule} (got {value})"));
    };
    let directives = filter.split('/').next().unwrap_or_default();
    for directive in directives.split(',').filter(|d| !d.trim().is_empty()) {
        let level = directive.rsplit('=').next().unwrap_or_default().trim();
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return invalid(
                key,
                format!("{rule} (got {filter:?}: {level:?} is not a level)"),
            );
        }
    }
    if directives.trim().is_empty() {
        return invalid(key, format!("{rule} (got {filter:?})"));
    }
    if let Err(error) = env_filter::Builder::new().try_parse(&filter) {
        return invalid(key, format!("{rule} (got {filter:?}: {error})"));
    }
    Ok(filter)
}

/// The keys as written in the file and the environment, with the built-in defaults; private, so
/// that nothing but [`Settings::from_raw`] ever sees an unchecked value.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    limits: RawLimits,
    heartbeat: RawHeartbeat,
    log: RawLog,
    tls: RawTls,
    store: RawStore,
    auth: RawAuth,
    http: RawHttp,
    /// The config file's folder, for relative paths; not a key.
    #[serde(skip)]
    base: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    bind: Loose,
    workers: Loose,
    max_connections: Loose,
    max_rooms: Loose,
    presence: Loose,
    shutdown_grace_secs: Loose,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9999".into(),
            workers: 0.into(),
            max_connections: 10_000.into(),
            max_rooms: 10_000.into(),
            presence: "all".into(),
            shutdown_grace_secs: 5.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_line_bytes: Loose,
    max_outbound_bytes: Loose,
    lines_per_sec: Loose,
    burst: Loose,
    rooms_per_user: Loose,
    max_total_outbound_bytes: Loose,
    slow_reader_grace_secs: Loose,
    max_connections_per_ip: Loose,
    exempt_networks: Loose,
    max_pending_logins: Loose,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096.into(),
            max_outbound_bytes: (1 << 20).into(),
            lines_per_sec: 50.into(),
            burst: 100.into(),
            rooms_per_user: 32.into(),
            max_total_outbound_bytes: (256 << 20).into(),
            slow_reader_grace_secs: 5.into(),
            max_connections_per_ip: 64.into(),
            exempt_networks: Loose::List(vec!["127.0.0.0/8".into(), "::1/128".into()]),
            max_pending_logins: 1000.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHeartbeat {
    interval_secs: Loose,
    timeout_secs: Loose,
    login_timeout_secs: Loose,
}

impl Default for RawHeartbeat {
    fn default() -> Self {
        Self {
            interval_secs: 30.into(),
            timeout_secs: 90.into(),
            login_timeout_secs: 30.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: Loose,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    bind: Loose,
    cert: Loose,
    key: Loose,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            bind: "".into(),
            cert: "".into(),
            key: "".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    url: Loose,
    max_backlog: Loose,
    retention_days: Loose,
    max_history_page: Loose,
    writer_nice: Loose,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chat.db".into(),
            max_backlog: 100_000.into(),
            retention_days: 30.into(),
            max_history_page: 200.into(),
            writer_nice: 0.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    mode: Loose,
    registration: Loose,
    allow_plaintext_passwords: Loose,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            mode: "open".into(),
            registration: "open".into(),
            allow_plaintext_passwords: Loose::Bool(false),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    bind: Loose,
    tls: Loose,
    allowed_origins: Loose,
    trusted_proxies: Loose,
    metrics: Loose,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            tls: Loose::Bool(false),
            allowed_origins: Loose::List(Vec::new()),
            trusted_proxies: Loose::List(vec!["127.0.0.0/8".into(), "::1/128".into()]),
            metrics: "loopback".into(),
        }
    }
}

/// `""` (no store), `sqlite://PATH` or `postgres://…` (also `postgresql://…`).
fn store_url(key: &'static str, value: Loose) -> Result<Option<StoreUrl>, ConfigError> {
    let rule = r#"must be "" (keep nothing), sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"#;
    let Loose::Text(url) = &value else {
        return invalid(key, format!("{rule} (got {value})"));
    };
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return invalid(key, format!("{rule} (got {value}: the path is empty)"));
        }
        return Ok(Some(StoreUrl::Sqlite(PathBuf::from(path))));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Some(StoreUrl::Postgres(url.to_owned())));
    }
    invalid(key, format!("{rule} (got {value})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_of(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        match Settings::load_from(file, env(pairs)) {
            Ok(settings) => panic!("expected an error, got {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn bundled_config_files_load_and_match_their_purpose() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let default = Settings::load_from(Some(&root.join("config/default.toml")), env(&[]))
            .expect("config/default.toml loads");
        assert_eq!(
            default.bind(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9999)))
        );
        assert!(default.tls().is_none(), "TLS is off by default");
        assert_eq!(default.limits.max_line_bytes, 4096);
        assert_eq!(default.server.presence, Presence::All);

        let bench = Settings::load_from(Some(&root.join("config/bench.toml")), env(&[]))
            .expect("config/bench.toml loads");
        assert_eq!(bench.limits.flood, None);
        assert_eq!(bench.server.presence, Presence::None);
        assert!(bench.server.max_connections > 10_000);
        assert_eq!(bench.log.level, "warn");
        assert_eq!(bench.store.url, None);
    }

    #[test]
    fn environment_overrides_every_section() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__SERVER__BIND", "127.0.0.1:0"),
                ("CHAT__SERVER__PRESENCE", "none"),
                ("CHAT__LIMITS__LINES_PER_SEC", "7"),
                ("CHAT__HEARTBEAT__INTERVAL_SECS", "0.5"),
                ("CHAT__LOG__LEVEL", "debug"),
                ("CHAT_SERVER", "not a config key"),
            ]),
        )
        .expect("valid overrides load");
        assert_eq!(settings.server.bind.map(|bind| bind.port()), Some(0));
        assert_eq!(settings.server.presence, Presence::None);
        assert_eq!(
            settings.limits.flood.map(|flood| flood.lines_per_sec.get()),
            Some(7)
        );
        assert_eq!(settings.heartbeat.interval, Duration::from_millis(500));
        assert_eq!(settings.log.level, "debug");
    }

    #[test]
    fn auth_keys_become_their_enums_and_accounts_need_a_store() {
        let settings = Settings::load_from(None, env(&[])).expect("the defaults load");
        assert_eq!(
            settings.auth(),
            AuthSettings {
                mode: AuthMode::Open,
                registration: Registration::Open,
                plaintext_passwords: PlaintextPasswords::Refused,
            }
        );
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__AUTH__MODE", "accounts"),
                ("CHAT__AUTH__REGISTRATION", "closed"),
                ("CHAT__AUTH__ALLOW_PLAINTEXT_PASSWORDS", "true"),
            ]),
        )
        .expect("valid auth keys load");
        assert_eq!(settings.auth().mode, AuthMode::Accounts);
        assert_eq!(settings.auth().registration, Registration::Closed);
        assert_eq!(
            settings.auth().plaintext_passwords,
            PlaintextPasswords::Allowed
        );
        let error = error_of(None, &[("CHAT__AUTH__MODE", "closed")]);
        assert!(error.starts_with("auth.mode must be"), "{error}");
        let error = error_of(None, &[("CHAT__AUTH__ALLOW_PLAINTEXT_PASSWORDS", "yes")]);
        assert!(
            error.starts_with("auth.allow_plaintext_passwords must be true or false"),
            "{error}"
        );
        let error = error_of(
            None,
            &[("CHAT__AUTH__MODE", "accounts"), ("CHAT__STORE__URL", "")],
        );
        assert_eq!(
            error,
            "auth.mode must be \"open\" when store.url is \"\": accounts are kept in the store"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = error_of(None, &[("CHAT__SERVER__WORKERS", "many")]);
        assert!(error.contains("server.workers"), "{error}");
        let error = error_of(None, &[("CHAT__SERVER__BIND", "nowhere")]);
        assert!(error.contains("server.bind"), "{error}");
        let error = error_of(None, &[("CHAT__HEARTBEAT__TIMEOUT_SECS", "-1")]);
        assert!(error.contains("heartbeat.timeout_secs"), "{error}");
        let error = error_of(None, &[("CHAT__LIMITS__MAX_LINE_BYTES", "3")]);
        assert!(error.contains("limits.max_line_bytes"), "{error}");
        let huge = "9223372036854775808";
        let error = error_of(None, &[("CHAT__LIMITS__MAX_LINE_BYTES", huge)]);
        assert!(error.contains("limits.max_line_bytes"), "{error}");
        let error = error_of(None, &[("CHAT__HEARTBEAT__LOGIN_TIMEOUT_SECS", "1e19")]);
        assert!(error.contains("heartbeat.login_timeout_secs"), "{error}");
        let error = error_of(None, &[("CHAT__SERVER__WORKERS", "100000")]);
        assert!(error.contains("server.workers"), "{error}");
    }

    #[test]
    fn a_list_of_every_user_or_room_must_fit_in_the_outbound_cap() {
        let error = error_of(None, &[("CHAT__SERVER__MAX_CONNECTIONS", "50000")]);
        assert!(error.contains("limits.max_outbound_bytes"), "{error}");
        let error = error_of(None, &[("CHAT__SERVER__MAX_ROOMS", "50000")]);
        assert!(error.contains("limits.max_outbound_bytes"), "{error}");
        let needed = max_list_reply_bytes(50_000).to_string();
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__SERVER__MAX_CONNECTIONS", "50000"),
                ("CHAT__LIMITS__MAX_OUTBOUND_BYTES", &needed),
            ]),
        )
        .expect("a cap that holds the list is enough");
        assert_eq!(settings.server.max_connections, 50_000);
        let error = error_of(None, &[("CHAT__LIMITS__ROOMS_PER_USER", "0")]);
        assert!(error.contains("limits.rooms_per_user"), "{error}");
        let error = error_of(None, &[("CHAT__SERVER__MAX_ROOMS", "0")]);
        assert!(error.contains("server.max_rooms"), "{error}");
    }

    #[test]
    fn missing_file_and_unknown_keys_are_refused() {
        let error = error_of(Some(Path::new("/nonexistent/chat.toml")), &[]);
        assert!(error.contains("/nonexistent/chat.toml"), "{error}");
        let error = error_of(None, &[("CHAT__SERVER__BINDD", "x")]);
        assert!(error.contains("bindd"), "{error}");
    }

    #[test]
    fn the_builder_goes_through_the_same_checks_and_conversions() {
        let settings = Settings::builder()
            .set("server.workers", 2)
            .set("heartbeat.login_timeout_secs", 0.25)
            .set("limits.lines_per_sec", 0)
            .build()
            .expect("valid keys build");
        assert_eq!(settings.server.workers.get(), 2);
        assert_eq!(settings.heartbeat.login_timeout, Duration::from_millis(250));
        assert_eq!(settings.limits.flood, None);
        let error = Settings::builder()
            .set("limits.max_line_bytes", 3)
            .build()
            .expect_err("a line limit below the minimum is refused");
        let (low, high) = (LINE_LIMITS.start(), LINE_LIMITS.end());
        assert_eq!(
            error.to_string(),
            format!("limits.max_line_bytes must be a whole number from {low} to {high} (got 3)")
        );
        // Zero workers means one per core, resolved once here.
        let settings = Settings::builder().build().expect("defaults build");
        assert!(settings.server.workers.get() >= 1);
        assert_eq!(
            Settings::default().heartbeat.timeout,
            Duration::from_secs(90)
        );
    }

    /// The sentence for each kind of mistake, from the environment and from a file alike.
    #[test]
    fn each_kind_of_mistake_is_one_plain_sentence() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "CHAT__SERVER__PRESENCE",
                "some",
                r#"server.presence must be "all" or "none" (got "some")"#,
            ),
            (
                "CHAT__SERVER__WORKERS",
                "-1",
                "server.workers must be a whole number from 0 to 1024 (got -1)",
            ),
            (
                "CHAT__HTTP__METRICS",
                "everyone",
                r#"http.metrics must be "loopback", "all" or "off" (got "everyone")"#,
            ),
            (
                "CHAT__SERVER__WORKERS",
                "many",
                r#"server.workers must be a whole number from 0 to 1024 (got "many")"#,
            ),
            (
                "CHAT__SERVER__WORKERS",
                "1.5",
                "server.workers must be a whole number from 0 to 1024 (got 1.5)",
            ),
            (
                "CHAT__HEARTBEAT__TIMEOUT_SECS",
                "soon",
                r#"heartbeat.timeout_secs must be a number of seconds above 0 and at most 31536000 (got "soon")"#,
            ),
            (
                "CHAT__HEARTBEAT__TIMEOUT_SECS",
                "0",
                "heartbeat.timeout_secs must be a number of seconds above 0 and at most 31536000 (got 0)",
            ),
            (
                "CHAT__SERVER__BIND",
                "nowhere",
                r#"server.bind must be HOST:PORT, such as 127.0.0.1:9999, [::1]:9999, 0.0.0.0:9999 or localhost:9999 (got "nowhere")"#,
            ),
            (
                "CHAT__LOG__LEVEL",
                "inof",
                r#"log.level must be a log level (error, warn, info, debug, trace or off), or a comma-separated list of LEVEL and MODULE=LEVEL (got "inof": "inof" is not a level)"#,
            ),
            (
                "CHAT__LOG__LEVEL",
                "warn,actor_chat=verbose",
                r#"log.level must be a log level (error, warn, info, debug, trace or off), or a comma-separated list of LEVEL and MODULE=LEVEL (got "warn,actor_chat=verbose": "verbose" is not a level)"#,
            ),
            (
                "CHAT__LIMITS__BURST",
                "0",
                "limits.burst must be at least 1 when flood control is on",
            ),
        ];
        for (var, value, expected) in cases {
            assert_eq!(&error_of(None, &[(var, value)]), expected, "{var}={value}");
        }
        // The same words for a value from a file, typed as TOML types it.
        let dir = std::env::temp_dir().join(format!("actor-chat-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[server]\nworkers = -1\n").expect("write the file");
        let error = error_of(Some(&file), &[]);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            error,
            "server.workers must be a whole number from 0 to 1024 (got -1)"
        );
    }

    #[test]
    fn bind_accepts_host_names_and_ipv6() {
        for (bind, expected) in [
            ("[::1]:9999", "[::1]:9999"),
            ("[::]:0", "[::]:0"),
            ("0.0.0.0:9999", "0.0.0.0:9999"),
        ] {
            let settings = Settings::load_from(None, env(&[("CHAT__SERVER__BIND", bind)]))
                .expect("a valid address");
            assert_eq!(
                settings.bind().map(|bind| bind.to_string()),
                Some(expected.to_owned())
            );
        }
        let settings = Settings::load_from(None, env(&[("CHAT__SERVER__BIND", "localhost:9999")]))
            .expect("localhost resolves");
        let bind = settings.bind().expect("a plain listener");
        assert!(bind.ip().is_loopback(), "{bind}");
        assert_eq!(bind.port(), 9999);
    }

    #[test]
    fn store_urls_are_checked_and_sqlite_paths_follow_the_config_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let default = Settings::load_from(Some(&root.join("config/default.toml")), env(&[]))
            .expect("config/default.toml loads");
        assert_eq!(
            default.store.url,
            Some(StoreUrl::Sqlite(root.join("config/../data/chat.db")))
        );
        assert_eq!(default.store.max_backlog, 100_000);
        assert_eq!(default.store.max_history_page, 200);
        assert_eq!(default.store.writer_nice, 0);
        assert_eq!(
            default.store.retention,
            Some(Duration::from_secs(30 * 24 * 3600))
        );
        let builtin = Settings::load_from(None, env(&[])).expect("defaults");
        assert_eq!(
            builtin.store.url,
            Some(StoreUrl::Sqlite(PathBuf::from("data/chat.db")))
        );
        let none = Settings::load_from(None, env(&[("CHAT__STORE__URL", "")])).expect("none");
        assert_eq!(none.store.url, None);
        let pg = "postgres://postgres:secret@127.0.0.1:5432/test";
        let settings =
            Settings::load_from(None, env(&[("CHAT__STORE__URL", pg)])).expect("postgres");
        let url = settings.store.url.expect("a store");
        assert_eq!(url, StoreUrl::Postgres(pg.to_owned()));
        assert_eq!(url.to_string(), "postgres://postgres@127.0.0.1:5432/test");
        let forever = Settings::load_from(None, env(&[("CHAT__STORE__RETENTION_DAYS", "0")]))
            .expect("0 days");
        assert_eq!(forever.store.retention, None);
        let error = error_of(None, &[("CHAT__STORE__URL", "mysql://x")]);
        assert!(error.starts_with("store.url must be"), "{error}");
        let error = error_of(None, &[("CHAT__STORE__MAX_HISTORY_PAGE", "0")]);
        assert!(error.contains("store.max_history_page"), "{error}");
        let error = error_of(None, &[("CHAT__STORE__MAX_BACKLOG", "0")]);
        assert!(error.contains("store.max_backlog"), "{error}");
        let nice =
            Settings::load_from(None, env(&[("CHAT__STORE__WRITER_NICE", "19")])).expect("nice 19");
        assert_eq!(nice.store.writer_nice, 19);
        let error = error_of(None, &[("CHAT__STORE__WRITER_NICE", "20")]);
        assert!(error.contains("store.writer_nice"), "{error}");
    }

    #[test]
    fn valid_log_filters_pass() {
        for level in [
            "info",
            "WARN",
            "warn,actor_chat=debug",
            "off",
            "error,actor_chat::server=trace",
        ] {
            let settings = Settings::load_from(None, env(&[("CHAT__LOG__LEVEL", level)]))
                .expect("a valid filter");
            assert_eq!(settings.log_filter(), level);
        }
    }

    #[test]
    fn tls_needs_a_certificate_and_a_key_and_resolves_them_against_the_file() {
        let error = error_of(None, &[("CHAT__TLS__BIND", "127.0.0.1:0")]);
        assert_eq!(
            error,
            r#"tls.cert must be the path of a PEM file when tls.bind is set (got "")"#
        );
        let error = error_of(
            None,
            &[
                ("CHAT__TLS__BIND", "127.0.0.1:0"),
                ("CHAT__TLS__CERT", "c.pem"),
            ],
        );
        assert!(error.starts_with("tls.key "), "{error}");
        let error = error_of(None, &[("CHAT__TLS__BIND", "nowhere")]);
        assert!(error.starts_with("tls.bind must be HOST:PORT"), "{error}");

        // Without a file, relative paths stay relative (to the working directory).
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__TLS__BIND", "127.0.0.1:0"),
                ("CHAT__TLS__CERT", "c.pem"),
                ("CHAT__TLS__KEY", "/etc/chat/k.pem"),
            ]),
        )
        .expect("TLS settings load");
        let tls = settings.tls().expect("TLS is on");
        assert_eq!(tls.cert, Path::new("c.pem"));
        assert_eq!(tls.key, Path::new("/etc/chat/k.pem"));

        // From a file, relative to its folder; absolute paths as they are.
        let dir =
            std::env::temp_dir().join(format!("actor-chat-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let file = dir.join("chat.toml");
        std::fs::write(
            &file,
            "[tls]\nbind = \"127.0.0.1:0\"\ncert = \"certs/cert.pem\"\nkey = \"/k.pem\"\n",
        )
        .expect("write the file");
        let settings = Settings::load_from(Some(&file), env(&[]));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = settings.expect("the file loads");
        let tls = settings.tls().expect("TLS is on");
        assert_eq!(tls.cert, dir.join("certs/cert.pem"));
        assert_eq!(tls.key, Path::new("/k.pem"));
    }

    #[test]
    fn http_keys_are_checked_and_converted() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let default = Settings::load_from(Some(&root.join("config/default.toml")), env(&[]))
            .expect("config/default.toml loads");
        let http = default.http().expect("HTTP is on by default");
        assert_eq!(http.bind(), SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(!http.tls());
        assert!(http.allowed_origins.is_empty());
        assert_eq!(http.trusted_proxies.len(), 2);
        let bench = Settings::load_from(Some(&root.join("config/bench.toml")), env(&[]))
            .expect("config/bench.toml loads");
        assert!(bench.http().is_none(), "no port 8080 under load tests");

        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__HTTP__BIND", "127.0.0.1:0"),
                (
                    "CHAT__HTTP__ALLOWED_ORIGINS",
                    "https://Chat.Example.org/, http://localhost:8080",
                ),
                ("CHAT__HTTP__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1"),
            ]),
        )
        .expect("valid HTTP keys");
        let http = settings.http().expect("on");
        assert_eq!(
            http.allowed_origins,
            ["https://chat.example.org", "http://localhost:8080"]
        );
        assert_eq!(http.trusted_proxies.len(), 2);
        let off = Settings::load_from(None, env(&[("CHAT__HTTP__BIND", "")])).expect("off");
        assert!(off.http().is_none());

        let error = error_of(None, &[("CHAT__HTTP__TLS", "yes")]);
        assert_eq!(error, r#"http.tls must be true or false (got "yes")"#);
        let error = error_of(None, &[("CHAT__HTTP__TLS", "true")]);
        assert!(
            error.starts_with("http.tls can be true only with [tls]"),
            "{error}"
        );
        let error = error_of(None, &[("CHAT__HTTP__ALLOWED_ORIGINS", "chat.example.org")]);
        assert!(error.starts_with("http.allowed_origins must be"), "{error}");
        let error = error_of(
            None,
            &[(
                "CHAT__HTTP__ALLOWED_ORIGINS",
                "https://chat.example.org/path",
            )],
        );
        assert!(error.starts_with("http.allowed_origins must be"), "{error}");
        let error = error_of(None, &[("CHAT__HTTP__TRUSTED_PROXIES", "proxy")]);
        assert!(error.starts_with("http.trusted_proxies must be"), "{error}");
        let error = error_of(None, &[("CHAT__HTTP__BIND", "nowhere")]);
        assert!(error.starts_with("http.bind must be HOST:PORT"), "{error}");
        let https = Settings::load_from(
            None,
            env(&[
                ("CHAT__HTTP__TLS", "true"),
                ("CHAT__TLS__BIND", "127.0.0.1:0"),
                ("CHAT__TLS__CERT", "c.pem"),
                ("CHAT__TLS__KEY", "k.pem"),
            ]),
        )
        .expect("HTTPS with [tls]");
        assert!(https.http().is_some_and(HttpSettings::tls));
    }

    #[test]
    fn the_plain_port_can_be_turned_off_but_not_both() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("CHAT__SERVER__BIND", ""),
                ("CHAT__TLS__BIND", "127.0.0.1:0"),
                ("CHAT__TLS__CERT", "c.pem"),
                ("CHAT__TLS__KEY", "k.pem"),
            ]),
        )
        .expect("TLS only is fine");
        assert_eq!(settings.bind(), None);
        let web_only = Settings::load_from(None, env(&[("CHAT__SERVER__BIND", "")]))
            .expect("HTTP only is fine too");
        assert!(web_only.http().is_some());
        assert!(settings.tls().is_some());
        let error = error_of(
            None,
            &[("CHAT__SERVER__BIND", ""), ("CHAT__HTTP__BIND", "")],
        );
        assert_eq!(
            error,
            "server.bind must be HOST:PORT when tls.bind and http.bind are empty: the server \
             needs somewhere to listen"
        );
    }
}
