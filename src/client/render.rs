//! Server events as the lines a user reads.
//!
//! Every line that came from the server goes through [`render_event`] (or [`sanitize`] for a
//! line that does not parse), so no peer's text reaches the terminal unfiltered.

use crate::codec::{ByeReason, ErrorKind, Event};

/// The line shown for a server event, or `None` for events the user need not see (`ping` is
/// answered silently; `ok|join` is followed by `members`, which says the same and more).
pub(crate) fn render_event(event: &Event<'_>) -> Option<String> {
    let line = match event {
        Event::LoggedIn(name) => format!("* logged in as {name}"),
        Event::Joined(_) | Event::Ping | Event::Pong => return None,
        Event::Left(room) => format!("* you left #{room}"),
        Event::PasswordChanged => "* your password is changed".to_owned(),
        Event::Online(name) => format!("* {name} is online"),
        Event::Offline(name) => format!("* {name} left"),
        Event::Talk { from, text } => format!("<{from}> {text}"),
        Event::Users(names) => format!("users: {}", list(names, "")),
        // The answer to `names`; the one that follows our own `ok|join` is [`render_joined`].
        Event::Members { room, names } => {
            format!("* members of #{room}: {}", list(names, ""))
        }
        Event::RoomJoined { room, name } => format!("* {name} joined #{room}"),
        Event::RoomLeft { room, name } => format!("* {name} left #{room}"),
        Event::Say { room, from, text } => format!("[#{room}] <{from}> {text}"),
        Event::Rooms(rooms) => format!("rooms: {}", list(rooms, "#")),
        Event::Bye(None) => "* server closed the connection".to_owned(),
        Event::Bye(Some(ByeReason::AccountRemoved)) => {
            "* server closed the connection: your account was removed by its operator".to_owned()
        }
        Event::Bye(Some(reason)) => format!("* server closed the connection: {reason}"),
        Event::Error(kind, arg) => format!("! {}", describe_error(*kind, arg)),
        // Stored lines carry the time they were sent, in the local time zone.
        Event::Hist {
            time, from, text, ..
        }
        | Event::Missed {
            time, from, text, ..
        } => match time.parse::<jiff::Timestamp>() {
            Ok(sent) => stamped(local_time_of(sent), &format!("<{from}> {text}")),
            Err(_) => format!("[{time}] <{from}> {text}"),
        },
        Event::End { target, count, .. } => match count {
            0 => format!("* no history with {target}"),
            1 => format!("* 1 line of history with {target}"),
            n => format!("* {n} lines of history with {target}"),
        },
        Event::Queued(name) => format!("* {name} is offline; message queued"),
        // The heading the missed lines are shown under (see `Chat`); none when nothing was.
        Event::EndMissed { count: 0 } => return None,
        Event::EndMissed { count } => away_heading(*count),
    };
    Some(sanitize(line))
}

/// The line over the messages that came while we were away.
pub(crate) fn away_heading(count: u64) -> String {
    format!("--- while you were away ({count}) ---")
}

/// The `members` line that follows our own `ok|join`: the join and who is there, in one line.
pub(crate) fn render_joined(room: &str, names: &[&str]) -> String {
    sanitize(format!(
        "* you joined #{room} (members: {})",
        list(names, "")
    ))
}

/// `[12:03] ` and the line: the local time an incoming line arrived, as a terminal shows it.
pub(crate) fn stamped(time: jiff::civil::Time, line: &str) -> String {
    format!("[{:02}:{:02}] {line}", time.hour(), time.minute())
}

/// The wall-clock time now in the system's time zone (`TZ`, else `/etc/localtime`); UTC when
/// neither names one, as on a bare CI container, rather than failing.
pub(crate) fn local_time_now() -> jiff::civil::Time {
    jiff::ZonedDateTime::now().time()
}

/// `sent` in the system's time zone (UTC when none is configured).
fn local_time_of(sent: jiff::Timestamp) -> jiff::civil::Time {
    sent.to_zoned_datetime(jiff::tz::TimeZone::system()).time()
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
        ErrorKind::RateLimited if arg == "login" || arg == "passwd" => {
            "too many wrong passwords: wait a little and try again".to_owned()
        }
        ErrorKind::RateLimited => "slow down: rate limited".to_owned(),
        ErrorKind::TooManyRooms => {
            format!("cannot join #{arg}: you are in too many rooms, or the server has too many")
        }
        ErrorKind::NoSuchRoom => format!("there is no room #{arg}"),
        ErrorKind::BadText => {
            "that text was not sent: it holds a control character or a line separator".to_owned()
        }
        ErrorKind::NoHistory => "this server keeps no history".to_owned(),
        ErrorKind::WeakPassword => "that password will not do: it needs 8 to 256 bytes, \
                                    without \"|\" or control characters"
            .to_owned(),
        ErrorKind::RegistrationClosed => format!(
            "the server does not let clients register names: ask its operator for an account \
             \"{arg}\""
        ),
        ErrorKind::BadPassword => format!("wrong password for \"{arg}\" (or no such account)"),
        ErrorKind::PasswordRequired => {
            format!("the name \"{arg}\" is registered: it needs its password")
        }
        ErrorKind::TlsRequired => format!(
            "the server takes passwords only over TLS from another machine, so \"{arg}\" was \
             refused: connect with --tls (and change the password if others may have seen it)"
        ),
        ErrorKind::StoreUnavailable if arg == "missed" => {
            "the messages you missed cannot be read now (the server's store is not answering); \
             they wait for your next login"
                .to_owned()
        }
        ErrorKind::StoreUnavailable => {
            format!("the server's store is not answering about {arg} now: try again later")
        }
    }
}

/// Other users' text reaches our terminal, so nothing in it may act on the terminal or on how
/// the text reads: control characters (escape sequences above all) could move the cursor,
/// retitle the window or hide text, and Unicode format characters (a right-to-left override,
/// bidirectional isolates, zero-width characters, tag characters) could reorder or hide what a
/// line says, so that `<bob> hi` shows as something bob did not write. Each is shown as its
/// code point, `<U+202E>`, so the reader sees that it is there and what it is. C0 and C1
/// controls get the same form (rather than U+FFFD) so that the two are told apart. Tab is
/// kept: it only moves to the next tab stop.
pub(crate) fn sanitize(line: String) -> String {
    if !line.contains(is_unsafe) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("<U+{:04X}>", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` must not reach the terminal as itself: a control character other than tab, a
/// line or paragraph separator (terminals may break the line there), or a format character.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Unicode general category Cf (format), as of Unicode 16.0, plus the unassigned rest of the
/// tag block (U+E0000–U+E007F), which a newer version may fill. std has no category lookup,
/// and the list is short and changes rarely; `every_format_character_is_escaped` lists them.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ByeReason;

    fn render(event: Event<'_>) -> Option<String> {
        render_event(&event)
    }

    #[test]
    fn history_lines_show_the_time_they_were_sent() {
        let hist = Event::Hist {
            target: "#rust",
            id: 7,
            time: "2026-12-02T20:31:07.123Z",
            from: "bob",
            text: "hi",
        };
        let line = render_event(&hist).expect("shown");
        let (stamp, rest) = line.split_at(8);
        assert_eq!(rest, "<bob> hi", "{line}");
        assert!(
            stamp.starts_with('[') && stamp.ends_with("] ") && stamp.as_bytes()[3] == b':',
            "{line}"
        );
        let end = |count| Event::End {
            verb: crate::codec::Verb::History,
            target: "#rust",
            count,
        };
        assert_eq!(
            render_event(&end(0)).as_deref(),
            Some("* no history with #rust")
        );
        assert_eq!(
            render_event(&end(3)).as_deref(),
            Some("* 3 lines of history with #rust")
        );
    }

    #[test]
    fn offline_delivery_lines() {
        assert_eq!(
            render(Event::Queued("carol")).as_deref(),
            Some("* carol is offline; message queued")
        );
        let missed = render(Event::Missed {
            id: 9,
            time: "2026-12-02T12:03:07.123Z",
            from: "bob",
            text: "hi",
        })
        .expect("shown");
        let (stamp, rest) = missed.split_at(8);
        assert_eq!(rest, "<bob> hi", "{missed}");
        assert!(stamp.starts_with('[') && stamp.ends_with("] "), "{missed}");
        assert_eq!(render(Event::EndMissed { count: 0 }), None);
        assert_eq!(
            render(Event::EndMissed { count: 2 }).as_deref(),
            Some("--- while you were away (2) ---")
        );
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
            some("* members of #rust: alice, bob")
        );
        assert_eq!(
            render_joined("Rust", &["alice", "bob"]),
            "* you joined #Rust (members: alice, bob)"
        );
        assert_eq!(render_joined("x", &[]), "* you joined #x (members: none)");
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
        assert_eq!(
            render(Event::Bye(Some(ByeReason::AccountRemoved))),
            some("* server closed the connection: your account was removed by its operator")
        );
        assert_eq!(
            render(Event::PasswordChanged),
            some("* your password is changed")
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
        (
            ErrorKind::NoHistory,
            "bob",
            "! this server keeps no history",
        ),
        (
            ErrorKind::StoreUnavailable,
            "#rust",
            "! the server's store is not answering about #rust now: try again later",
        ),
        (
            ErrorKind::StoreUnavailable,
            "missed",
            "! the messages you missed cannot be read now (the server's store is not answering); \
             they wait for your next login",
        ),
        (
            ErrorKind::RateLimited,
            "login",
            "! too many wrong passwords: wait a little and try again",
        ),
        (
            ErrorKind::WeakPassword,
            "bob",
            "! that password will not do: it needs 8 to 256 bytes, without \"|\" or control \
             characters",
        ),
        (
            ErrorKind::RegistrationClosed,
            "bob",
            "! the server does not let clients register names: ask its operator for an account \
             \"bob\"",
        ),
        (
            ErrorKind::BadPassword,
            "bob",
            "! wrong password for \"bob\" (or no such account)",
        ),
        (
            ErrorKind::PasswordRequired,
            "bob",
            "! the name \"bob\" is registered: it needs its password",
        ),
        (
            ErrorKind::TlsRequired,
            "login",
            "! the server takes passwords only over TLS from another machine, so \"login\" was \
             refused: connect with --tls (and change the password if others may have seen it)",
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
    fn control_characters_from_peers_are_shown_as_code_points() {
        let line = render(Event::Talk {
            from: "bob",
            text: "\x1b[2Jgone\ttab\x07\u{85}\u{9b}31m\r",
        });
        assert_eq!(
            line.as_deref(),
            Some("<bob> <U+001B>[2Jgone\ttab<U+0007><U+0085><U+009B>31m<U+000D>")
        );
        assert_eq!(
            sanitize("a\u{2028}b\u{2029}".to_owned()),
            "a<U+2028>b<U+2029>"
        );
    }

    /// `<bob> hi \u{202E}txt.exe` would show as `<bob> hi exe.txt`: every format character is
    /// escaped, and so it cannot reorder or hide what a line says.
    #[test]
    fn format_characters_cannot_reorder_or_hide_text() {
        let line = render(Event::Say {
            room: "rust",
            from: "bob",
            text: "see \u{202E}gpj.exe\u{202C} and \u{2066}x\u{2069}",
        });
        assert_eq!(
            line.as_deref(),
            Some("[#rust] <bob> see <U+202E>gpj.exe<U+202C> and <U+2066>x<U+2069>")
        );
        // Hidden text: zero-width characters and tag characters spell nothing visible.
        assert_eq!(
            sanitize("a\u{200B}b\u{200D}c\u{FEFF}\u{E0041}\u{E007F}".to_owned()),
            "a<U+200B>b<U+200D>c<U+FEFF><U+E0041><U+E007F>"
        );
    }

    #[test]
    fn every_format_character_is_escaped() {
        // Unicode 16.0, DerivedGeneralCategory.txt, category Cf (plus the tag block's gaps).
        let ranges = [
            0x00AD..=0x00AD,
            0x0600..=0x0605,
            0x061C..=0x061C,
            0x06DD..=0x06DD,
            0x070F..=0x070F,
            0x0890..=0x0891,
            0x08E2..=0x08E2,
            0x180E..=0x180E,
            0x200B..=0x200F,
            0x202A..=0x202E,
            0x2060..=0x2064,
            0x2066..=0x206F,
            0xFEFF..=0xFEFF,
            0xFFF9..=0xFFFB,
            0x110BD..=0x110BD,
            0x110CD..=0x110CD,
            0x13430..=0x1343F,
            0x1BCA0..=0x1BCA3,
            0x1D173..=0x1D17A,
            0xE0000..=0xE007F,
        ];
        for c in ranges.into_iter().flatten().filter_map(char::from_u32) {
            assert_eq!(
                sanitize(c.to_string()),
                format!("<U+{:04X}>", u32::from(c)),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Neighbours that are ordinary text stay as they are.
        for text in [
            "\u{200A}", "\u{2010}", "\u{2065}", "é", "日本", "🦀", "a\tb",
        ] {
            assert_eq!(sanitize(text.to_owned()), text);
        }
    }

    #[test]
    fn a_stamp_is_the_hour_and_minute() {
        let time = jiff::civil::time(9, 5, 59, 0);
        assert_eq!(stamped(time, "<bob> hi"), "[09:05] <bob> hi");
        // Whatever the machine's time zone (TZ may be unset in CI), there is a time.
        let now = stamped(local_time_now(), "x");
        assert_eq!(now.len(), "[hh:mm] x".len(), "{now}");
    }
}
