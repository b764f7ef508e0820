//! Why the client stopped early.
//!
//! Each error displays as the one sentence printed on stderr: a person reads it, so it says
//! what happened in words, without an errno or a debug dump.

use std::io;

use rustyline::error::ReadlineError;

use super::input::NAME_RULE;
use crate::codec::ByeReason;

/// Why the client stopped early; each displays as the one sentence shown on stderr.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("\"{0}\" is not a valid name: {rule}", rule = NAME_RULE)]
    InvalidName(String),
    #[error("cannot start: {0}")]
    Runtime(io::Error),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("cannot connect to {server} over TLS: {reason}")]
    Tls { server: String, reason: String },
    #[error("the certificate of {server} is not accepted: {reason}")]
    Certificate { server: String, reason: String },
    #[error("no answer from {0} to the login")]
    LoginTimeout(String),
    #[error("the name \"{0}\" is already taken")]
    NameTaken(String),
    #[error("the server does not accept the name \"{0}\"")]
    NameRefused(String),
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    #[error(
        "the name \"{0}\" is registered and needs its password: give it with --password-stdin, \
         or run the client on a terminal to be asked for it"
    )]
    PasswordRequired(String),
    #[error("wrong password for \"{0}\"")]
    BadPassword(String),
    #[error(
        "too many wrong passwords for this name or from this address: wait a little and try again"
    )]
    Throttled,
    #[error(
        "the server takes passwords only over TLS from another machine: connect with --tls (and \
         change the password if others may have seen it)"
    )]
    TlsRequired,
    #[error("{}", refusal(*.0))]
    Refused(Option<ByeReason>),
    #[error("the server closed the connection before the login completed")]
    ClosedBeforeLogin,
    #[error("the server closed the connection unexpectedly")]
    Closed,
    #[error("lost the connection to the server: {}", describe_io(.0))]
    Lost(io::Error),
    #[error("the server did not confirm the exit; some lines may not have been delivered")]
    NoBye,
    /// A refused login after a reconnect: the same answer would come every time.
    #[error("could not log in again after reconnecting: {0}")]
    Relogin(Box<ClientError>),
    #[error("cannot use the terminal: {0}")]
    Terminal(ReadlineError),
}

/// A `bye` in answer to the login: full and shutting down are worth their own advice.
fn refusal(reason: Option<ByeReason>) -> String {
    match reason {
        Some(ByeReason::ServerFull) => "the server is full; try again later".to_owned(),
        Some(ByeReason::Shutdown) => "the server is shutting down".to_owned(),
        Some(reason) => format!("the server closed the connection: {reason}"),
        None => "the server closed the connection".to_owned(),
    }
}

/// `Connection refused (os error 111)` reads better without its errno.
pub(crate) fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_sentence_without_errno() {
        let refused = io::Error::from_raw_os_error(111);
        let err = ClientError::Connect {
            server: "127.0.0.1:9999".to_owned(),
            reason: describe_io(&refused),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot connect to 127.0.0.1:9999: "),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
        assert_eq!(
            ClientError::NameTaken("bob".to_owned()).to_string(),
            "the name \"bob\" is already taken"
        );
        assert_eq!(
            ClientError::Relogin(Box::new(ClientError::NameTaken("alice".to_owned()))).to_string(),
            "could not log in again after reconnecting: the name \"alice\" is already taken"
        );
        assert_eq!(
            ClientError::Refused(Some(ByeReason::ServerFull)).to_string(),
            "the server is full; try again later"
        );
    }
}
