//! Server events as the lines a user reads.
//!
//! Every line that came from the server goes through [`render_event`] (or [`sanitize`] for a
//! line that does not parse), so no peer's text reaches the terminal unfiltered.

use crate::codec::{ErrorKind, Event};

/// The line shown for a server event, or `None` for events the user need not see (`ping` is
/// answered silently; `ok|join` is followed by `members`, which says the same and more).
pub(crate) fn render_event(event: &Event<'_>) -> Option<String> {
    let line = match event {
        Event::LoggedIn(name) => format!("* logged in as {name}"),
        Event::Joined(_) | Event::Ping | Event::Pong => return None,
        Event::Left(room) => format!("* you left #{room}"),
        Event::Online(name) => format!("* {name} is online"),
        Event::Offline(name) => format!("* {name} left"),
        Event::Talk { from, text } => format!("<{from}> {text}"),
        Event::Users(names) => format!("users: {}", list(names, "")),
        Event::Members { room, names } => {
            format!("* you joined #{room} (members: {})", list(names, ""))
        }
        Event::RoomJoined { room, name } => format!("* {name} joined #{room}"),
        Event::RoomLeft { room, name } => format!("* {name} left #{room}"),
        Event::Say { room, from, text } => format!("[#{room}] <{from}> {text}"),
        Event::Rooms(rooms) => format!("rooms: {}", list(rooms, "#")),
        Event::Bye(None) => "* server closed the connection".to_owned(),
        Event::Bye(Some(reason)) => format!("* server closed the connection: {reason}"),
        Event::Error(kind, arg) => format!("! {}", describe_error(*kind, arg)),
    };
    Some(sanitize(line))
}

/// `a, b, c` (each with `prefix`), or `none`: an empty list still gets a word.
fn list(names: &[&str], prefix: &str) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut out = String::with_capacity(names.iter().map(|n| n.len() + prefix.len() + 2).sum());
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(prefix);
        out.push_str(name);
    }
    out
}

/// A server error as a sentence a user can act on. Also used for a refused login, which is
/// reported on stderr rather than shown as a line.
pub(crate) fn describe_error(kind: ErrorKind, arg: &str) -> String {
    match kind {
        ErrorKind::BadName if arg.is_empty() => "that is not a valid name".to_owned(),
        ErrorKind::BadName => format!("\"{arg}\" is not a valid name"),
        ErrorKind::NameTaken => format!("the name \"{arg}\" is already taken"),
        ErrorKind::AlreadyLoggedIn => "you are already logged in".to_owned(),
        ErrorKind::NotLoggedIn => "you are not logged in".to_owned(),
        ErrorKind::NoSuchUser => format!("no such user: {arg}"),
        ErrorKind::AlreadyInRoom => format!("you are already in #{arg}"),
        ErrorKind::NotInRoom => format!("you are not in #{arg}"),
        ErrorKind::UnknownCommand => format!("the server does not know the command \"{arg}\""),
        ErrorKind::BadArguments => format!("the server rejected the arguments of \"{arg}\""),
        ErrorKind::LineTooLong if arg.is_empty() => "that line is too long".to_owned(),
        ErrorKind::LineTooLong => format!("that line is too long (the limit is {arg} bytes)"),
        ErrorKind::BadEncoding => "the server could not read that line: it is not UTF-8".to_owned(),
        ErrorKind::RateLimited => "slow down: rate limited".to_owned(),
        ErrorKind::TooManyRooms => {
            format!("cannot join #{arg}: you are in too many rooms, or the server has too many")
        }
        ErrorKind::NoSuchRoom => format!("there is no room #{arg}"),
        ErrorKind::BadText => {
            "that text was not sent: it holds a control character or a line separator".to_owned()
        }
    }
}

/// Other users' text reaches our terminal: control characters (escape sequences above all)
/// must not be able to move the cursor, retitle the window or hide text.
pub(crate) fn sanitize(line: String) -> String {
    let unsafe_char = |c: char| c.is_control() && c != '\t';
    if line.contains(unsafe_char) {
        line.chars()
            .map(|c| {
                if unsafe_char(c) {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ByeReason;

    fn render(event: Event<'_>) -> Option<String> {
        render_event(&event)
    }

    #[test]
    fn renders_every_event() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            render(Event::LoggedIn("alice")),
            some("* logged in as alice")
        );
        assert_eq!(render(Event::Joined("rust")), None);
        assert_eq!(render(Event::Left("rust")), some("* you left #rust"));
        assert_eq!(render(Event::Online("bob")), some("* bob is online"));
        assert_eq!(render(Event::Offline("bob")), some("* bob left"));
        assert_eq!(
            render(Event::Talk {
                from: "bob",
                text: "hi | x"
            }),
            some("<bob> hi | x")
        );
        assert_eq!(
            render(Event::Users(vec!["alice", "bob"])),
            some("users: alice, bob")
        );
        assert_eq!(render(Event::Users(vec![])), some("users: none"));
        assert_eq!(
            render(Event::Members {
                room: "rust",
                names: vec!["alice", "bob"]
            }),
            some("* you joined #rust (members: alice, bob)")
        );
        assert_eq!(
            render(Event::RoomJoined {
                room: "rust",
                name: "bob"
            }),
            some("* bob joined #rust")
        );
        assert_eq!(
            render(Event::RoomLeft {
                room: "rust",
                name: "bob"
            }),
            some("* bob left #rust")
        );
        assert_eq!(
            render(Event::Say {
                room: "rust",
                from: "bob",
                text: "hi"
            }),
            some("[#rust] <bob> hi")
        );
        assert_eq!(render(Event::Rooms(vec!["a", "b"])), some("rooms: #a, #b"));
        assert_eq!(render(Event::Rooms(vec![])), some("rooms: none"));
        assert_eq!(render(Event::Ping), None);
        assert_eq!(render(Event::Pong), None);
        assert_eq!(
            render(Event::Bye(None)),
            some("* server closed the connection")
        );
        assert_eq!(
            render(Event::Bye(Some(ByeReason::Timeout))),
            some("* server closed the connection: timeout")
        );
    }

    /// What each kind reads as, for one or more arguments. Every kind in [`ErrorKind::ALL`] must
    /// have an entry, so a kind added to the protocol fails here until it has a sentence.
    const ERROR_SENTENCES: &[(ErrorKind, &str, &str)] = &[
        (ErrorKind::BadName, "b b", "! \"b b\" is not a valid name"),
        (ErrorKind::BadName, "", "! that is not a valid name"),
        (
            ErrorKind::NameTaken,
            "bob",
            "! the name \"bob\" is already taken",
        ),
        (
            ErrorKind::AlreadyLoggedIn,
            "bob",
            "! you are already logged in",
        ),
        (ErrorKind::NotLoggedIn, "talk", "! you are not logged in"),
        (ErrorKind::NoSuchUser, "carol", "! no such user: carol"),
        (
            ErrorKind::AlreadyInRoom,
            "rust",
            "! you are already in #rust",
        ),
        (ErrorKind::NotInRoom, "rust", "! you are not in #rust"),
        (
            ErrorKind::UnknownCommand,
            "dance",
            "! the server does not know the command \"dance\"",
        ),
        (
            ErrorKind::BadArguments,
            "talk",
            "! the server rejected the arguments of \"talk\"",
        ),
        (
            ErrorKind::LineTooLong,
            "4096",
            "! that line is too long (the limit is 4096 bytes)",
        ),
        (ErrorKind::LineTooLong, "", "! that line is too long"),
        (
            ErrorKind::BadEncoding,
            "",
            "! the server could not read that line: it is not UTF-8",
        ),
        (ErrorKind::RateLimited, "", "! slow down: rate limited"),
        (
            ErrorKind::TooManyRooms,
            "rust",
            "! cannot join #rust: you are in too many rooms, or the server has too many",
        ),
        (ErrorKind::NoSuchRoom, "go", "! there is no room #go"),
        (
            ErrorKind::BadText,
            "talk",
            "! that text was not sent: it holds a control character or a line separator",
        ),
    ];

    #[test]
    fn renders_every_error_as_a_sentence() {
        for &kind in ErrorKind::ALL {
            let cases: Vec<_> = ERROR_SENTENCES
                .iter()
                .filter(|(listed, _, _)| *listed == kind)
                .collect();
            assert!(
                !cases.is_empty(),
                "no expected sentence for error kind {kind:?} ({}): add one to ERROR_SENTENCES",
                kind.as_str()
            );
            for (_, arg, expected) in cases {
                let line = render(Event::Error(kind, arg));
                assert_eq!(line.as_deref(), Some(*expected), "{kind:?} with {arg:?}");
            }
        }
    }

    #[test]
    fn control_characters_from_peers_are_defused() {
        let line = render(Event::Talk {
            from: "bob",
            text: "\x1b[2Jgone\ttab\x07",
        });
        assert_eq!(line.as_deref(), Some("<bob> \u{fffd}[2Jgone\ttab\u{fffd}"));
    }
}
