//! A password typed on the terminal, without echo.
//!
//! Why not `rpassword::prompt_password`: it prints the prompt first and turns echo off after,
//! so keys typed (or pasted) as soon as the prompt shows can still be echoed — a password in
//! the scrollback. Here echo is off before the prompt is written, and restored on every path.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
};

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, Termios};

/// Writes `prompt` to the controlling terminal with echo already off, reads one line from it,
/// and returns the line without its ending. Reading the terminal rather than stdin leaves piped
/// stdin to the caller.
pub fn prompt_password(prompt: &str) -> io::Result<String> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    // The Enter that ends the password still moves to the next line.
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet)?;
    let restore = Restore {
        tty: &tty,
        saved: Some(saved),
    };
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line)?;
    drop(restore);
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Puts the terminal's settings back however the read ends (an error, or a panic).
struct Restore<'a> {
    tty: &'a File,
    saved: Option<Termios>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tcsetattr(self.tty, SetArg::TCSANOW, &saved);
        }
    }
}
