//! The input language: what a typed line means.
//!
//! Kept apart from the terminal and the socket so that every command can be tested as a plain
//! function of the line and the current target. Interpreting a line borrows from the line or the
//! target, so the common case (a chat line) allocates nothing.

use std::fmt;

use crate::codec::{is_valid_name, Event, Request};

/// What `/help` shows.
pub(crate) const HELP: &[&str] = &[
    "* a plain line goes to the current target; start it with // to send a line beginning with /",
    "* /msg NAME TEXT    send TEXT to NAME only",
    "* /to NAME          send plain lines to NAME",
    "* /to #ROOM         send plain lines to ROOM",
    "* /who              list who is online",
    "* /join ROOM        join ROOM (it is created if needed)",
    "* /leave ROOM       leave ROOM",
    "* /say ROOM TEXT    say TEXT in ROOM",
    "* /rooms            list the rooms that have members",
    "* /quit             leave the chat (so do `exit` and Ctrl-D)",
];

/// What a valid user or room name is made of (see [`is_valid_name`]); shown in hints and in the
/// error for a bad login name, so that both say the same.
pub(crate) const NAME_RULE: &str = "use 1 to 32 of A-Z a-z 0-9 _ . -";

/// Where a plain (non-command) line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A direct message: `talk|NAME|TEXT`.
    User(String),
    /// A room message: `say|ROOM|TEXT`.
    Room(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(name) => f.write_str(name),
            Target::Room(room) => write!(f, "#{room}"),
        }
    }
}

/// What one typed line asks for. Requests borrow from the line or the target, so interpreting
/// a line allocates only for the rare local outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// A blank line: nothing to do.
    Nothing,
    /// Send this to the server.
    Send(Request<'a>),
    /// Change where plain lines go.
    SetTarget(Target),
    /// Show the command list.
    Help,
    /// Leave: send `exit` and wait for `bye`.
    Quit,
    /// A line that cannot be sent as typed; show this one-line explanation and send nothing.
    Hint(String),
}

/// The session state that decides where plain lines go.
///
/// Until the user picks a target, it follows the last online notice, as the original program
/// did: in a two-person chat, whoever logged in is whom you want to talk to. Once the user has
/// chosen with `/to`, later arrivals no longer move it, so a message is never silently
/// redirected to someone who just happened to log in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Chat {
    target: Option<Target>,
    chosen: bool,
}

impl Chat {
    /// Where a plain line would go now.
    pub(crate) fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The user's explicit choice; it sticks.
    pub(crate) fn set_target(&mut self, target: Target) {
        self.target = Some(target);
        self.chosen = true;
    }

    /// Lets an incoming event move the default target.
    pub(crate) fn observe(&mut self, event: &Event<'_>) {
        if let Event::Online(name) = event {
            if !self.chosen {
                self.target = Some(Target::User((*name).to_owned()));
            }
        }
    }
}

/// Interprets one typed line, given where plain lines currently go.
pub(crate) fn parse_input<'a>(line: &'a str, target: Option<&'a Target>) -> Action<'a> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Action::Nothing;
    }
    if quits(line) {
        return Action::Quit;
    }
    let Some(command) = line.strip_prefix('/') else {
        return to_target(line, target);
    };
    if command.starts_with('/') {
        return to_target(command, target);
    }
    let (verb, args) = split_word(command);
    match verb {
        "msg" => match split_word(args) {
            (name, text) if !name.is_empty() && !text.trim().is_empty() => match user(name) {
                Ok(to) => Action::Send(Request::Talk { to, text }),
                Err(hint) => hint,
            },
            _ => usage("/msg NAME TEXT"),
        },
        "to" => match split_word(args) {
            (name, "") if !name.is_empty() => {
                if name.starts_with('#') {
                    match room(name) {
                        Ok(room) => Action::SetTarget(Target::Room(room.to_owned())),
                        Err(hint) => hint,
                    }
                } else {
                    match user(name) {
                        Ok(name) => Action::SetTarget(Target::User(name.to_owned())),
                        Err(hint) => hint,
                    }
                }
            }
            _ => match target {
                Some(target) => Action::Hint(format!(
                    "! usage: /to NAME or /to #ROOM (now talking to {target})"
                )),
                None => usage("/to NAME or /to #ROOM"),
            },
        },
        "who" if args.is_empty() => Action::Send(Request::Who),
        "who" => usage("/who"),
        "rooms" if args.is_empty() => Action::Send(Request::Rooms),
        "rooms" => usage("/rooms"),
        "join" | "leave" => match split_word(args) {
            (name, "") if !name.is_empty() => match room(name) {
                Ok(room) if verb == "join" => Action::Send(Request::Join { room }),
                Ok(room) => Action::Send(Request::Leave { room }),
                Err(hint) => hint,
            },
            _ => usage(&format!("/{verb} ROOM")),
        },
        "say" => match split_word(args) {
            (name, text) if !name.is_empty() && !text.trim().is_empty() => match room(name) {
                Ok(room) => Action::Send(Request::Say { room, text }),
                Err(hint) => hint,
            },
            _ => usage("/say ROOM TEXT"),
        },
        "help" => Action::Help,
        _ => Action::Hint(format!("! unknown command /{verb}: try /help")),
    }
}

/// Whether a typed line means leave: `/quit`, `/exit`, or — as in the original client, which
/// had no commands — `exit` on its own. The terminal reader asks too, to stop prompting at once.
pub(crate) fn quits(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line.trim() == "exit"
        || line
            .strip_prefix('/')
            .is_some_and(|command| matches!(split_word(command).0, "quit" | "exit"))
}

/// A plain line, sent wherever plain lines go.
fn to_target<'a>(text: &'a str, target: Option<&'a Target>) -> Action<'a> {
    match target {
        Some(Target::User(to)) => Action::Send(Request::Talk { to, text }),
        Some(Target::Room(room)) => Action::Send(Request::Say { room, text }),
        None => Action::Hint("! no one to talk to yet: use /to NAME or /msg NAME TEXT".to_owned()),
    }
}

/// The first word and the rest, with the separating whitespace dropped but the rest's own
/// spacing kept, since it may be message text.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], s[end..].trim_start()),
        None => (s, ""),
    }
}

fn user(name: &str) -> Result<&str, Action<'static>> {
    checked(name, name, "name")
}

/// Users think of rooms as `#rust`; the wire says `rust`.
fn room(name: &str) -> Result<&str, Action<'static>> {
    checked(name.strip_prefix('#').unwrap_or(name), name, "room name")
}

/// Names are checked here because a `|` or a stray character would otherwise change the
/// meaning of the line the server receives. `typed` is the name as the user wrote it.
fn checked<'a>(name: &'a str, typed: &str, what: &str) -> Result<&'a str, Action<'static>> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(Action::Hint(format!(
            "! \"{typed}\" is not a valid {what}: {NAME_RULE}"
        )))
    }
}

fn usage(form: &str) -> Action<'static> {
    Action::Hint(format!("! usage: {form}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_target(name: &str) -> Target {
        Target::User(name.to_owned())
    }

    fn room_target(room: &str) -> Target {
        Target::Room(room.to_owned())
    }

    fn talk<'a>(to: &'a str, text: &'a str) -> Action<'a> {
        Action::Send(Request::Talk { to, text })
    }

    fn say<'a>(room: &'a str, text: &'a str) -> Action<'a> {
        Action::Send(Request::Say { room, text })
    }

    fn is_hint(action: &Action<'_>) -> bool {
        matches!(action, Action::Hint(hint) if hint.starts_with("! ") && !hint.contains('\n'))
    }

    #[test]
    fn plain_lines_go_to_the_current_target() {
        let bob = user_target("bob");
        assert_eq!(parse_input("hi there", Some(&bob)), talk("bob", "hi there"));
        let rust = room_target("rust");
        assert_eq!(parse_input("a|b", Some(&rust)), say("rust", "a|b"));
        assert_eq!(
            parse_input("  indented\r\n", Some(&bob)),
            talk("bob", "  indented")
        );
    }

    #[test]
    fn a_plain_line_without_a_target_is_a_hint() {
        let action = parse_input("hello", None);
        assert!(is_hint(&action), "{action:?}");
        assert!(matches!(&action, Action::Hint(h) if h.contains("/to NAME")));
    }

    #[test]
    fn a_double_slash_sends_a_literal_slash() {
        let bob = user_target("bob");
        assert_eq!(parse_input("//shrug", Some(&bob)), talk("bob", "/shrug"));
    }

    #[test]
    fn blank_lines_do_nothing() {
        let bob = user_target("bob");
        for line in ["", "   ", "\t", "\r\n"] {
            assert_eq!(parse_input(line, Some(&bob)), Action::Nothing);
        }
    }

    #[test]
    fn exit_and_quit_leave() {
        let bob = user_target("bob");
        for line in ["exit", " exit ", "/quit", "/exit"] {
            assert_eq!(parse_input(line, Some(&bob)), Action::Quit, "{line}");
        }
        // Only `exit` alone: a sentence starting with it is a message.
        assert_eq!(parse_input("exit now", Some(&bob)), talk("bob", "exit now"));
    }

    #[test]
    fn msg_sends_a_direct_message_without_changing_the_target() {
        assert_eq!(
            parse_input("/msg carol  hi  you ", None),
            talk("carol", "hi  you ")
        );
        for line in ["/msg", "/msg carol", "/msg carol   "] {
            assert_eq!(parse_input(line, None), usage("/msg NAME TEXT"), "{line}");
        }
        assert!(is_hint(&parse_input("/msg ca|rol hi", None)));
        assert!(is_hint(&parse_input("/msg #rust hi", None)));
    }

    #[test]
    fn to_sets_a_user_or_room_target() {
        assert_eq!(
            parse_input("/to bob", None),
            Action::SetTarget(user_target("bob"))
        );
        assert_eq!(
            parse_input("/to #rust", None),
            Action::SetTarget(room_target("rust"))
        );
        assert!(is_hint(&parse_input("/to", None)));
        assert!(is_hint(&parse_input("/to bob carol", None)));
        assert!(is_hint(&parse_input("/to b|b", None)));
        assert!(is_hint(&parse_input("/to #", None)));
        let bob = user_target("bob");
        assert!(matches!(parse_input("/to", Some(&bob)), Action::Hint(h) if h.contains("bob")));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse_input("/who", None), Action::Send(Request::Who));
        assert_eq!(parse_input("/rooms", None), Action::Send(Request::Rooms));
        assert_eq!(parse_input("/help", None), Action::Help);
        assert_eq!(parse_input("/who bob", None), usage("/who"));
        assert_eq!(parse_input("/rooms all", None), usage("/rooms"));
    }

    #[test]
    fn room_commands_accept_an_optional_hash() {
        for line in ["/join rust", "/join #rust", "/join   #rust  "] {
            assert_eq!(
                parse_input(line, None),
                Action::Send(Request::Join { room: "rust" })
            );
        }
        for line in ["/leave rust", "/leave #rust"] {
            assert_eq!(
                parse_input(line, None),
                Action::Send(Request::Leave { room: "rust" })
            );
        }
        for line in ["/say rust hi all", "/say #rust hi all"] {
            assert_eq!(parse_input(line, None), say("rust", "hi all"));
        }
        assert_eq!(parse_input("/join", None), usage("/join ROOM"));
        assert_eq!(parse_input("/join a b", None), usage("/join ROOM"));
        assert_eq!(parse_input("/leave", None), usage("/leave ROOM"));
        assert_eq!(parse_input("/say rust", None), usage("/say ROOM TEXT"));
        assert_eq!(parse_input("/say", None), usage("/say ROOM TEXT"));
        assert!(is_hint(&parse_input("/join ##rust", None)));
        assert!(is_hint(&parse_input("/join r|ust", None)));
        assert!(is_hint(&parse_input(
            &format!("/join {}", "x".repeat(33)),
            None
        )));
    }

    #[test]
    fn unknown_commands_are_a_hint() {
        for line in ["/dance", "/MSG bob hi", "/ who"] {
            let action = parse_input(line, None);
            assert!(is_hint(&action), "{line}: {action:?}");
        }
        assert_eq!(
            parse_input("/dance now", None),
            Action::Hint("! unknown command /dance: try /help".to_owned())
        );
    }

    #[test]
    fn the_default_target_follows_the_last_online_notice() {
        let mut chat = Chat::default();
        assert_eq!(chat.target(), None);
        chat.observe(&Event::Online("bob"));
        chat.observe(&Event::Online("carol"));
        assert_eq!(chat.target(), Some(&user_target("carol")));
        assert_eq!(parse_input("hi", chat.target()), talk("carol", "hi"));
        // Other events leave it alone, even carol leaving: the server will say she is gone.
        chat.observe(&Event::Offline("carol"));
        chat.observe(&Event::Talk {
            from: "bob",
            text: "hey",
        });
        assert_eq!(chat.target(), Some(&user_target("carol")));
    }

    #[test]
    fn a_chosen_target_sticks() {
        let mut chat = Chat::default();
        chat.observe(&Event::Online("bob"));
        chat.set_target(room_target("rust"));
        chat.observe(&Event::Online("carol"));
        assert_eq!(chat.target(), Some(&room_target("rust")));
        assert_eq!(
            parse_input("hello all", chat.target()),
            say("rust", "hello all")
        );
    }
}
