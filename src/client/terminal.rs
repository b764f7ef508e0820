//! The terminal: a rustyline editor on its own thread, and [`Output`] for session lines.
//!
//! rustyline's `readline` blocks, so it runs on a plain thread that only ships typed lines to
//! the session. While it owns the terminal, session lines go through its external printer so
//! that they appear above the prompt without clobbering what is being typed.

use std::{
    io::{self, Write},
    thread,
    time::Duration,
};

use rustyline::{error::ReadlineError, DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

use super::input::quits;

const PROMPT: &str = "> ";

/// The editor thread, to be stopped with [`stop_editor`] once the session is over.
pub(crate) type EditorThread = thread::JoinHandle<DefaultEditor>;

/// Starts reading typed lines into `lines` with rustyline. Returns where session lines go and,
/// when rustyline drives the terminal in raw mode, the editor thread to stop at the end.
pub(crate) fn start(
    lines: mpsc::Sender<String>,
) -> Result<(Output, Option<EditorThread>), ReadlineError> {
    let mut editor = DefaultEditor::new()?;
    // Fails on terminals rustyline does not drive (TERM=dumb); it then reads plain lines
    // without raw mode, and plain output is right.
    let printer = editor.create_external_printer().ok();
    let reading = thread::spawn(move || read_terminal(editor, lines));
    Ok(match printer {
        Some(printer) => (Output::Terminal(Box::new(printer)), Some(reading)),
        None => (Output::Plain, None),
    })
}

/// Reads lines with rustyline until the user leaves or the session interrupts us. The editor
/// is handed back rather than dropped so its SIGINT handler stays installed until the session
/// is done interrupting (see [`stop_editor`]).
///
/// Known rustyline 17.0.2 limitation (kkawakam/rustyline#976): once an external printer exists,
/// keys that arrive in one read (a paste, a scripted pty) are handled one per later arrival, so
/// the tail of a paste may wait for the next keystroke. Typed input is unaffected.
fn read_terminal(mut editor: DefaultEditor, lines: mpsc::Sender<String>) -> DefaultEditor {
    // Ctrl-C, Ctrl-D, an error, or the session telling us it is over: all end the loop, and
    // the session takes the end of input to mean leave.
    while let Ok(line) = editor.readline(PROMPT) {
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        // Stop prompting at once: the session is only waiting for `bye` now.
        let quit = quits(&line);
        if lines.blocking_send(line).is_err() || quit {
            break;
        }
    }
    editor
}

/// Makes the editor thread's `readline` return and waits for it, so the terminal leaves raw
/// mode before we exit. rustyline has no way to cancel a pending `readline` except the SIGINT
/// its own handler turns into `Interrupted`; that handler is installed whenever an external
/// printer could be made, which is the only case this is called for.
pub(crate) fn stop_editor(editor_thread: EditorThread) {
    // The last line printed may still sit in rustyline's one-slot print queue, and a pending
    // interrupt wins over it: give the editor thread a moment to show it.
    thread::sleep(Duration::from_millis(50));
    #[cfg(unix)]
    {
        // SAFETY: `kill` has no memory-safety preconditions; SIGINT goes to rustyline's handler,
        // which stays installed until the editor is dropped below.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGINT);
        }
        let _ = editor_thread.join();
    }
    #[cfg(not(unix))]
    drop(editor_thread); // no portable way to interrupt it; exiting the process ends it
}

/// Where session lines go: through rustyline's external printer when it owns the terminal, so
/// incoming lines appear above the prompt without clobbering what is being typed.
pub(crate) enum Output {
    Plain,
    Terminal(Box<dyn ExternalPrinter>),
}

impl Output {
    pub(crate) fn line(&mut self, line: &str) {
        if let Output::Terminal(printer) = self {
            // Outside raw mode rustyline writes the message as is: it needs its own newline.
            if printer.print(format!("{line}\n")).is_ok() {
                return;
            }
        }
        print_plain(line);
    }
}

/// One line, flushed at once: a reader on the other end of a pipe must see each event as it
/// happens. A closed stdout is not worth dying for; the session goes on.
pub(crate) fn print_plain(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
