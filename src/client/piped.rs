//! Piped mode: stdin is not a terminal, so lines are read as they come, with no editing.
//!
//! Used by scripts and bots (and the integration tests). The reader runs on a plain thread,
//! because a blocking read cannot share the network's single-threaded runtime.

use std::{
    io::{self, BufRead},
    thread,
};

use tokio::sync::mpsc;

use super::Typed;

/// Starts reading stdin into `lines`; the sender is dropped at end of input, which the session
/// takes to mean leave.
pub(crate) fn start(lines: mpsc::Sender<Typed>) {
    thread::spawn(move || read_plain(lines));
}

/// Reads stdin lines as they come. Bytes that are not UTF-8 are replaced rather than
/// rejected: a typo in an encoding should not end the session.
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
                if lines.blocking_send(Typed { line, prompt: None }).is_err() {
                    break;
                }
            }
        }
    }
}
