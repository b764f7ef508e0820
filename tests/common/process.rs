//! Running the built binaries as child processes, for tests of what a user really runs.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

/// How long a child gets to start or to stop.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `actor-chat-server`, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// The plain port (`listening on ADDR`); unset (port 0) when the server has none.
    pub addr: SocketAddr,
    /// The TLS port (`listening on ADDR (tls)`), once seen; see [`ServerProcess::tls_addr`].
    tls: Option<SocketAddr>,
    log: Receiver<String>,
}

impl ServerProcess {
    /// A command for the server binary on `config`, bound to an ephemeral loopback port,
    /// logging at info (so that `listening on ADDR` is printed), and keeping nothing
    /// (`CHAT__STORE__URL=""`), so that no test writes a database into the repository; a test
    /// that wants a store sets the variable again ([`ServerProcess::with_store`]).
    pub fn command(config: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_actor-chat-server"));
        command
            .arg("--config")
            .arg(format!("{}/{config}", env!("CARGO_MANIFEST_DIR")))
            .env("CHAT__SERVER__BIND", "127.0.0.1:0")
            .env("CHAT__STORE__URL", "")
            .env("CHAT__HTTP__BIND", "")
            .env("RUST_LOG", "info");
        command
    }

    /// [`ServerProcess::command`] keeping messages at `url` (`sqlite:///tmp/…/chat.db`).
    pub fn with_store(config: &str, url: &str) -> Command {
        let mut command = Self::command(config);
        command.env("CHAT__STORE__URL", url);
        command
    }

    pub fn start(config: &str) -> ServerProcess {
        Self::spawn(Self::command(config))
    }

    /// Spawns `command` and waits for it to report the address it listens on.
    pub fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            log,
        };
        let line = server
            .wait_for_log("listening on ")
            .expect("the server logs its address");
        // The plain port is logged first; a server without one logs only its TLS port.
        match line.strip_suffix(" (tls)") {
            Some(line) => server.tls = Some(address_in(line)),
            None => server.addr = address_in(&line),
        }
        server
    }

    /// The TLS port, from `listening on ADDR (tls)` (which follows the plain port's line).
    pub fn tls_addr(&mut self) -> SocketAddr {
        if self.tls.is_none() {
            let line = self
                .wait_for_log(" (tls)")
                .expect("the server logs its TLS address");
            let line = line.strip_suffix(" (tls)").unwrap_or(&line).to_owned();
            self.tls = Some(address_in(&line));
        }
        self.tls.expect("set above")
    }

    /// Counts the log lines from now on that contain `needle`, until there are `enough` of
    /// them or none has come for a second; returns the count. (The log is read by a thread
    /// of its own, so lines the server has printed may not have been read yet.)
    pub fn count_in_log(&mut self, needle: &str, enough: usize) -> usize {
        let mut count = 0;
        while count < enough {
            match self.log.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line.contains(needle) => count += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        count
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first log line from now on that contains `needle`, if one comes in time.
    pub fn wait_for_log(&mut self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Resident memory of the server process, read the way actor-chat-bench reads it.
    pub fn rss_kib(&self) -> u64 {
        actor_chat::bench::rss_kib(self.pid()).expect("read the server's VmRSS")
    }

    /// User plus system CPU time the server process has used so far.
    pub fn cpu_time(&self) -> Duration {
        actor_chat::bench::cpu_time(&self.pid().to_string()).expect("read the server's CPU time")
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill(2) has no memory-safety preconditions.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }

    /// Waits (bounded by [`PROCESS_TIMEOUT`]) for the process to exit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        wait_with_deadline(&mut self.child, PROCESS_TIMEOUT)
    }
}

/// The socket address at the end of a `listening on ADDR` line.
fn address_in(line: &str) -> SocketAddr {
    line.rsplit("listening on ")
        .next()
        .and_then(|addr| addr.trim().parse().ok())
        .expect("a socket address after 'listening on'")
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running then (the caller
/// decides whether to kill it). std has no wait with a timeout, hence the polling.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
