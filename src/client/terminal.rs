//! The terminal: a rustyline editor on its own thread, and [`Output`] for session lines.
//!
//! rustyline's `readline` blocks, so it runs on a plain thread that only ships typed lines to
//! the session. While it owns the terminal, session lines go through its external printer so
//! that they appear above the prompt without clobbering what is being typed. When the session
//! is over, [`Output::close`] makes a pending `readline` return, so the terminal is out of raw
//! mode before the process exits.

use std::{
    convert::Infallible,
    io::{self, Write},
    sync::mpsc::{self as std_mpsc, RecvTimeoutError, TryRecvError},
    thread,
    time::{Duration, Instant},
};

use rustyline::{error::ReadlineError, DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

use super::input::quits;

const PROMPT: &str = "> ";

/// How long a line handed to the external printer may take to reach the screen (see
/// [`Terminal::stop_editor`]).
const PRINT_GRACE: Duration = Duration::from_millis(50);
/// How long to wait for the editor thread after each interrupt, and how many interrupts to
/// send before leaving it behind.
const INTERRUPT_WAIT: Duration = Duration::from_millis(100);
const INTERRUPT_ATTEMPTS: u32 = 20;

/// Where session lines go: through rustyline's external printer when it owns the terminal, so
/// incoming lines appear above the prompt without clobbering what is being typed.
pub(crate) enum Output {
    Plain,
    Terminal(Box<Terminal>),
}

/// rustyline driving the terminal: its printer, and the thread reading lines with it.
pub(crate) struct Terminal {
    printer: Box<dyn ExternalPrinter>,
    /// When a line was last handed to the printer: one that recent may be queued, not shown.
    last_print: Option<Instant>,
    editor: thread::JoinHandle<()>,
    /// Never receives: it disconnects once the editor thread is done with the terminal.
    editor_done: std_mpsc::Receiver<Infallible>,
    #[cfg(unix)]
    _sigint: SigintIgnored,
}

/// Starts reading typed lines into `lines` with rustyline, and returns where session lines go.
pub(crate) fn start(lines: mpsc::Sender<String>) -> Result<Output, ReadlineError> {
    // Before the editor exists, so no SIGINT can find the process without a handler; see
    // `stop_editor` for why it matters.
    #[cfg(unix)]
    let sigint = SigintIgnored::new()?;
    let mut editor = DefaultEditor::new()?;
    // Fails on terminals rustyline does not drive (TERM=dumb); it then reads plain lines
    // without raw mode, and plain output is right.
    let printer = editor.create_external_printer().ok();
    let (done, editor_done) = std_mpsc::channel::<Infallible>();
    let editor = thread::spawn(move || read_terminal(editor, lines, done));
    Ok(match printer {
        Some(printer) => Output::Terminal(Box::new(Terminal {
            printer: Box::new(printer),
            last_print: None,
            editor,
            editor_done,
            #[cfg(unix)]
            _sigint: sigint,
        })),
        None => Output::Plain,
    })
}

impl Output {
    pub(crate) fn line(&mut self, line: &str) {
        if let Output::Terminal(terminal) = self {
            // Outside raw mode rustyline writes the message as is: it needs its own newline.
            if terminal.printer.print(format!("{line}\n")).is_ok() {
                terminal.last_print = Some(Instant::now());
                return;
            }
        }
        print_plain(line);
    }

    /// Gives the terminal back: from here on, lines are printed plainly.
    pub(crate) fn close(self) {
        if let Output::Terminal(terminal) = self {
            terminal.stop_editor();
        }
    }
}

impl Terminal {
    /// Makes the editor thread's `readline` return, if it has not already, and waits for the
    /// thread, so the terminal is out of raw mode before we exit.
    ///
    /// rustyline (19.0) has no call to cancel a pending `readline` from another thread; the one
    /// thing that makes it return, short of a key, is a SIGINT caught by its own handler, which
    /// it turns into `Interrupted`. So:
    ///
    /// - When the editor thread has already finished (the user quit, or pressed Ctrl-D or
    ///   Ctrl-C), there is nothing to interrupt.
    /// - rustyline installs that handler only while a `readline` is in progress (17 kept it for
    ///   the editor's lifetime). A SIGINT arriving between two calls would find the default
    ///   action and kill the client, hence [`SigintIgnored`] for as long as the editor runs.
    /// - For the same reason, an interrupt that lands while the thread is entering `readline`,
    ///   before rustyline's handler is in place, is ignored: we send another if the thread has
    ///   not finished shortly after.
    /// - The printer queues one line for the editor thread to show, and a pending interrupt is
    ///   served before it. rustyline offers no way to know that the queue is empty, so a line
    ///   printed in the last [`PRINT_GRACE`] (typically the one just before the server's `bye`)
    ///   is given that long to reach the screen before the first interrupt.
    fn stop_editor(self) {
        if self.editor_finished(Duration::ZERO) {
            let _ = self.editor.join();
            return;
        }
        #[cfg(unix)]
        {
            if let Some(since) = self.last_print.map(|at| at.elapsed()) {
                thread::sleep(PRINT_GRACE.saturating_sub(since));
            }
            for _ in 0..INTERRUPT_ATTEMPTS {
                // SAFETY: `kill` has no memory-safety preconditions. SIGINT goes to rustyline's
                // handler while a `readline` is pending and is ignored otherwise.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGINT);
                }
                if self.editor_finished(INTERRUPT_WAIT) {
                    let _ = self.editor.join();
                    return;
                }
            }
        }
        // No way to interrupt it (or it would not stop): exiting the process ends the thread.
    }

    /// Whether the editor thread is done, waiting up to `wait` for it.
    fn editor_finished(&self, wait: Duration) -> bool {
        if wait.is_zero() {
            return matches!(self.editor_done.try_recv(), Err(TryRecvError::Disconnected));
        }
        matches!(
            self.editor_done.recv_timeout(wait),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}

/// Reads lines with rustyline until the user leaves or the session interrupts us; `done` is
/// dropped on the way out, which is how [`Terminal::stop_editor`] learns the thread is over.
fn read_terminal(
    mut editor: DefaultEditor,
    lines: mpsc::Sender<String>,
    done: std_mpsc::Sender<Infallible>,
) {
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
    // The editor goes first: with it goes the printer's queue, so a print waiting on a
    // `readline` that will never come fails (and is printed plainly) instead of blocking.
    drop(editor);
    drop(done);
}

/// SIGINT ignored while it exists, then put back as it was.
///
/// rustyline catches SIGINT only inside `readline`, saving and restoring whatever was there
/// before; with this underneath, a SIGINT outside `readline` (a late interrupt from
/// [`Terminal::stop_editor`], or Ctrl-C while the terminal is in normal mode waiting for `bye`)
/// is dropped instead of killing the client, as it was with rustyline 17.
#[cfg(unix)]
struct SigintIgnored {
    previous: libc::sigaction,
}

#[cfg(unix)]
impl SigintIgnored {
    fn new() -> io::Result<SigintIgnored> {
        // SAFETY: an all-zero `sigaction` is a valid value (no flags, empty mask), and
        // `sigaction` only reads `ignore` and writes `previous`, both live for the call.
        unsafe {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, &ignore, &mut previous) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SigintIgnored { previous })
        }
    }
}

#[cfg(unix)]
impl Drop for SigintIgnored {
    fn drop(&mut self) {
        // SAFETY: `previous` is the disposition `sigaction` gave us; restoring it is sound.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.previous, std::ptr::null_mut());
        }
    }
}

/// One line, flushed at once: a reader on the other end of a pipe must see each event as it
/// happens. A closed stdout is not worth dying for; the session goes on.
pub(crate) fn print_plain(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
