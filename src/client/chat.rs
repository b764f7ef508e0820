//! The session's state: where plain lines go, which rooms we are in, and which of the
//! server's answers we are waiting for.
//!
//! Pure: [`Chat::input`] and [`Chat::event`] turn what the user typed and what the server sent
//! into lines to show and bytes to send, so every rule about targets is tested here without a
//! socket or a terminal. The network loop in `net` only carries the results.
//!
//! The rules about the target, and why:
//!
//! - Until the user commits to a target, it follows the last online notice, as the original
//!   program did: in a two-person chat, whoever logged in is whom you want to talk to.
//! - Committing is sending the target a plain line, or choosing it with `/to`. From then on
//!   only `/to` changes it, so a message is never redirected to someone who just logged in.
//! - When the target goes away (logs out, or the server says it is not there; a room we left),
//!   the target is cleared and the user told. It is not re-set when someone logs in under the
//!   same name: that may be someone else, and must not receive the next plain line.
//! - `/to NAME` asks the server (`who`) rather than trusting our own list of who is online:
//!   with presence `none` the server sends no login notices, so only the server knows. The
//!   answer is also the name's own spelling. `/to #ROOM` likewise asks `names`, which gives the
//!   room's spelling and tells whether we are in it. Until the answer comes, no further input
//!   is taken, so a line typed after `/to carol` goes to carol.
//! - A plain line is sent only to the target its prompt showed: if an event changed the target
//!   while the line was being typed, nothing is sent and the user is told.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::Secret;
use super::{
    input::{parse_input, Action, Target, HELP},
    render::{away_heading, render_event, render_joined, sanitize},
};
use crate::{
    accounts::password_problem,
    codec::{is_valid_name, ErrorKind, Event, Password, Request, Verb},
};

/// Lines of a room's history shown on `/join`.
const JOIN_HISTORY_LINES: u64 = 20;

/// Shown whenever the target is cleared.
const NO_TARGET: &str = "* plain lines go to no one now: choose with /to NAME or /to #ROOM";

/// What an answer to one of our `who` or `names` requests is for. The server answers a
/// client's requests in order, so the answers match these queues front first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    /// The user asked (`/who`, `/names`): show the list.
    Show,
    /// `/to`: make this the target if the answer says it is there. Holds the name as typed.
    To(String),
    /// After a reconnect: is the user we were talking to still online?
    Recheck,
    /// A `/to` whose answer took too long; the answer is dropped when it comes.
    Dropped,
}

/// One line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    pub(crate) text: String,
    /// Whether it came from the server unprompted (a message, someone arriving or leaving):
    /// the lines a terminal stamps with the time they arrived. Answers to our own commands
    /// and the client's own notes follow what was typed, so they need no time.
    pub(crate) incoming: bool,
}

/// What to do after an input or an event.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub(crate) show: Vec<Shown>,
    /// Encoded requests, one line each, in order.
    pub(crate) send: BytesMut,
    /// The user asked to leave: `exit` is in `send`.
    pub(crate) quit: bool,
}

impl Step {
    fn note(&mut self, text: impl Into<String>) {
        self.show.push(Shown {
            text: sanitize(text.into()),
            incoming: false,
        });
    }

    fn incoming(&mut self, text: String) {
        self.show.push(Shown {
            text,
            incoming: true,
        });
    }

    fn send(&mut self, request: Request<'_>) {
        request.encode(&mut self.send);
    }
}

/// The session state; see the module documentation for the rules it keeps.
#[derive(Debug, Clone)]
pub(crate) struct Chat {
    /// Our own name, as the server confirmed it.
    name: String,
    target: Option<Target>,
    /// Whether the user has committed to a target (see the module documentation).
    settled: bool,
    /// The rooms we are in, as the server spells them: rejoined after a reconnect.
    rooms: Vec<String>,
    /// The room of an `ok|join` just received: the `members` line right after it is the
    /// join's, not an answer to `names`.
    joining: Option<String>,
    who: VecDeque<Asked>,
    names: VecDeque<Asked>,
    /// The user asked to leave: however the connection ends now, it is not to be restored.
    quitting: bool,
    /// `missed` lines received, shown under their heading once `end|missed` says how many.
    missed: Vec<String>,
    /// Rooms whose last lines we asked for on our own after a join, oldest first: their
    /// `end|history` and a `no-history` are not worth a line.
    join_history: VecDeque<String>,
    /// The server said it keeps no history: joins stop asking.
    no_history: bool,
    /// Rooms rejoined after a reconnect: their lines were seen already, none is asked for.
    rejoining: Vec<String>,
}

impl Chat {
    pub(crate) fn new(name: &str) -> Chat {
        Chat {
            name: name.to_owned(),
            target: None,
            settled: false,
            rooms: Vec::new(),
            joining: None,
            who: VecDeque::new(),
            names: VecDeque::new(),
            quitting: false,
            missed: Vec::new(),
            join_history: VecDeque::new(),
            no_history: false,
            rejoining: Vec::new(),
        }
    }

    /// Whether the user asked to leave (and `exit` was sent).
    pub(crate) fn quitting(&self) -> bool {
        self.quitting
    }

    /// Where a plain line would go now.
    #[cfg(test)]
    pub(crate) fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The prompt that shows the target: `bob> `, `#rust> `, or `> ` when there is none.
    pub(crate) fn prompt(&self) -> String {
        match &self.target {
            Some(target) => format!("{target}> "),
            None => "> ".to_owned(),
        }
    }

    /// Whether a `/to` is waiting for the server's answer; input waits with it.
    pub(crate) fn awaiting(&self) -> bool {
        let to = |asked: &Asked| matches!(asked, Asked::To(_));
        self.who.iter().any(to) || self.names.iter().any(to)
    }

    /// Gives up on the `/to` being waited for; its answer, if it comes, is dropped.
    pub(crate) fn abandon_lookups(&mut self) -> Step {
        let mut step = Step::default();
        for asked in self.who.iter_mut().chain(self.names.iter_mut()) {
            if let Asked::To(name) = asked {
                step.note(format!(
                    "! no answer from the server about {name}: where plain lines go is unchanged"
                ));
                *asked = Asked::Dropped;
            }
        }
        step
    }

    /// What the user typed (one line, or several from a paste), with the prompt it was typed
    /// at (`None` when there is no prompt, as in piped mode).
    pub(crate) fn input(&mut self, typed: &str, prompt: Option<&str>) -> Step {
        self.input_with(typed, prompt, &[])
    }

    /// [`Chat::input`], with the passwords that `/register` or `/passwd` asked for.
    pub(crate) fn input_with(
        &mut self,
        typed: &str,
        prompt: Option<&str>,
        secrets: &[Secret],
    ) -> Step {
        let mut step = Step::default();
        match parse_input(typed) {
            Action::Nothing => {}
            Action::Plain(texts) => self.plain(&texts, prompt, &mut step),
            Action::Send(requests) => {
                for request in requests {
                    match request {
                        Request::Who => self.who.push_back(Asked::Show),
                        Request::Names { .. } => self.names.push_back(Asked::Show),
                        _ => {}
                    }
                    step.send(request);
                }
            }
            Action::To(Target::User(name)) => {
                step.send(Request::Who);
                self.who.push_back(Asked::To(name));
            }
            Action::To(Target::Room(room)) => {
                step.send(Request::Names { room: &room });
                self.names.push_back(Asked::To(room));
            }
            Action::ShowTarget => match &self.target {
                Some(target) => step.note(format!("* plain lines go to {target}")),
                None => step.note(NO_TARGET),
            },
            Action::Help => HELP.iter().for_each(|line| step.note(*line)),
            Action::Quit => {
                step.send(Request::Exit);
                step.quit = true;
                self.quitting = true;
            }
            Action::Hint(hint) => step.note(hint),
            Action::Register => match secrets {
                [password, again] => {
                    if let Some(password) = new_password(password, again, &mut step) {
                        step.send(Request::Register {
                            name: &self.name,
                            password: Password(password),
                        });
                    }
                }
                _ => step.note("! no password was given: nothing was sent"),
            },
            Action::Passwd => match secrets {
                [old, new, again] => {
                    if let Some(new) = new_password(new, again, &mut step) {
                        step.send(Request::Passwd {
                            old: Password(&old.0),
                            new: Password(new),
                        });
                    }
                }
                _ => step.note("! no password was given: nothing was sent"),
            },
        }
        step
    }

    fn plain(&mut self, texts: &[&str], prompt: Option<&str>, step: &mut Step) {
        if prompt.is_some_and(|shown| shown != self.prompt()) {
            match &self.target {
                Some(target) => step.note(format!(
                    "! not sent: plain lines go to {target} now (press Up and Enter to send it there)"
                )),
                None => step.note(format!("! not sent: {}", &NO_TARGET[2..])),
            }
            return;
        }
        match &self.target {
            None => step.note("! no one to talk to yet: use /to NAME or /msg NAME TEXT"),
            Some(target) => {
                for &text in texts {
                    match target {
                        Target::User(to) => step.send(Request::Talk { to, text }),
                        Target::Room(room) => step.send(Request::Say { room, text }),
                    }
                }
                self.settled = true;
            }
        }
    }

    /// A server event (other than `bye`, which ends the session).
    pub(crate) fn event(&mut self, event: &Event<'_>) -> Step {
        let mut step = Step::default();
        let joining = self.joining.take();
        let show = |step: &mut Step| {
            if let Some(line) = render_event(event) {
                step.note(line);
            }
        };
        let incoming = |step: &mut Step| {
            if let Some(line) = render_event(event) {
                step.incoming(line);
            }
        };
        match event {
            Event::Ping => step.send(Request::Pong),
            Event::Online(name) => {
                incoming(&mut step);
                if !self.settled && is_valid_name(name) {
                    self.target = Some(Target::User((*name).to_owned()));
                }
            }
            Event::Offline(name) => {
                incoming(&mut step);
                self.user_gone(name, &mut step);
            }
            Event::Talk { .. }
            | Event::Say { .. }
            | Event::RoomJoined { .. }
            | Event::RoomLeft { .. } => incoming(&mut step),
            Event::Users(names) => match self.who.pop_front() {
                None | Some(Asked::Show) => show(&mut step),
                Some(Asked::Dropped) => {}
                Some(Asked::To(name)) => match find(names, &name) {
                    Some(found) => self.choose(Target::User(found.to_owned()), &mut step),
                    None => step.note(format!("! {name} is not online (/who lists who is)")),
                },
                Some(Asked::Recheck) => {
                    let gone = match &self.target {
                        Some(Target::User(name)) if find(names, name).is_none() => Some(name),
                        _ => None,
                    };
                    if let Some(name) = gone {
                        step.note(format!("* {name} is not online any more"));
                        self.clear_target(&mut step);
                    }
                }
            },
            Event::Joined(room) => {
                if is_valid_name(room) && !self.in_room(room) {
                    self.rooms.push((*room).to_owned());
                }
                self.joining = Some((*room).to_owned());
                let rejoined = self
                    .rejoining
                    .iter()
                    .position(|r| r.eq_ignore_ascii_case(room));
                match rejoined {
                    Some(at) => {
                        self.rejoining.swap_remove(at);
                    }
                    // The room's last lines, after its `members` line.
                    None if !self.no_history && is_valid_name(room) => {
                        let target = format!("#{room}");
                        step.send(Request::History {
                            target: &target,
                            count: JOIN_HISTORY_LINES,
                            before: None,
                        });
                        self.join_history.push_back(target);
                    }
                    None => {}
                }
            }
            // Shown together once the server says how many came.
            Event::Missed { .. } => {
                if let Some(line) = render_event(event) {
                    self.missed.push(line);
                }
            }
            Event::EndMissed { count } => {
                let count = (*count).max(self.missed.len() as u64);
                if count > 0 {
                    step.note(away_heading(count));
                }
                for line in self.missed.drain(..) {
                    step.note(line);
                }
            }
            Event::End {
                verb: Verb::History,
                target,
                count,
            } if self.is_join_history(target) => {
                self.join_history.pop_front();
                if *count > 0 {
                    show(&mut step);
                }
            }
            Event::Error(ErrorKind::NoHistory, target) if self.is_join_history(target) => {
                self.join_history.pop_front();
                self.no_history = true;
            }
            Event::Members { room, names }
                if joining
                    .as_deref()
                    .is_some_and(|joined| joined.eq_ignore_ascii_case(room)) =>
            {
                step.note(render_joined(room, names));
            }
            Event::Members { room, names } => match self.names.pop_front() {
                None | Some(Asked::Show) | Some(Asked::Recheck) => show(&mut step),
                Some(Asked::Dropped) => {}
                Some(Asked::To(_)) if find(names, &self.name).is_some() && is_valid_name(room) => {
                    self.choose(Target::Room((*room).to_owned()), &mut step)
                }
                Some(Asked::To(_)) => {
                    step.note(format!("! you are not in #{room}: /join {room} first"))
                }
            },
            Event::Left(room) => {
                show(&mut step);
                self.room_gone(room, &mut step);
            }
            Event::Error(kind, arg) => {
                show(&mut step);
                match kind {
                    ErrorKind::NoSuchRoom => {
                        self.names.pop_front();
                    }
                    ErrorKind::RateLimited if *arg == "who" => {
                        self.who.pop_front();
                    }
                    ErrorKind::RateLimited if *arg == "names" => {
                        self.names.pop_front();
                    }
                    ErrorKind::NoSuchUser => self.user_gone(arg, &mut step),
                    ErrorKind::NotInRoom => self.room_gone(arg, &mut step),
                    _ => {}
                }
            }
            _ => show(&mut step),
        }
        step
    }

    /// Whether `target` is the room whose history we asked for on our own, first in line.
    fn is_join_history(&self, target: &str) -> bool {
        self.join_history
            .front()
            .is_some_and(|asked| asked.eq_ignore_ascii_case(target))
    }

    /// The connection was lost: `missed` lines that came before it are shown now, under
    /// their heading, rather than lost (the server counts them as read).
    pub(crate) fn connection_lost(&mut self) -> Step {
        self.event(&Event::EndMissed { count: 0 })
    }

    /// Starts over on a new connection, logged in as `name`: what was asked on the old one
    /// will not be answered. Returns the requests that put us back where we were: a join for
    /// each room we were in, and a `who` to check that the user we talk to is still online.
    pub(crate) fn reconnected(&mut self, name: &str) -> BytesMut {
        self.name = name.to_owned();
        self.joining = None;
        self.who.clear();
        self.names.clear();
        self.join_history.clear();
        let mut step = Step::default();
        // Each `ok|join` puts its room back on the list.
        for room in std::mem::take(&mut self.rooms) {
            step.send(Request::Join { room: &room });
            self.rejoining.push(room);
        }
        if matches!(self.target, Some(Target::User(_))) {
            step.send(Request::Who);
            self.who.push_back(Asked::Recheck);
        }
        step.send
    }

    fn choose(&mut self, target: Target, step: &mut Step) {
        step.note(format!("* talking to {target}"));
        self.target = Some(target);
        self.settled = true;
    }

    fn clear_target(&mut self, step: &mut Step) {
        self.target = None;
        step.note(NO_TARGET);
    }

    /// `name` is not online (any more): if it was the target, it is not now.
    fn user_gone(&mut self, name: &str, step: &mut Step) {
        if self
            .target
            .as_ref()
            .is_some_and(|target| target.is(&Target::User(name.to_owned())))
        {
            self.clear_target(step);
        }
    }

    /// We are not in `room` (any more).
    fn room_gone(&mut self, room: &str, step: &mut Step) {
        self.rooms.retain(|ours| !ours.eq_ignore_ascii_case(room));
        if self
            .target
            .as_ref()
            .is_some_and(|target| target.is(&Target::Room(room.to_owned())))
        {
            self.clear_target(step);
        }
    }

    fn in_room(&self, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|ours| ours.eq_ignore_ascii_case(room))
    }

    #[cfg(test)]
    fn rooms(&self) -> &[String] {
        &self.rooms
    }
}

/// A new password typed twice: the password, if the two agree and it will do; otherwise why
/// not, noted in `step`.
fn new_password<'a>(password: &'a Secret, again: &Secret, step: &mut Step) -> Option<&'a str> {
    if password != again {
        step.note("! the two passwords differ: nothing was sent");
        return None;
    }
    if let Some(problem) = password_problem(&password.0) {
        step.note(format!("! {problem}: nothing was sent"));
        return None;
    }
    Some(&password.0)
}

/// `name` as the list spells it, if it is there (names match ignoring ASCII case) and valid.
fn find<'a>(names: &[&'a str], name: &str) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|listed| listed.eq_ignore_ascii_case(name) && is_valid_name(listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a step sends, one wire line each; every one must parse back as one request.
    fn sent(step: &Step) -> Vec<String> {
        let text = std::str::from_utf8(&step.send).expect("requests are UTF-8");
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for line in &lines {
            assert!(Request::parse(line.as_bytes()).is_ok(), "{line:?}");
        }
        lines
    }

    fn shown(step: &Step) -> Vec<&str> {
        step.show.iter().map(|line| line.text.as_str()).collect()
    }

    fn user(name: &str) -> Option<Target> {
        Some(Target::User(name.to_owned()))
    }

    fn room(name: &str) -> Option<Target> {
        Some(Target::Room(name.to_owned()))
    }

    /// Types `line` at the prompt the chat shows now, as the terminal does.
    fn type_line(chat: &mut Chat, line: &str) -> Step {
        let prompt = chat.prompt();
        chat.input(line, Some(&prompt))
    }

    /// The server's answer to our join of `room`: `ok|join`, then the members.
    fn join(chat: &mut Chat, room: &str) {
        chat.event(&Event::Joined(room));
        chat.event(&Event::Members {
            room,
            names: vec!["alice"],
        });
    }

    #[test]
    fn missed_messages_come_under_one_heading_with_their_times() {
        let mut chat = Chat::new("alice");
        for (id, text) in [(4, "hi"), (9, "are you there?")] {
            let missed = Event::Missed {
                id,
                time: "2026-12-02T12:03:07.123Z",
                from: "bob",
                text,
            };
            assert!(chat.event(&missed).show.is_empty(), "held for the heading");
        }
        let step = chat.event(&Event::EndMissed { count: 2 });
        let lines = shown(&step);
        assert_eq!(lines[0], "--- while you were away (2) ---");
        assert_eq!(lines.len(), 3);
        for (line, text) in lines[1..].iter().zip(["<bob> hi", "<bob> are you there?"]) {
            assert!(line.starts_with('[') && line.ends_with(text), "{line}");
            assert_eq!(&line[3..4], ":", "[HH:MM] {line}");
        }
        assert!(
            step.show.iter().all(|line| !line.incoming),
            "they carry their own times"
        );
        // Nothing missed: nothing said.
        assert!(chat.event(&Event::EndMissed { count: 0 }).show.is_empty());
    }

    #[test]
    fn missed_messages_are_shown_if_the_connection_drops_mid_replay() {
        let mut chat = Chat::new("alice");
        chat.event(&Event::Missed {
            id: 1,
            time: "2026-12-02T12:03:07.123Z",
            from: "bob",
            text: "first",
        });
        let step = chat.connection_lost();
        let lines = shown(&step);
        assert_eq!(lines[0], "--- while you were away (1) ---");
        assert!(lines[1].ends_with("<bob> first"), "{lines:?}");
        assert!(chat.connection_lost().show.is_empty(), "shown once");
    }

    #[test]
    fn a_message_to_someone_offline_is_queued() {
        let mut chat = Chat::new("alice");
        let step = chat.event(&Event::Queued("carol"));
        assert_eq!(shown(&step), ["* carol is offline; message queued"]);
    }

    #[test]
    fn joining_shows_the_rooms_last_lines_quietly() {
        let mut chat = Chat::new("alice");
        let step = chat.event(&Event::Joined("Rust"));
        assert_eq!(sent(&step), ["history|#Rust|20"]);
        chat.event(&Event::Members {
            room: "Rust",
            names: vec!["alice"],
        });
        let hist = chat.event(&Event::Hist {
            target: "#Rust",
            id: 3,
            time: "2026-12-02T12:03:07.123Z",
            from: "bob",
            text: "earlier",
        });
        assert!(shown(&hist)[0].ends_with("<bob> earlier"));
        let end = |count| Event::End {
            verb: Verb::History,
            target: "#Rust",
            count,
        };
        assert_eq!(
            shown(&chat.event(&end(1))),
            ["* 1 line of history with #Rust"]
        );
        // An empty room's history says nothing.
        sent(&chat.event(&Event::Joined("go")));
        assert!(chat
            .event(&Event::End {
                verb: Verb::History,
                target: "#go",
                count: 0,
            })
            .show
            .is_empty());
        // A server without history: silent, and not asked again.
        sent(&chat.event(&Event::Joined("c")));
        let none = chat.event(&Event::Error(ErrorKind::NoHistory, "#c"));
        assert!(none.show.is_empty());
        assert!(sent(&chat.event(&Event::Joined("d"))).is_empty());
        // The user's own /history still gets its answer shown.
        assert_eq!(
            shown(&chat.event(&Event::Error(ErrorKind::NoHistory, "#d"))),
            ["! this server keeps no history"]
        );
    }

    #[test]
    fn rooms_rejoined_after_a_reconnect_do_not_repeat_their_history() {
        let mut chat = Chat::new("alice");
        sent(&chat.event(&Event::Joined("Rust")));
        chat.event(&Event::End {
            verb: Verb::History,
            target: "#Rust",
            count: 0,
        });
        let rejoin = chat.reconnected("alice");
        assert!(std::str::from_utf8(&rejoin).is_ok_and(|t| t.contains("join|Rust")));
        assert!(sent(&chat.event(&Event::Joined("Rust"))).is_empty());
    }

    /// alice, talking to bob.
    fn talking_to_bob() -> Chat {
        let mut chat = Chat::new("alice");
        chat.event(&Event::Online("bob"));
        assert_eq!(sent(&type_line(&mut chat, "hi bob")), ["talk|bob|hi bob"]);
        chat
    }

    #[test]
    fn the_default_target_follows_online_notices_until_used() {
        let mut chat = Chat::new("alice");
        assert_eq!(chat.target(), None);
        assert_eq!(chat.prompt(), "> ");
        chat.event(&Event::Online("bob"));
        chat.event(&Event::Online("carol"));
        assert_eq!(chat.target(), user("carol").as_ref());
        assert_eq!(chat.prompt(), "carol> ");
        assert_eq!(sent(&type_line(&mut chat, "hi")), ["talk|carol|hi"]);
        // Used now: the next arrival does not take it.
        chat.event(&Event::Online("dave"));
        assert_eq!(chat.prompt(), "carol> ");
    }

    /// The case: alice talks to bob, carol logs in, alice's next line still goes to bob.
    #[test]
    fn a_login_never_takes_a_target_that_was_used() {
        let mut chat = talking_to_bob();
        let step = chat.event(&Event::Online("carol"));
        assert_eq!(shown(&step), ["* carol is online"]);
        assert!(step.show[0].incoming);
        assert_eq!(
            sent(&type_line(&mut chat, "still you?")),
            ["talk|bob|still you?"]
        );
    }

    #[test]
    fn a_chosen_target_sticks() {
        let mut chat = Chat::new("alice");
        chat.event(&Event::Online("bob"));
        assert_eq!(sent(&type_line(&mut chat, "/to carol")), ["who"]);
        chat.event(&Event::Users(vec!["alice", "bob", "carol"]));
        chat.event(&Event::Online("dave"));
        assert_eq!(chat.prompt(), "carol> ");
    }

    /// When the target logs out it is cleared and the user told; someone who then logs in
    /// under that name is not the same person and does not get the next plain line.
    #[test]
    fn the_target_logging_out_clears_it_for_good() {
        let mut chat = talking_to_bob();
        let step = chat.event(&Event::Offline("BOB"));
        assert_eq!(shown(&step), ["* BOB left", NO_TARGET]);
        assert_eq!(
            step.show
                .iter()
                .map(|line| line.incoming)
                .collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(chat.prompt(), "> ");
        chat.event(&Event::Online("bob"));
        assert_eq!(chat.target(), None);
        let step = type_line(&mut chat, "are you there?");
        assert!(sent(&step).is_empty());
        assert_eq!(
            shown(&step),
            ["! no one to talk to yet: use /to NAME or /msg NAME TEXT"]
        );
        // Someone else leaving changes nothing.
        let mut chat = talking_to_bob();
        chat.event(&Event::Offline("carol"));
        assert_eq!(chat.prompt(), "bob> ");
    }

    #[test]
    fn the_server_saying_the_target_is_gone_clears_it() {
        let mut chat = talking_to_bob();
        let step = chat.event(&Event::Error(ErrorKind::NoSuchUser, "Bob"));
        assert_eq!(shown(&step), ["! no such user: Bob", NO_TARGET]);
        assert_eq!(chat.target(), None);
        // A failed /msg to someone else leaves the target alone.
        let mut chat = talking_to_bob();
        chat.event(&Event::Error(ErrorKind::NoSuchUser, "carol"));
        assert_eq!(chat.target(), user("bob").as_ref());
    }

    /// A line typed while an event moved the target is not sent anywhere: its prompt showed
    /// another target than the one it would go to.
    #[test]
    fn a_line_typed_at_an_out_of_date_prompt_is_not_sent() {
        let mut chat = Chat::new("alice");
        chat.event(&Event::Online("bob"));
        chat.event(&Event::Online("carol"));
        let step = chat.input("for bob", Some("bob> "));
        assert!(sent(&step).is_empty());
        assert_eq!(
            shown(&step),
            ["! not sent: plain lines go to carol now (press Up and Enter to send it there)"]
        );
        let mut chat = talking_to_bob();
        chat.event(&Event::Offline("bob"));
        let step = chat.input("for bob", Some("bob> "));
        assert!(sent(&step).is_empty());
        assert_eq!(
            shown(&step),
            ["! not sent: plain lines go to no one now: choose with /to NAME or /to #ROOM"]
        );
        // Commands do not depend on the prompt; piped input has none to compare.
        assert_eq!(
            sent(&chat.input("/msg bob hi", Some("bob> "))),
            ["talk|bob|hi"]
        );
        chat.event(&Event::Online("dave"));
        let mut chat = Chat::new("alice");
        chat.event(&Event::Online("bob"));
        assert_eq!(sent(&chat.input("hi", None)), ["talk|bob|hi"]);
    }

    #[test]
    fn to_asks_the_server_whether_the_user_is_online() {
        let mut chat = Chat::new("alice");
        let step = type_line(&mut chat, "/to Carol");
        assert_eq!(sent(&step), ["who"]);
        assert!(step.show.is_empty());
        assert!(chat.awaiting());
        let step = chat.event(&Event::Users(vec!["alice", "carol"]));
        // The server's spelling.
        assert_eq!(shown(&step), ["* talking to carol"]);
        assert!(!chat.awaiting());
        assert_eq!(chat.prompt(), "carol> ");

        type_line(&mut chat, "/to dave");
        let step = chat.event(&Event::Users(vec!["alice", "carol"]));
        assert_eq!(shown(&step), ["! dave is not online (/who lists who is)"]);
        assert_eq!(chat.prompt(), "carol> ");
        assert!(!chat.awaiting());
    }

    /// Answers come in the order asked: a `/who` before a `/to` is shown, the next resolves.
    #[test]
    fn answers_are_matched_to_questions_in_order() {
        let mut chat = Chat::new("alice");
        assert_eq!(sent(&type_line(&mut chat, "/who")), ["who"]);
        type_line(&mut chat, "/to bob");
        let step = chat.event(&Event::Users(vec!["alice"]));
        assert_eq!(shown(&step), ["users: alice"]);
        assert!(!step.show[0].incoming);
        assert!(chat.awaiting());
        let step = chat.event(&Event::Users(vec!["alice", "bob"]));
        assert_eq!(shown(&step), ["* talking to bob"]);

        // A rate-limited `who` is an answer too.
        type_line(&mut chat, "/to carol");
        chat.event(&Event::Error(ErrorKind::RateLimited, "who"));
        assert!(!chat.awaiting());
        assert_eq!(chat.prompt(), "bob> ");
    }

    #[test]
    fn to_a_room_takes_the_rooms_spelling_and_needs_membership() {
        let mut chat = Chat::new("alice");
        assert_eq!(sent(&type_line(&mut chat, "/to #rust")), ["names|rust"]);
        assert!(chat.awaiting());
        let step = chat.event(&Event::Members {
            room: "Rust",
            names: vec!["ALICE", "bob"],
        });
        assert_eq!(shown(&step), ["* talking to #Rust"]);
        assert_eq!(chat.prompt(), "#Rust> ");
        assert_eq!(sent(&type_line(&mut chat, "hi all")), ["say|Rust|hi all"]);

        type_line(&mut chat, "/to #go");
        let step = chat.event(&Event::Members {
            room: "Go",
            names: vec!["bob"],
        });
        assert_eq!(shown(&step), ["! you are not in #Go: /join Go first"]);
        type_line(&mut chat, "/to #nope");
        let step = chat.event(&Event::Error(ErrorKind::NoSuchRoom, "nope"));
        assert_eq!(shown(&step), ["! there is no room #nope"]);
        assert!(!chat.awaiting());
        assert_eq!(chat.prompt(), "#Rust> ");
    }

    /// `members` answers both a join and `names`; the one right after `ok|join` is the join's.
    #[test]
    fn members_after_a_join_and_in_answer_to_names_read_differently() {
        let mut chat = Chat::new("alice");
        assert_eq!(sent(&type_line(&mut chat, "/join rust")), ["join|rust"]);
        assert!(chat.event(&Event::Joined("Rust")).show.is_empty());
        let members = Event::Members {
            room: "Rust",
            names: vec!["alice", "bob"],
        };
        assert_eq!(
            shown(&chat.event(&members)),
            ["* you joined #Rust (members: alice, bob)"]
        );
        assert_eq!(sent(&type_line(&mut chat, "/names #rust")), ["names|rust"]);
        assert_eq!(
            shown(&chat.event(&members)),
            ["* members of #Rust: alice, bob"]
        );
        // An answer to names that arrives while a join is under way is still the join's only
        // if it is the very next line.
        type_line(&mut chat, "/names go");
        chat.event(&Event::Joined("x"));
        chat.event(&Event::Ping);
        let step = chat.event(&Event::Members {
            room: "x",
            names: vec!["alice"],
        });
        assert_eq!(shown(&step), ["* members of #x: alice"]);
    }

    #[test]
    fn leaving_the_target_room_clears_it() {
        let mut chat = Chat::new("alice");
        type_line(&mut chat, "/join rust");
        join(&mut chat, "Rust");
        type_line(&mut chat, "/to #rust");
        chat.event(&Event::Members {
            room: "Rust",
            names: vec!["alice"],
        });
        assert_eq!(chat.rooms(), ["Rust"]);
        let step = chat.event(&Event::Left("Rust"));
        assert_eq!(shown(&step), ["* you left #Rust", NO_TARGET]);
        assert!(chat.rooms().is_empty());
        assert_eq!(chat.prompt(), "> ");

        // The server saying we are not in it does the same.
        let mut chat = Chat::new("alice");
        join(&mut chat, "Rust");
        type_line(&mut chat, "/to #rust");
        chat.event(&Event::Members {
            room: "Rust",
            names: vec!["alice"],
        });
        chat.event(&Event::Error(ErrorKind::NotInRoom, "rust"));
        assert_eq!(chat.target(), None);
        assert!(chat.rooms().is_empty());
    }

    #[test]
    fn a_reconnect_rejoins_the_rooms_and_rechecks_the_user() {
        let mut chat = talking_to_bob();
        for room in ["Rust", "go", "RUST", "bad|name"] {
            join(&mut chat, room);
        }
        type_line(&mut chat, "/to carol");
        let requests = chat.reconnected("alice");
        assert_eq!(&requests[..], b"join|Rust\njoin|go\nwho\n");
        // The old connection's questions are forgotten: this `users` is the recheck's.
        assert!(!chat.awaiting());
        let step = chat.event(&Event::Users(vec!["alice", "carol"]));
        assert_eq!(shown(&step), ["* bob is not online any more", NO_TARGET]);
        assert_eq!(chat.target(), None);

        let mut chat = talking_to_bob();
        chat.reconnected("alice");
        assert!(chat
            .event(&Event::Users(vec!["alice", "bob"]))
            .show
            .is_empty());
        assert_eq!(chat.target(), user("bob").as_ref());
        // A room target needs no check: the rejoin either works or says why.
        let mut chat = Chat::new("alice");
        join(&mut chat, "Rust");
        type_line(&mut chat, "/to #Rust");
        chat.event(&Event::Members {
            room: "Rust",
            names: vec!["alice"],
        });
        assert_eq!(&chat.reconnected("alice")[..], b"join|Rust\n");
        assert_eq!(chat.target(), room("Rust").as_ref());
    }

    #[test]
    fn an_unanswered_to_can_be_given_up() {
        let mut chat = Chat::new("alice");
        type_line(&mut chat, "/to bob");
        let step = chat.abandon_lookups();
        assert_eq!(
            shown(&step),
            ["! no answer from the server about bob: where plain lines go is unchanged"]
        );
        assert!(!chat.awaiting());
        // The late answer is dropped, not shown.
        assert!(chat.event(&Event::Users(vec!["bob"])).show.is_empty());
        assert_eq!(chat.target(), None);
    }

    #[test]
    fn a_paste_is_one_message_per_line_to_the_target() {
        let mut chat = talking_to_bob();
        let step = type_line(&mut chat, "hello\njoin|secret\r\n\n/quit");
        assert_eq!(
            sent(&step),
            ["talk|bob|hello", "talk|bob|join|secret", "talk|bob|/quit"]
        );
        assert!(!step.quit);
    }

    #[test]
    fn local_commands_and_pings() {
        let mut chat = Chat::new("alice");
        assert_eq!(sent(&chat.event(&Event::Ping)), ["pong"]);
        let step = type_line(&mut chat, "/to");
        assert_eq!(shown(&step), [NO_TARGET]);
        let mut chat = talking_to_bob();
        assert_eq!(
            shown(&type_line(&mut chat, "/to")),
            ["* plain lines go to bob"]
        );
        assert_eq!(type_line(&mut chat, "/help").show.len(), HELP.len());
        assert!(!chat.quitting());
        let step = type_line(&mut chat, "/quit");
        assert!(step.quit);
        assert!(chat.quitting());
        assert_eq!(sent(&step), ["exit"]);
        let step = type_line(&mut chat, "/join bad name");
        assert!(sent(&step).is_empty());
        assert!(shown(&step)[0].starts_with("! \"bad name\" is not a valid room name"));
        // Server text in hints and notes is escaped like any server line.
        let step = chat.event(&Event::Talk {
            from: "bob",
            text: "\u{202E}olleh",
        });
        assert_eq!(shown(&step), ["<bob> <U+202E>olleh"]);
    }
}
