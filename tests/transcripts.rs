//! Every transcript in docs/PROTOCOL.md, replayed as it is written against the server binary
//! started as its `Server:` line says, each `<` line compared exactly.
//!
//! A transcript is a ```` ```text ```` block. The paragraph right above it is its server:
//! `` Server: `CONFIG` with `CHAT__SECTION__KEY=VALUE` … `` (`with` and the variables only when
//! it needs them). A block whose first two lines are names and dashes has one connection per
//! name, each at its column; otherwise it has one connection. Going down the block, `> LINE`
//! is sent on its connection (consecutive ones of one connection in one write), `< LINE` is
//! waited for and must match exactly, and `(server closed the connection)` waits for the close.
//! In a line, `\r` is a carriage return, `\xHH` the byte HH and `\\` a backslash; spaces that
//! end it are dropped (a space that matters is written `\x20`), and so is a comment: brackets
//! after two or more spaces, which may go on over the following lines. Anything else in a
//! block is an error, so that a transcript cannot silently stop being checked.

mod common;

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::process::ServerProcess;

const PROTOCOL_MD: &str = include_str!("../docs/PROTOCOL.md");

/// A line the server does not send within this long is not coming; longer than any heartbeat
/// or timeout a transcript waits for.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The marker for the end of a connection.
const CLOSED: &str = "(server closed the connection)";

/// One transcript: where it is, how to start its server, its connections and what happens.
#[derive(Debug)]
struct Transcript {
    /// Line of the opening fence in the document (1-based), for messages.
    line: usize,
    /// The config file, relative to the repository.
    config: String,
    /// `CHAT__…` variables on top of it.
    env: Vec<(String, String)>,
    /// One name per connection (`client` for a one-connection transcript).
    connections: Vec<String>,
    steps: Vec<Step>,
}

/// What a transcript line does, on connection `conn`, from line `line` of the document.
#[derive(Debug, PartialEq)]
struct Step {
    conn: usize,
    line: usize,
    action: Action,
}

#[derive(Debug, PartialEq)]
enum Action {
    /// Sends these bytes and a `\n`.
    Send(Vec<u8>),
    /// Receives exactly this line (without its `\n`).
    Expect(Vec<u8>),
    /// Waits for the server to close the connection.
    Closed,
}

/// Every ```` ```text ```` block of `doc`, parsed; panics on anything it cannot read.
fn transcripts(doc: &str) -> Vec<Transcript> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```text" {
            i += 1;
            continue;
        }
        let fence = i + 1; // 1-based
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].trim_end() == "```")
            .unwrap_or_else(|| panic!("line {fence}: the text block is never closed"));
        let (config, env) = server_line(&lines[..i], fence);
        let (connections, steps) = body(&lines[i + 1..end], fence + 1);
        found.push(Transcript {
            line: fence,
            config,
            env,
            connections,
            steps,
        });
        i = end + 1;
    }
    found
}

/// The paragraph right above the block at line `fence`: `Server: CONFIG [with KEY=VALUE…]`.
fn server_line(before: &[&str], fence: usize) -> (String, Vec<(String, String)>) {
    let last = before
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("line {fence}: nothing above the transcript"));
    let first = before[..last]
        .iter()
        .rposition(|line| line.trim().is_empty())
        .map_or(0, |blank| blank + 1);
    let paragraph = before[first..=last].join(" ").replace('`', "");
    let rest = paragraph.strip_prefix("Server: ").unwrap_or_else(|| {
        panic!("line {fence}: the paragraph above a transcript must be its `Server:` line, not {paragraph:?}")
    });
    let mut words = rest.split_whitespace();
    let config = words
        .next()
        .unwrap_or_else(|| panic!("line {fence}: `Server:` names no config file"))
        .to_owned();
    let mut env = Vec::new();
    match words.next() {
        None => {}
        Some("with") => {
            for word in words {
                let (key, value) = word
                    .split_once('=')
                    .filter(|(key, _)| key.starts_with("CHAT__"))
                    .unwrap_or_else(|| {
                        panic!("line {fence}: {word:?} in `Server:` is not CHAT__KEY=VALUE")
                    });
                env.push((key.to_owned(), value.to_owned()));
            }
        }
        Some(word) => panic!("line {fence}: expected `with` after the config, not {word:?}"),
    }
    (config, env)
}

/// The connections and steps of a block whose first line is line `first` of the document.
fn body(lines: &[&str], first: usize) -> (Vec<String>, Vec<Step>) {
    let is_rule =
        |line: &&str| !line.trim().is_empty() && line.chars().all(|c| c == '-' || c == ' ');
    let (columns, skip) = match lines {
        [names, rule, ..] if is_rule(rule) => {
            let columns: Vec<(usize, String)> = names
                .char_indices()
                .filter(|&(at, c)| c != ' ' && (at == 0 || names[..at].ends_with(' ')))
                .map(|(at, _)| {
                    let name = names[at..].split(' ').next().unwrap_or_default();
                    (at, name.to_owned())
                })
                .collect();
            (columns, 2)
        }
        _ => (vec![(0, "client".to_owned())], 0),
    };
    let mut steps = Vec::new();
    let mut in_comment = false;
    for (offset, raw) in lines.iter().enumerate().skip(skip) {
        let line = first + offset;
        let indent = raw.len() - raw.trim_start().len();
        let text = raw.trim();
        if in_comment {
            in_comment = !text.contains(']');
            continue;
        }
        if text.is_empty() {
            continue;
        }
        if text.starts_with('[') {
            in_comment = !text.contains(']');
            continue;
        }
        // The rightmost column that starts at or before the text.
        let conn = columns
            .iter()
            .rposition(|&(at, _)| at <= indent)
            .unwrap_or_else(|| panic!("line {line}: left of every column"));
        let action = if text == CLOSED {
            Action::Closed
        } else {
            let marker = text.chars().next().unwrap_or_default();
            let rest = &text[marker.len_utf8()..];
            let rest = match rest.find("  [") {
                Some(comment) => {
                    in_comment = !rest[comment..].contains(']');
                    &rest[..comment]
                }
                None => rest,
            };
            let rest = rest.trim_end();
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let bytes = unescape(rest, line);
            match marker {
                '>' => Action::Send(bytes),
                '<' => Action::Expect(bytes),
                _ => panic!("line {line}: neither `>`, `<`, a comment nor {CLOSED:?}: {raw:?}"),
            }
        };
        steps.push(Step { conn, line, action });
    }
    assert!(
        !in_comment,
        "line {first}: a comment in the block is never closed"
    );
    (columns.into_iter().map(|(_, name)| name).collect(), steps)
}

/// `text` with `\r`, `\xHH` and `\\` turned into the bytes they stand for.
fn unescape(text: &str, line: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .filter(|_| hex.len() == 2)
                    .unwrap_or_else(|| panic!("line {line}: bad \\x escape in {text:?}"));
                out.push(value);
            }
            _ => panic!("line {line}: unknown escape in {text:?} (\\r, \\xHH and \\\\ exist)"),
        }
    }
    out
}

/// One of a transcript's connections, opened when its first line comes.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        let writer = stream.try_clone().expect("clone the stream");
        Connection {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// The next line without its `\n`; `None` once the server has closed the connection.
    fn next_line(&mut self, waiting_for: &str) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                Some(line)
            }
            Ok(_) => panic!("{waiting_for}: the connection closed in the middle of a line"),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => None,
            Err(error) => panic!("{waiting_for}: nothing within {READ_TIMEOUT:?} ({error})"),
        }
    }
}

/// Starts the server `transcript` names and replays it.
fn replay(transcript: &Transcript) {
    let mut command = ServerProcess::command(&transcript.config);
    command.envs(transcript.env.iter().map(|(key, value)| (key, value)));
    let server = ServerProcess::spawn(command);
    let mut connections: Vec<Option<Connection>> =
        transcript.connections.iter().map(|_| None).collect();
    let mut pending: Option<(usize, Vec<u8>)> = None;
    for step in &transcript.steps {
        let who = &transcript.connections[step.conn];
        let place = format!("docs/PROTOCOL.md line {} ({who})", step.line);
        // Consecutive lines sent on one connection go in one write, as the transcript says.
        if let Some((conn, bytes)) = pending.take() {
            if matches!(step.action, Action::Send(_)) && conn == step.conn {
                pending = Some((conn, bytes));
            } else {
                let connection = connections[conn].as_mut().expect("opened when written to");
                connection
                    .writer
                    .write_all(&bytes)
                    .unwrap_or_else(|error| panic!("{place}: cannot send: {error}"));
            }
        }
        let connection =
            connections[step.conn].get_or_insert_with(|| Connection::open(server.addr));
        match &step.action {
            Action::Send(line) => {
                let (_, bytes) = pending.get_or_insert_with(|| (step.conn, Vec::new()));
                bytes.extend_from_slice(line);
                bytes.push(b'\n');
            }
            Action::Expect(expected) => {
                let want = String::from_utf8_lossy(expected);
                let got = connection
                    .next_line(&format!("{place}: waiting for {want:?}"))
                    .unwrap_or_else(|| panic!("{place}: closed while waiting for {want:?}"));
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    want,
                    "{place}: the server sent something else"
                );
            }
            Action::Closed => {
                if let Some(line) = connection.next_line(&format!("{place}: waiting for the close"))
                {
                    panic!(
                        "{place}: expected the close, got {:?}",
                        String::from_utf8_lossy(&line)
                    );
                }
            }
        }
    }
    if let Some((conn, bytes)) = pending {
        if let Some(connection) = connections[conn].as_mut() {
            let _ = connection.writer.write_all(&bytes);
        }
    }
}

#[test]
fn every_transcript_in_protocol_md_replays_exactly() {
    let all = transcripts(PROTOCOL_MD);
    // The worked example and the guards, at least: a parser that finds nothing checks nothing.
    assert!(all.len() >= 2, "found {} transcripts", all.len());
    for transcript in &all {
        assert!(
            transcript
                .steps
                .iter()
                .any(|step| matches!(step.action, Action::Expect(_))),
            "line {}: a transcript with nothing to check",
            transcript.line
        );
        replay(transcript);
    }
}

#[test]
fn transcripts_are_read_by_column_with_escapes_and_comments() {
    let doc = concat!(
        "Server: `config/x.toml` with\n",
        "`CHAT__LIMITS__BURST=4`\n",
        "\n",
        "```text\n",
        "ann          ben\n",
        "---          ---\n",
        "> login|ann  [a comment\n",
        "              that goes on]\n",
        "             > a\\x20\\r\\\\b\n",
        "             >\n",
        "< login|ben\n",
        "                                [alone]\n",
        "             (server closed the connection)\n",
        "```\n",
        "\n",
        "Server: `config/y.toml`\n",
        "\n",
        "```text\n",
        "> x   \n",
        "```\n",
    );
    let found = transcripts(doc);
    assert_eq!(found.len(), 2);
    let two = &found[0];
    assert_eq!(two.line, 4);
    assert_eq!(two.config, "config/x.toml");
    assert_eq!(
        two.env,
        [("CHAT__LIMITS__BURST".to_owned(), "4".to_owned())]
    );
    assert_eq!(two.connections, ["ann", "ben"]);
    let step = |conn, line, action| Step { conn, line, action };
    assert_eq!(
        two.steps,
        [
            step(0, 7, Action::Send(b"login|ann".to_vec())),
            step(1, 9, Action::Send(b"a \r\\b".to_vec())),
            step(1, 10, Action::Send(Vec::new())),
            step(0, 11, Action::Expect(b"login|ben".to_vec())),
            step(1, 13, Action::Closed),
        ]
    );
    let one = &found[1];
    assert_eq!(one.config, "config/y.toml");
    assert!(one.env.is_empty());
    assert_eq!(one.connections, ["client"]);
    assert_eq!(one.steps, [step(0, 19, Action::Send(b"x".to_vec()))]);
}
