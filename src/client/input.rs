//! The input language: what a typed line means.
//!
//! Kept apart from the terminal and the socket so that every command can be tested as a plain
//! function of the typed text. Where plain lines go is not decided here but by the session
//! state in [`super::chat`], which knows the current target.
//!
//! A "typed line" may hold several lines: rustyline hands over a bracketed paste whole, line
//! breaks included. The protocol is line-based, so a line break inside a field would end the
//! request early and turn the rest of the text into a command of its own (`hello⏎join|secret`
//! joining #secret). Every line break therefore splits the input here, before anything is
//! encoded, and no request this module builds holds a `\r` or `\n` in any field.

use std::fmt;

use crate::codec::{is_valid_name, Request, MAX_NAME_LEN};

/// What `/help` shows.
pub(crate) const HELP: &[&str] = &[
    "* a plain line goes to the target shown in the prompt (bob> or #rust>);",
    "*   start it with // to send a line beginning with /",
    "* a paste of several lines is sent as one message per line, all to one place",
    "* /msg NAME TEXT    send TEXT to NAME only",
    "* /to NAME          send plain lines to NAME (who must be online)",
    "* /to #ROOM         send plain lines to ROOM (one you are in)",
    "* /to               show where plain lines go",
    "* /who              list who is online",
    "* /join ROOM        join ROOM (it is created if needed)",
    "* /leave ROOM       leave ROOM",
    "* /say ROOM TEXT    say TEXT in ROOM",
    "* /names ROOM       list the members of ROOM",
    "* /rooms            list the rooms that have members",
    "* /history NAME [N] the last N (20) messages with NAME, or in #ROOM",
    "* /register         register your name with a password (asked without echo)",
    "* /passwd           change your account's password (asked without echo)",
    "* /quit             leave (so do `exit`, Ctrl-D, and Ctrl-C on an empty line)",
    "* Ctrl-C            clear the line being typed",
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

impl Target {
    /// Whether this is `other`, compared as the server compares names: ignoring ASCII case.
    pub(crate) fn is(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::User(a), Target::User(b)) | (Target::Room(a), Target::Room(b)) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::User(name) => f.write_str(name),
            Target::Room(room) => write!(f, "#{room}"),
        }
    }
}

/// What one typed line asks for. Requests borrow from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// A blank line: nothing to do.
    Nothing,
    /// Text for wherever plain lines go: each entry is one message, in order.
    Plain(Vec<&'a str>),
    /// Send these to the server, in order.
    Send(Vec<Request<'a>>),
    /// `/to`: make this the target, once the server confirms it is there.
    To(Target),
    /// `/to` alone: say where plain lines go.
    ShowTarget,
    /// Show the command list.
    Help,
    /// Leave: send `exit` and wait for `bye`.
    Quit,
    /// `/register`: register the name in use, with the password asked for (see [`secrets_for`]).
    Register,
    /// `/passwd`: change the account's password, the old and new ones asked for.
    Passwd,
    /// A line that cannot be sent as typed; show this one-line explanation and send nothing.
    Hint(String),
}

/// Interprets what the user typed: one line, or several from a paste.
///
/// With several lines, the first decides what they are: after a plain line or a `/msg` or
/// `/say`, every further line is another message to the same place, taken literally (a pasted
/// line that starts with `/` is text, not a command). Any other command must stand alone,
/// since there is no one place its continuation lines could go; nothing is then sent. Blank
/// lines are skipped, as a typed blank line is.
pub(crate) fn parse_input(input: &str) -> Action<'_> {
    let mut lines = input
        .split(['\r', '\n'])
        .filter(|line| !line.trim().is_empty());
    let Some(first) = lines.next() else {
        return Action::Nothing;
    };
    let more: Vec<&str> = lines.collect();
    parse_line(first, &more)
}

/// One line, with the lines pasted after it (empty when it was typed alone).
fn parse_line<'a>(line: &'a str, more: &[&'a str]) -> Action<'a> {
    let alone =
        || Action::Hint("! a command must be on a line of its own: nothing was sent".to_owned());
    if quits(line) {
        return if more.is_empty() {
            Action::Quit
        } else {
            alone()
        };
    }
    let Some(command) = line.strip_prefix('/') else {
        return Action::Plain(texts(Some(line), more));
    };
    if command.starts_with('/') {
        return Action::Plain(texts(Some(command), more));
    }
    let (verb, args) = split_word(command);
    if !more.is_empty() && !matches!(verb, "msg" | "say") {
        return alone();
    }
    let one_name = args.trim_end();
    match verb {
        "msg" => match split_word(args) {
            ("", _) => usage("/msg NAME TEXT"),
            (name, text) => {
                let texts = texts(Some(text).filter(|t| !t.trim().is_empty()), more);
                if texts.is_empty() {
                    return usage("/msg NAME TEXT");
                }
                if let Some(room) = name.strip_prefix('#') {
                    return Action::Hint(format!(
                        "! /msg is for users: to talk in #{room}, use /say #{room} TEXT"
                    ));
                }
                match user(name) {
                    Ok(to) => Action::Send(
                        texts
                            .into_iter()
                            .map(|text| Request::Talk { to, text })
                            .collect(),
                    ),
                    Err(hint) => hint,
                }
            }
        },
        "say" => match split_word(args) {
            ("", _) => usage("/say ROOM TEXT"),
            (name, text) => {
                let texts = texts(Some(text).filter(|t| !t.trim().is_empty()), more);
                if texts.is_empty() {
                    return usage("/say ROOM TEXT");
                }
                match room(name) {
                    Ok(room) => Action::Send(
                        texts
                            .into_iter()
                            .map(|text| Request::Say { room, text })
                            .collect(),
                    ),
                    Err(hint) => hint,
                }
            }
        },
        // The whole rest is the name, spaces included, so that `/join bad name` is told
        // what is wrong with "bad name" rather than shown a usage line.
        "to" if one_name.is_empty() => Action::ShowTarget,
        "to" if one_name.starts_with('#') => match room(one_name) {
            Ok(room) => Action::To(Target::Room(room.to_owned())),
            Err(hint) => hint,
        },
        "to" => match user(one_name) {
            Ok(name) => Action::To(Target::User(name.to_owned())),
            Err(hint) => hint,
        },
        "who" if args.is_empty() => Action::Send(vec![Request::Who]),
        "who" => usage("/who"),
        "rooms" if args.is_empty() => Action::Send(vec![Request::Rooms]),
        "rooms" => usage("/rooms"),
        "join" | "leave" | "names" if one_name.is_empty() => usage(&format!("/{verb} ROOM")),
        "join" | "leave" | "names" => match room(one_name) {
            Ok(room) => Action::Send(vec![match verb {
                "join" => Request::Join { room },
                "leave" => Request::Leave { room },
                _ => Request::Names { room },
            }]),
            Err(hint) => hint,
        },
        "history" => {
            let (target, count) = split_word(args.trim_end());
            let count = match count {
                "" => DEFAULT_HISTORY,
                n => match n.parse::<u64>() {
                    Ok(n) if n >= 1 => n,
                    _ => return usage("/history NAME|#ROOM [N]"),
                },
            };
            let checked = match target {
                "" => return usage("/history NAME|#ROOM [N]"),
                t if t.starts_with('#') => room(t).map(|_| t),
                t => user(t),
            };
            match checked {
                Ok(target) => Action::Send(vec![Request::History {
                    target,
                    count,
                    before: None,
                }]),
                Err(hint) => hint,
            }
        }
        "register" if args.is_empty() => Action::Register,
        "register" => usage("/register (the password is asked for, never typed on the line)"),
        "passwd" if args.is_empty() => Action::Passwd,
        "passwd" => usage("/passwd (the passwords are asked for, never typed on the line)"),
        "help" => Action::Help,
        _ => Action::Hint(format!("! unknown command /{verb}: try /help")),
    }
}

/// The passwords a typed line needs, as the prompts that ask for them (on a terminal, without
/// echo) or the number of further lines that hold them (piped): `/register` needs the password
/// twice, `/passwd` the old one and the new one twice. Empty for any other line.
pub(crate) fn secrets_for(line: &str) -> &'static [&'static str] {
    match parse_input(line) {
        Action::Register => &["Password: ", "The same again: "],
        Action::Passwd => &["Current password: ", "New password: ", "The same again: "],
        _ => &[],
    }
}

/// Messages `/history` asks for when no count is given.
const DEFAULT_HISTORY: u64 = 20;

/// The message texts: the first line's own text (if any), then each pasted line as it is.
fn texts<'a>(first: Option<&'a str>, more: &[&'a str]) -> Vec<&'a str> {
    first.into_iter().chain(more.iter().copied()).collect()
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
    match name_problem(name) {
        None => Ok(name),
        Some(why) => Err(Action::Hint(format!(
            "! \"{typed}\" is not a valid {what}: {why} ({NAME_RULE})"
        ))),
    }
}

/// What is wrong with a name, in words, or `None` if it is valid.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if is_valid_name(name) {
        return None;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    Some(match name.chars().find(|&c| !allowed(c)) {
        _ if name.is_empty() => "it is empty".to_owned(),
        Some(' ') => "it contains a space".to_owned(),
        Some(c) if c.is_whitespace() => "it contains white space".to_owned(),
        Some(c) if c.is_control() => {
            format!("it contains the control character U+{:04X}", c as u32)
        }
        Some(c) => format!("it contains \"{c}\""),
        None => format!(
            "it is {} characters long, and the most is {MAX_NAME_LEN}",
            name.len()
        ),
    })
}

fn usage(form: &str) -> Action<'static> {
    Action::Hint(format!("! usage: {form}"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn plain(texts: &[&'static str]) -> Action<'static> {
        Action::Plain(texts.to_vec())
    }

    fn talk<'a>(to: &'a str, text: &'a str) -> Request<'a> {
        Request::Talk { to, text }
    }

    fn say<'a>(room: &'a str, text: &'a str) -> Request<'a> {
        Request::Say { room, text }
    }

    fn send(requests: &[Request<'static>]) -> Action<'static> {
        Action::Send(requests.to_vec())
    }

    fn is_hint(action: &Action<'_>) -> bool {
        matches!(action, Action::Hint(hint) if hint.starts_with("! ") && !hint.contains('\n'))
    }

    fn hint(action: Action<'_>) -> String {
        match action {
            Action::Hint(hint) => hint,
            other => panic!("not a hint: {other:?}"),
        }
    }

    /// Every field a request would put on the wire.
    fn fields<'a>(request: &Request<'a>) -> Vec<&'a str> {
        match *request {
            Request::Login { name, password } => vec![name]
                .into_iter()
                .chain(password.map(|p| p.0))
                .collect(),
            Request::Register { name, password } => vec![name, password.0],
            Request::Passwd { old, new } => vec![old.0, new.0],
            Request::Talk { to, text } => vec![to, text],
            Request::Join { room } | Request::Leave { room } | Request::Names { room } => {
                vec![room]
            }
            Request::Say { room, text } => vec![room, text],
            Request::Who | Request::Rooms | Request::Ping | Request::Pong | Request::Exit => {
                vec![]
            }
            Request::History { target, .. } => vec![target],
        }
    }

    #[test]
    fn history_asks_for_a_user_or_a_room() {
        let history = |target, count| {
            send(&[Request::History {
                target,
                count,
                before: None,
            }])
        };
        assert_eq!(parse_input("/history bob"), history("bob", 20));
        assert_eq!(parse_input("/history #rust 5"), history("#rust", 5));
        assert!(is_hint(&parse_input("/history")));
        assert!(is_hint(&parse_input("/history bob 0")));
        assert!(is_hint(&parse_input("/history bad|name")));
    }

    #[test]
    fn plain_lines_are_text_for_the_target() {
        assert_eq!(parse_input("hi there"), plain(&["hi there"]));
        assert_eq!(parse_input("a|b"), plain(&["a|b"]));
        assert_eq!(parse_input("  indented\r\n"), plain(&["  indented"]));
        assert_eq!(parse_input("exit now"), plain(&["exit now"]));
    }

    #[test]
    fn a_double_slash_sends_a_literal_slash() {
        assert_eq!(parse_input("//shrug"), plain(&["/shrug"]));
    }

    #[test]
    fn blank_lines_do_nothing() {
        for line in ["", "   ", "\t", "\r\n", "\n \n\r"] {
            assert_eq!(parse_input(line), Action::Nothing, "{line:?}");
        }
    }

    #[test]
    fn exit_and_quit_leave() {
        for line in ["exit", " exit ", "/quit", "/exit", "/quit now", "exit\r\n"] {
            assert_eq!(parse_input(line), Action::Quit, "{line}");
        }
    }

    #[test]
    fn msg_sends_a_direct_message() {
        assert_eq!(
            parse_input("/msg carol  hi  you "),
            send(&[talk("carol", "hi  you ")])
        );
        for line in ["/msg", "/msg carol", "/msg carol   "] {
            assert_eq!(parse_input(line), usage("/msg NAME TEXT"), "{line}");
        }
        assert_eq!(
            hint(parse_input("/msg ca|rol hi")),
            "! \"ca|rol\" is not a valid name: it contains \"|\" (use 1 to 32 of A-Z a-z 0-9 _ . -)"
        );
        assert_eq!(
            hint(parse_input("/msg #rust hi")),
            "! /msg is for users: to talk in #rust, use /say #rust TEXT"
        );
    }

    #[test]
    fn to_names_a_user_or_room_target() {
        assert_eq!(
            parse_input("/to bob"),
            Action::To(Target::User("bob".to_owned()))
        );
        assert_eq!(
            parse_input("/to #rust "),
            Action::To(Target::Room("rust".to_owned()))
        );
        assert_eq!(parse_input("/to"), Action::ShowTarget);
        assert_eq!(parse_input("/to   "), Action::ShowTarget);
        assert_eq!(
            hint(parse_input("/to bob carol")),
            "! \"bob carol\" is not a valid name: it contains a space (use 1 to 32 of A-Z a-z 0-9 _ . -)"
        );
        assert!(is_hint(&parse_input("/to b|b")));
        assert_eq!(
            hint(parse_input("/to #")),
            "! \"#\" is not a valid room name: it is empty (use 1 to 32 of A-Z a-z 0-9 _ . -)"
        );
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse_input("/who"), send(&[Request::Who]));
        assert_eq!(parse_input("/rooms"), send(&[Request::Rooms]));
        assert_eq!(parse_input("/help"), Action::Help);
        assert_eq!(parse_input("/who bob"), usage("/who"));
        assert_eq!(parse_input("/rooms all"), usage("/rooms"));
    }

    #[test]
    fn room_commands_accept_an_optional_hash() {
        for line in ["/join rust", "/join #rust", "/join   #rust  "] {
            assert_eq!(parse_input(line), send(&[Request::Join { room: "rust" }]));
        }
        for line in ["/leave rust", "/leave #rust"] {
            assert_eq!(parse_input(line), send(&[Request::Leave { room: "rust" }]));
        }
        for line in ["/names rust", "/names #rust"] {
            assert_eq!(parse_input(line), send(&[Request::Names { room: "rust" }]));
        }
        for line in ["/say rust hi all", "/say #rust hi all"] {
            assert_eq!(parse_input(line), send(&[say("rust", "hi all")]));
        }
        for verb in ["join", "leave", "names"] {
            let form = format!("/{verb} ROOM");
            assert_eq!(parse_input(&format!("/{verb}")), usage(&form));
            assert_eq!(parse_input(&format!("/{verb}  ")), usage(&form));
        }
        assert_eq!(parse_input("/say rust"), usage("/say ROOM TEXT"));
        assert_eq!(parse_input("/say"), usage("/say ROOM TEXT"));
    }

    /// A bad room name is explained, not answered with a usage line.
    #[test]
    fn a_bad_room_name_says_what_is_wrong() {
        let rule = "(use 1 to 32 of A-Z a-z 0-9 _ . -)";
        let cases = [
            ("/join bad name", "\"bad name\"", "it contains a space"),
            ("/join #bad name", "\"#bad name\"", "it contains a space"),
            ("/leave a\tb", "\"a\tb\"", "it contains white space"),
            ("/join ##rust", "\"##rust\"", "it contains \"#\""),
            ("/names r|ust", "\"r|ust\"", "it contains \"|\""),
            ("/join café", "\"café\"", "it contains \"é\""),
            ("/say r,s hi", "\"r,s\"", "it contains \",\""),
        ];
        for (line, name, why) in cases {
            assert_eq!(
                hint(parse_input(line)),
                format!("! {name} is not a valid room name: {why} {rule}"),
                "{line}"
            );
        }
        let long = "x".repeat(33);
        assert_eq!(
            hint(parse_input(&format!("/join {long}"))),
            format!(
                "! \"{long}\" is not a valid room name: it is 33 characters long, and the most is 32 {rule}"
            )
        );
    }

    #[test]
    fn name_problems_in_words() {
        assert_eq!(name_problem("rust"), None);
        assert_eq!(name_problem("a-b_c.9"), None);
        assert_eq!(name_problem("").as_deref(), Some("it is empty"));
        assert_eq!(
            name_problem("a\u{7}").as_deref(),
            Some("it contains the control character U+0007")
        );
    }

    #[test]
    fn the_help_fits_an_80_column_terminal_and_names_every_command() {
        for line in HELP {
            assert!(line.chars().count() < 80, "{line}");
        }
        let help = HELP.join("\n");
        for command in [
            "/msg", "/to", "/who", "/join", "/leave", "/say", "/names", "/rooms", "/quit", "Ctrl-C",
        ] {
            assert!(help.contains(command), "{command} is not in the help");
        }
    }

    #[test]
    fn unknown_commands_are_a_hint() {
        for line in ["/dance", "/MSG bob hi", "/ who"] {
            let action = parse_input(line);
            assert!(is_hint(&action), "{line}: {action:?}");
        }
        assert_eq!(
            parse_input("/dance now"),
            Action::Hint("! unknown command /dance: try /help".to_owned())
        );
    }

    /// A bracketed paste arrives as one string with its line breaks: each line is its own
    /// message to the same place, and none of them can become a command on the wire.
    #[test]
    fn a_pasted_text_is_one_message_per_line() {
        assert_eq!(
            parse_input("hello\njoin|secret"),
            plain(&["hello", "join|secret"])
        );
        assert_eq!(
            parse_input("p1 first\r\np2 second\r"),
            plain(&["p1 first", "p2 second"])
        );
        // A lone carriage return breaks a line too, as it does on a terminal.
        assert_eq!(parse_input("a\rb"), plain(&["a", "b"]));
        // Blank lines are skipped; indentation is kept; later lines are taken literally.
        assert_eq!(
            parse_input("\n//first\n\n  /join x\n//y\n"),
            plain(&["/first", "  /join x", "//y"])
        );
        assert_eq!(
            parse_input("/msg bob a\nb"),
            send(&[talk("bob", "a"), talk("bob", "b")])
        );
        assert_eq!(
            parse_input("/msg bob\na\n\nb"),
            send(&[talk("bob", "a"), talk("bob", "b")])
        );
        assert_eq!(
            parse_input("/say #rust one\r\n/quit"),
            send(&[say("rust", "one"), say("rust", "/quit")])
        );
    }

    #[test]
    fn other_commands_must_stand_alone() {
        for input in [
            "/join rust\nhello",
            "/to bob\nhi",
            "exit\nhello",
            "/quit\n/quit",
            "/who\n/who",
            "/help\nx",
        ] {
            assert_eq!(
                hint(parse_input(input)),
                "! a command must be on a line of its own: nothing was sent",
                "{input:?}"
            );
        }
    }

    proptest! {
        /// Whatever is typed or pasted, nothing this module hands the encoder holds a line
        /// break: every request is exactly one line on the wire.
        #[test]
        fn no_field_ever_holds_a_line_break(
            input in "((/msg b |/say r |/join |/to |//|exit|x|#|\\||  )[a-z \\r\\n]{0,6}){0,6}"
        ) {
            let texts: Vec<&str> = match parse_input(&input) {
                Action::Plain(texts) => texts,
                Action::Send(requests) => requests.iter().flat_map(fields).collect(),
                Action::To(Target::User(name) | Target::Room(name)) => {
                    prop_assert!(is_valid_name(&name));
                    vec![]
                }
                _ => vec![],
            };
            for text in texts {
                prop_assert!(!text.contains(['\r', '\n']), "{text:?} from {input:?}");
                prop_assert!(!text.trim().is_empty(), "a blank message from {input:?}");
            }
        }
    }
}
