//! Server settings: built-in defaults, overlaid by an optional TOML file, overlaid by environment
//! variables named `CHAT__SECTION__KEY`.
//!
//! Every key is validated here, once, so the rest of the server can trust its settings; a bad
//! value stops start-up with a sentence that names the key (see [`ConfigError`]).

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use crate::codec::{max_list_reply_bytes, MAX_LISTED};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "CHAT";

/// Upper bounds that keep every derived quantity (deadlines, buffer sizes, thread counts) far
/// from overflow; no sensible configuration comes near them.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;
const MAX_LINE_LIMIT: usize = 1 << 20;
const MAX_WORKERS: usize = 1024;
const MAX_ROOMS_PER_USER: usize = 1024;

/// Everything the server can be told, grouped as in `config/default.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub limits: Limits,
    pub heartbeat: Heartbeat,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (the log says which).
    pub bind: SocketAddr,
    /// Worker threads running sessions; 0 means one per core.
    pub workers: usize,
    /// Connections served at once; the next one is told `bye|server-full`.
    pub max_connections: usize,
    /// Rooms that may exist at once; joining a new one past it gets `too-many-rooms`.
    pub max_rooms: usize,
    /// Who hears about logins and logouts.
    pub presence: Presence,
    /// How long a stopping server, or a closing connection, may spend flushing what it owes.
    pub shutdown_grace_secs: f64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9999)),
            workers: 0,
            max_connections: 10_000,
            max_rooms: 10_000,
            presence: Presence::All,
            shutdown_grace_secs: 5.0,
        }
    }
}

/// Who is told when a user logs in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Everyone online: `login|NAME` / `logout|NAME`, and the list of who is online at login.
    All,
    /// No one: for large servers, where each login would otherwise cost a line per user.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest accepted line, in bytes, without its newline.
    pub max_line_bytes: usize,
    /// Most bytes queued for one connection before it is cut off as too slow.
    pub max_outbound_bytes: usize,
    /// Sustained lines per second a connection may send; 0 turns flood control off.
    pub lines_per_sec: u32,
    /// Lines a connection may send in a burst above the sustained rate.
    pub burst: u32,
    /// Rooms one user may be in at once.
    pub rooms_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096,
            max_outbound_bytes: 1 << 20,
            lines_per_sec: 50,
            burst: 100,
            rooms_per_user: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    /// Silence after which the server sends `ping`.
    pub interval_secs: f64,
    /// Silence after which the connection is closed with `bye|timeout`.
    pub timeout_secs: f64,
    /// Time a new connection has to log in.
    pub login_timeout_secs: f64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval_secs: 30.0,
            timeout_secs: 90.0,
            login_timeout_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// env_logger filter used when `RUST_LOG` is not set, e.g. `info` or `warn,actor_chat=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
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
    #[error("config key {key} is invalid: {reason}")]
    Value { key: &'static str, reason: String },
}

impl Settings {
    /// Loads the defaults, then `file` if given (it must exist), then `CHAT__…` variables from
    /// the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Missing(file.display().to_string()));
            }
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env = env
            .into_iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Value {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.server.workers > MAX_WORKERS {
            return invalid("server.workers", "must be at most 1024 (0 = one per core)");
        }
        if !(1..=MAX_LISTED).contains(&self.server.max_connections) {
            return invalid("server.max_connections", "must be between 1 and 1000000");
        }
        if !(1..=MAX_LISTED).contains(&self.server.max_rooms) {
            return invalid("server.max_rooms", "must be between 1 and 1000000");
        }
        if !(1..=MAX_ROOMS_PER_USER).contains(&self.limits.rooms_per_user) {
            return invalid("limits.rooms_per_user", "must be between 1 and 1024");
        }
        if !(64..=MAX_LINE_LIMIT).contains(&self.limits.max_line_bytes) {
            return invalid("limits.max_line_bytes", "must be between 64 and 1048576");
        }
        if self.limits.max_outbound_bytes < self.limits.max_line_bytes * 2 {
            return invalid(
                "limits.max_outbound_bytes",
                "must be at least twice limits.max_line_bytes",
            );
        }
        // A reply that lists every user (`users|…`, the peer list at login, a room's members)
        // or every room must fit in a client's queue, or asking for it would cut the asker off
        // as too slow.
        let longest_list =
            max_list_reply_bytes(self.server.max_connections.max(self.server.max_rooms));
        if self.limits.max_outbound_bytes < longest_list {
            return invalid(
                "limits.max_outbound_bytes",
                &format!(
                    "must be at least {longest_list} here, so that a list of every user (up to \
                     server.max_connections) or every room (up to server.max_rooms) fits"
                ),
            );
        }
        if self.limits.lines_per_sec > 0 && self.limits.burst == 0 {
            return invalid(
                "limits.burst",
                "must be at least 1 when flood control is on",
            );
        }
        let durations: [(&'static str, f64); 4] = [
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
            ),
            ("heartbeat.interval_secs", self.heartbeat.interval_secs),
            ("heartbeat.timeout_secs", self.heartbeat.timeout_secs),
            (
                "heartbeat.login_timeout_secs",
                self.heartbeat.login_timeout_secs,
            ),
        ];
        for (key, secs) in durations {
            if !(secs > 0.0 && secs <= MAX_SECS) {
                return invalid(key, "must be a positive number of seconds, at most a year");
            }
        }
        if self.heartbeat.timeout_secs <= self.heartbeat.interval_secs {
            return invalid(
                "heartbeat.timeout_secs",
                "must be longer than heartbeat.interval_secs",
            );
        }
        if let Err(error) = env_filter::Builder::new()
            .try_parse(&self.log.level)
            .map(|_| ())
        {
            return invalid("log.level", &error.to_string());
        }
        Ok(())
    }

    /// How many worker threads run sessions (never 0): `server.workers`, or one per core if it
    /// is 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Seconds from the config as a [`Duration`]; [`Settings::load`] has already checked them.
pub fn secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
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
            default.server.bind,
            SocketAddr::from(([127, 0, 0, 1], 9999))
        );
        assert_eq!(default.limits.max_line_bytes, 4096);
        assert_eq!(default.server.presence, Presence::All);

        let bench = Settings::load_from(Some(&root.join("config/bench.toml")), env(&[]))
            .expect("config/bench.toml loads");
        assert_eq!(bench.limits.lines_per_sec, 0);
        assert_eq!(bench.server.presence, Presence::None);
        assert!(bench.server.max_connections > 10_000);
        assert_eq!(bench.log.level, "warn");
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
        assert_eq!(settings.server.bind.port(), 0);
        assert_eq!(settings.server.presence, Presence::None);
        assert_eq!(settings.limits.lines_per_sec, 7);
        assert_eq!(settings.heartbeat.interval_secs, 0.5);
        assert_eq!(settings.log.level, "debug");
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
}
