//! Piped mode: stdin is not a terminal, so lines are read as they come, with no editing.
//!
//! Used by scripts and bots (and the integration tests). The reader runs on a plain thread,
//! because a blocking read cannot share the network's single-threaded runtime.

use std::{
    io::{self, BufRead},
    thread,
};

use tokio::sync::mpsc;

use super::{input::secrets_for, Secret, Typed};

/// Starts reading stdin into `lines`; the sender is dropped at end of input, which the session
/// takes to mean leave.
pub(crate) fn start(lines: mpsc::Sender<Typed>) {
    thread::spawn(move || read_plain(lines));
}

/// Reads stdin lines as they come. Bytes that are not UTF-8 are replaced rather than
/// rejected: a typo in an encoding should not end the session. The passwords `/register` and
/// `/passwd` need are the lines right after them (see `input::secrets_for`).
fn read_plain(lines: mpsc::Sender<Typed>) {
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stdin.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                // `parse_input` drops the line ending. There is no prompt to have shown a
                // target: a script's lines go wherever plain lines go when they are read.
                let line = String::from_utf8_lossy(&buf).into_owned();
                // `/register` and `/passwd` take their passwords from the lines that follow.
                let mut secrets = Vec::new();
                for _ in secrets_for(&line) {
                    let mut secret = String::new();
                    match stdin.read_line(&mut secret) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            secrets.push(Secret(secret.trim_end_matches(['\n', '\r']).to_owned()))
                        }
                    }
                }
                let typed = Typed {
                    line,
                    prompt: None,
                    secrets,
                };
                if lines.blocking_send(typed).is_err() {
                    break;
                }
            }
        }
    }
}
