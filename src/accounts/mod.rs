//! Accounts: registered names with passwords.
//!
//! What lives where:
//!
//! * the accounts themselves are rows of the store (`src/store/accounts.rs`): a folded name, the
//!   spelling it was registered with and an argon2id PHC string;
//! * the set of registered names is held in memory by the `ChatServer`, which owns who is
//!   online: a plain `login|NAME` is checked against it without touching the database;
//! * the session runs the password work: the plaintext refusal (`tls-required`), the throttle
//!   ([`throttle`]), the store lookup and the hashing, which runs on a bounded pool off the
//!   actor threads ([`hashing`]);
//! * the operator's `actor-chat-server account …` commands ([`admin`]) work on the store
//!   directly, with no server running; a running server notices within
//!   [`REFRESH_EVERY`] (or at once on SIGHUP).
//!
//! A password is 8 to 256 bytes of text with no `|` and no control character (see
//! [`password_problem`]): no `|`, because `passwd|OLD|NEW` must be able to tell OLD from NEW.

pub mod admin;
pub mod hashing;
pub(crate) mod throttle;

use std::time::Duration;

use crate::codec::is_clean_text;

/// Shortest password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password, in bytes: argon2 takes any length, but a bound keeps the work per login
/// bounded and the line short.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// How often a running server reads the registered names again, so that an account the
/// operator added or removed (`actor-chat-server account …`, another process) takes effect.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Longest an account lookup or change may take before the answer is `store-unavailable`.
pub(crate) const STORE_WAIT: Duration = Duration::from_secs(4);

/// What is wrong with `password` as a new password, in words, or `None` if it will do.
pub fn password_problem(password: &str) -> Option<String> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Some(format!(
            "a password needs at least {MIN_PASSWORD_BYTES} bytes"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!(
            "a password may have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.contains('|') {
        return Some("a password may not contain \"|\"".to_owned());
    }
    if !is_clean_text(password) {
        return Some("a password may not contain control characters".to_owned());
    }
    None
}

/// How a session is logged in: the offline-delivery replay, `passwd` and the operator's
/// removal of an account all care which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// Under a free, unregistered name, without a password (`auth.mode = "open"`).
    Guest,
    /// To an account, with its password (`login|NAME|PASSWORD` or `register`).
    Account,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_8_to_256_bytes_of_text_without_a_bar() {
        assert!(password_problem("12345678").is_none());
        assert!(password_problem(&"x".repeat(256)).is_none());
        assert!(password_problem("correct horse battery staple").is_none());
        assert!(
            password_problem("é日本語テキ").is_none(),
            "bytes, not characters"
        );
        assert!(password_problem("1234567").is_some());
        assert!(password_problem(&"x".repeat(257)).is_some());
        assert!(password_problem("abcd|efgh").is_some());
        assert!(password_problem("abcd\u{7}efgh").is_some());
    }
}
