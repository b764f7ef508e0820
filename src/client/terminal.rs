//! The terminal: a rustyline editor on its own thread, and [`Output`] for session lines.
//!
//! rustyline's `readline` blocks, so it runs on a plain thread that only ships typed lines to
//! the session. While it owns the terminal, session lines go through its external printer so
//! that they appear above the prompt without clobbering what is being typed. When the session
//! is over, [`Output::close`] makes a pending `readline` return, so the terminal is out of raw
//! mode before the process exits.
//!
//! The prompt shows where plain lines go (`bob> `). Two rules keep it true:
//!
//! - After each line, the editor waits for the session to say the line has taken effect
//!   ([`Output::ready`], with the prompt that now holds) before prompting again. So a `/to`
//!   is answered before the next prompt is drawn, and keys typed meanwhile (the rest of a
//!   paste) are read at the right prompt.
//! - When an event changes the target while a line is being typed ([`Output::set_prompt`]),
//!   rustyline (19.0) has no call to change the prompt of a pending `readline`, so it is
//!   interrupted (the SIGINT that [`Terminal::stop_editor`] also uses) and started again with
//!   the new prompt and the text typed so far, which [`Tracker`] keeps. Should the prompt
//!   still be out of date when the line is entered, the session does not send a plain line
//!   typed at it (see `chat`).
use std::{
    convert::Infallible,
    io::{self, Write},
    sync::{
        mpsc::{self as std_mpsc, RecvTimeoutError, TryRecvError},
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use rustyline::{
    completion::Completer, error::ReadlineError, highlight::Highlighter, hint::Hinter,
    history::DefaultHistory, validate::Validator, Cmd, ConditionalEventHandler, Context, Editor,
    Event, EventContext, EventHandler, ExternalPrinter, Helper, KeyEvent, Movement, RepeatCount,
};
use tokio::sync::mpsc;

use super::{
    chat::Shown,
    input::{quits, secrets_for},
    render::{local_time_now, stamped},
    Secret, Typed,
};

/// The editor, with the helper that remembers the line being typed.
type LineEditor = Editor<Tracker, DefaultHistory>;

/// How long a line handed to the external printer may take to reach the screen (see
/// [`Terminal::stop_editor`]).
const PRINT_GRACE: Duration = Duration::from_millis(50);
/// How long to wait for the editor thread after each interrupt, and how many interrupts to
/// send before leaving it behind.
const INTERRUPT_WAIT: Duration = Duration::from_millis(100);
const INTERRUPT_ATTEMPTS: u32 = 20;

/// Where session lines go, and whether incoming ones get the time they arrived.
pub(crate) struct Output {
    sink: Sink,
    /// On a terminal a person reads lines as they come and may look back at them later, so
    /// incoming lines carry the local time; piped output is for programs and stays as it was.
    stamps: bool,
}

/// Through rustyline's external printer when it owns the terminal, so incoming lines appear
/// above the prompt without clobbering what is being typed; else plainly to stdout.
enum Sink {
    Plain,
    Terminal(Box<Terminal>),
}

/// rustyline driving the terminal: its printer, and the thread reading lines with it.
pub(crate) struct Terminal {
    printer: Box<dyn ExternalPrinter>,
    /// When a line was last handed to the printer: one that recent may be queued, not shown.
    last_print: Option<Instant>,
    prompts: Arc<Prompts>,
    editor: thread::JoinHandle<()>,
    /// Never receives: it disconnects once the editor thread is done with the terminal.
    editor_done: std_mpsc::Receiver<Infallible>,
    #[cfg(unix)]
    _sigint: SigintIgnored,
}

/// What the session and the editor thread share about the prompt.
struct Prompts {
    state: Mutex<PromptState>,
    changed: Condvar,
}

struct PromptState {
    /// The prompt the next `readline` shows.
    prompt: String,
    /// A line was sent and the session has not yet said it took effect.
    waiting: bool,
    /// The prompt of the `readline` in progress, if one is.
    shown: Option<String>,
    /// The `readline` in progress was interrupted to show a new prompt.
    repaint: bool,
    /// The session is over: no more prompts.
    closing: bool,
    /// [`Tracker`] has interrupted the `readline` in progress for a new prompt.
    kicked: bool,
}

impl Prompts {
    fn lock(&self) -> MutexGuard<'_, PromptState> {
        // Nothing here can be left half-updated by a panic: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The prompt for the next `readline`, once the last line has taken effect; `None` when
    /// the session is over.
    fn next(&self) -> Option<String> {
        let mut state = self.lock();
        while state.waiting && !state.closing {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closing {
            return None;
        }
        state.shown = Some(state.prompt.clone());
        state.repaint = false;
        state.kicked = false;
        Some(state.prompt.clone())
    }

    /// A `readline` returned; whether it was interrupted for a new prompt.
    fn finished(&self) -> bool {
        let mut state = self.lock();
        state.shown = None;
        std::mem::take(&mut state.repaint) && !state.closing
    }

    fn sent_line(&self) {
        self.lock().waiting = true;
    }

    fn ready(&self, prompt: &str) {
        let mut state = self.lock();
        prompt.clone_into(&mut state.prompt);
        state.waiting = false;
        self.changed.notify_all();
    }

    fn set(&self, prompt: &str) {
        let mut state = self.lock();
        prompt.clone_into(&mut state.prompt);
        let stale = state.shown.as_deref().is_some_and(|shown| shown != prompt);
        if stale && !state.repaint {
            state.repaint = true;
            // If this lands before rustyline's handler is in place (the `readline` is just
            // starting), SigintIgnored drops it; `check_from_editor` then sends another.
            #[cfg(unix)]
            interrupt_editor();
        }
    }

    /// Called on the editor thread from inside `readline`, where rustyline's SIGINT handler
    /// is sure to be in place: if the prompt changed since this `readline` began (and so the
    /// interrupt from [`Prompts::set`] may have been lost), interrupts it from here. A signal a
    /// thread sends itself is handled before `kill` returns, so it lands in this `readline`.
    fn check_from_editor(&self) {
        let mut state = self.lock();
        let stale = state
            .shown
            .as_deref()
            .is_some_and(|shown| shown != state.prompt);
        if stale && !state.kicked && !state.closing {
            state.kicked = true;
            state.repaint = true;
            #[cfg(unix)]
            interrupt_editor();
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }
}

/// Starts reading typed lines into `lines` with rustyline, and returns where session lines go.
pub(crate) fn start(lines: mpsc::Sender<Typed>, prompt: &str) -> Result<Output, ReadlineError> {
    // Before the editor exists, so no SIGINT can find the process without a handler; see
    // `stop_editor` for why it matters.
    #[cfg(unix)]
    let sigint = SigintIgnored::new()?;
    let prompts = Arc::new(Prompts {
        state: Mutex::new(PromptState {
            prompt: prompt.to_owned(),
            waiting: false,
            shown: None,
            repaint: false,
            closing: false,
            kicked: false,
        }),
        changed: Condvar::new(),
    });
    let mut editor = LineEditor::new()?;
    editor.set_helper(Some(Tracker {
        line: Mutex::default(),
        prompts: prompts.clone(),
    }));
    // Ctrl-C clears a half-typed line, as in a shell, and leaves on an empty one.
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ClearOrQuit)),
    );
    // Fails on terminals rustyline does not drive (TERM=dumb); it then reads plain lines
    // without raw mode, and plain output is right.
    let printer = editor.create_external_printer().ok();
    let (done, editor_done) = std_mpsc::channel::<Infallible>();
    let editor = thread::spawn({
        let prompts = prompts.clone();
        move || read_terminal(editor, lines, &prompts, done)
    });
    let sink = match printer {
        Some(printer) => Sink::Terminal(Box::new(Terminal {
            printer: Box::new(printer),
            last_print: None,
            prompts,
            editor,
            editor_done,
            #[cfg(unix)]
            _sigint: sigint,
        })),
        None => Sink::Plain,
    };
    Ok(Output { sink, stamps: true })
}

impl Output {
    /// Plain lines on stdout, as they are: for piped mode.
    pub(crate) fn plain() -> Output {
        Output {
            sink: Sink::Plain,
            stamps: false,
        }
    }

    pub(crate) fn line(&mut self, line: &str) {
        if let Sink::Terminal(terminal) = &mut self.sink {
            // Outside raw mode rustyline writes the message as is: it needs its own newline.
            if terminal.printer.print(format!("{line}\n")).is_ok() {
                terminal.last_print = Some(Instant::now());
                return;
            }
        }
        print_plain(line);
    }

    /// A line of the session, stamped with the time if it came in unprompted.
    pub(crate) fn shown(&mut self, line: &Shown) {
        if line.incoming && self.stamps {
            self.line(&stamped(local_time_now(), &line.text));
        } else {
            self.line(&line.text);
        }
    }

    /// The last typed line has taken effect; the next prompt is `prompt`.
    pub(crate) fn ready(&mut self, prompt: &str) {
        if let Sink::Terminal(terminal) = &self.sink {
            terminal.prompts.ready(prompt);
        }
    }

    /// Something other than a typed line changed the prompt: show it now.
    pub(crate) fn set_prompt(&mut self, prompt: &str) {
        if let Sink::Terminal(terminal) = &self.sink {
            terminal.prompts.set(prompt);
        }
    }

    /// Gives the terminal back: from here on, lines are printed plainly.
    pub(crate) fn close(self) {
        if let Sink::Terminal(terminal) = self.sink {
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
        // An editor waiting for its next prompt is let go at once.
        self.prompts.close();
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
                interrupt_editor();
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

/// Makes a pending `readline` return `Interrupted`.
#[cfg(unix)]
fn interrupt_editor() {
    // SAFETY: `kill` has no memory-safety preconditions. SIGINT goes to rustyline's handler
    // while a `readline` is pending and is ignored otherwise (see `SigintIgnored`).
    unsafe {
        libc::kill(libc::getpid(), libc::SIGINT);
    }
}

/// Reads lines with rustyline until the user leaves or the session interrupts us; `done` is
/// dropped on the way out, which is how [`Terminal::stop_editor`] learns the thread is over.
fn read_terminal(
    mut editor: LineEditor,
    lines: mpsc::Sender<Typed>,
    prompts: &Prompts,
    done: std_mpsc::Sender<Infallible>,
) {
    // The text to start the next `readline` with, and the cursor's place in it: after a
    // repaint, what had been typed so far.
    let mut initial = (String::new(), 0);
    // Ctrl-C on an empty line, Ctrl-D, an error, or the session telling us it is over: all end
    // the loop, and the session takes the end of input to mean leave.
    while let Some(prompt) = prompts.next() {
        let (text, cursor) = std::mem::take(&mut initial);
        let (left, right) = text.split_at(cursor);
        let result = editor.readline_with_initial(&prompt, (left, right));
        let repaint = prompts.finished();
        match result {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                // Stop prompting at once: the session is only waiting for `bye` now.
                let quit = quits(&line);
                // Between two `readline`s the terminal is ours: passwords are asked for here,
                // without echo, and never reach the line or its history.
                let secrets = ask_secrets(&line);
                prompts.sent_line();
                let typed = Typed {
                    line,
                    prompt: Some(prompt),
                    secrets,
                };
                if lines.blocking_send(typed).is_err() || quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) if repaint => {
                initial = editor.helper().map(Tracker::take).unwrap_or_default();
                let columns = editor
                    .dimensions()
                    .map_or(0, |(columns, _)| usize::from(columns));
                erase_line(&prompt, &initial.0, columns);
            }
            Err(_) => break,
        }
    }
    // The editor goes first: with it goes the printer's queue, so a print waiting on a
    // `readline` that will never come fails (and is printed plainly) instead of blocking.
    drop(editor);
    drop(done);
}

/// The passwords `line` needs (`/register`, `/passwd`), read from the terminal without echo;
/// none if one cannot be read (the session then says nothing was sent).
fn ask_secrets(line: &str) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for prompt in secrets_for(line) {
        match super::secret::prompt_password(prompt) {
            Ok(secret) => secrets.push(Secret(secret)),
            Err(_) => return Vec::new(),
        }
    }
    secrets
}

/// An interrupted `readline` leaves its line on the screen and moves to the next; the line is
/// about to be drawn again with a new prompt, so the old one is erased, when it is sure to
/// fill one row only (ASCII, shorter than the terminal is wide). A longer one is left: erasing
/// rows that are not there would eat earlier output.
fn erase_line(prompt: &str, text: &str, columns: usize) {
    let one_row = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b));
    if one_row(prompt) && one_row(text) && prompt.len() + text.len() < columns {
        let mut stdout = io::stdout().lock();
        // Up one row, then clear it.
        let _ = stdout
            .write_all(b"\x1b[1A\r\x1b[2K")
            .and_then(|()| stdout.flush());
    }
}

/// Remembers the line being typed, which rustyline shows its hinter after every edit, so a
/// `readline` interrupted for a new prompt can be started again with it. Being called from
/// inside `readline` (first as it starts), it is also where a lost interrupt is made good.
struct Tracker {
    line: Mutex<(String, usize)>,
    prompts: Arc<Prompts>,
}

impl Tracker {
    /// The line and cursor last seen; the cursor is a byte offset on a character boundary.
    fn take(&self) -> (String, usize) {
        let (line, cursor) =
            std::mem::take(&mut *self.line.lock().unwrap_or_else(PoisonError::into_inner));
        let cursor = if line.is_char_boundary(cursor) {
            cursor
        } else {
            line.len()
        };
        (line, cursor)
    }
}

impl Hinter for Tracker {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _: &Context<'_>) -> Option<String> {
        let mut seen = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        line.clone_into(&mut seen.0);
        seen.1 = pos;
        drop(seen);
        self.prompts.check_from_editor();
        None
    }
}

impl Completer for Tracker {
    type Candidate = String;
}
impl Highlighter for Tracker {}
impl Validator for Tracker {}
impl Helper for Tracker {}

/// Ctrl-C: on a half-typed line, clears it (into the kill ring, so Ctrl-Y brings it back), as a
/// shell does; on an empty line, leaves, as before.
struct ClearOrQuit;

impl ConditionalEventHandler for ClearOrQuit {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext<'_>) -> Option<Cmd> {
        if ctx.line().is_empty() {
            Some(Cmd::Interrupt)
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
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
