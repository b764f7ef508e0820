//! Accounts in the store (migration 0002's `accounts` table): a folded name, the spelling it was
//! registered with, and an argon2id PHC string — never a password. The same operations on both
//! backends, used by the server (through the writer's queue, see [`super::StoreHandle`]) and by
//! the operator's `actor-chat-server account …` commands (on a [`Store`] of their own).
//!
//! `last_read_id` and `messages.recipient_key` belong to offline delivery and are not touched
//! here.

use sqlx::Row;

use super::{now_ms, Store, StoreError};
use crate::codec::fold_name;

/// An account as login needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as registered.
    pub name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a password, but it is what an offline guesser needs: never logged.
        f.debug_struct("Account")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An account as `account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub name: String,
    /// When it was made: milliseconds since the Unix epoch, UTC.
    pub created_at_ms: i64,
}

/// Runs one statement with the same binds on either backend (`$sqlite` and `$postgres` differ
/// only in their placeholders) and reads its result with `$read`, in each backend's own types.
macro_rules! on_both {
    (
        $store:expr, $sqlite:literal, $postgres:literal,
        |$query:ident| $bind:expr, $run:ident, |$result:ident| $read:expr
    ) => {
        match $store {
            Store::Sqlite(pool) => {
                let $query = sqlx::query($sqlite);
                let $result = $bind.$run(pool).await?;
                $read
            }
            Store::Postgres(pool) => {
                let $query = sqlx::query($postgres);
                let $result = $bind.$run(pool).await?;
                $read
            }
        }
    };
}

impl Store {
    /// Makes the account `name` with the PHC string `password_hash`; `false` if the name (in
    /// any spelling) is registered already.
    pub async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let key = fold_name(name);
        let done: u64 = on_both!(
            self,
            "INSERT INTO accounts (name_key, name, password_hash, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name_key) DO NOTHING",
            "INSERT INTO accounts (name_key, name, password_hash, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name_key) DO NOTHING",
            |query| query
                .bind(&*key)
                .bind(name)
                .bind(password_hash)
                .bind(now_ms()),
            execute,
            |done| done.rows_affected()
        );
        Ok(done == 1)
    }

    /// The account registered as `name` (any spelling), if there is one.
    pub async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let key = fold_name(name);
        let account: Result<Option<Account>, sqlx::Error> = on_both!(
            self,
            "SELECT name, password_hash FROM accounts WHERE name_key = ?1",
            "SELECT name, password_hash FROM accounts WHERE name_key = $1",
            |query| query.bind(&*key),
            fetch_optional,
            |row| row
                .map(|row| {
                    Ok(Account {
                        name: row.try_get("name")?,
                        password_hash: row.try_get("password_hash")?,
                    })
                })
                .transpose()
        );
        Ok(account?)
    }

    /// Replaces the PHC string of `name`'s account; `false` if there is no such account.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let key = fold_name(name);
        let done: u64 = on_both!(
            self,
            "UPDATE accounts SET password_hash = ?1 WHERE name_key = ?2",
            "UPDATE accounts SET password_hash = $1 WHERE name_key = $2",
            |query| query.bind(password_hash).bind(&*key),
            execute,
            |done| done.rows_affected()
        );
        Ok(done == 1)
    }

    /// Deletes `name`'s account; `false` if there was none.
    pub async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let key = fold_name(name);
        let done: u64 = on_both!(
            self,
            "DELETE FROM accounts WHERE name_key = ?1",
            "DELETE FROM accounts WHERE name_key = $1",
            |query| query.bind(&*key),
            execute,
            |done| done.rows_affected()
        );
        Ok(done == 1)
    }

    /// Every account, by folded name.
    pub async fn accounts(&self) -> Result<Vec<AccountSummary>, StoreError> {
        let accounts: Result<Vec<AccountSummary>, sqlx::Error> = on_both!(
            self,
            "SELECT name, created_at_ms FROM accounts ORDER BY name_key",
            "SELECT name, created_at_ms FROM accounts ORDER BY name_key",
            |query| query,
            fetch_all,
            |rows| rows
                .iter()
                .map(|row| {
                    Ok(AccountSummary {
                        name: row.try_get("name")?,
                        created_at_ms: row.try_get("created_at_ms")?,
                    })
                })
                .collect()
        );
        Ok(accounts?)
    }

    /// The folded names of every account: the registered names the server reserves.
    pub async fn account_keys(&self) -> Result<Vec<String>, StoreError> {
        let keys: Result<Vec<String>, sqlx::Error> = on_both!(
            self,
            "SELECT name_key FROM accounts",
            "SELECT name_key FROM accounts",
            |query| query,
            fetch_all,
            |rows| rows.iter().map(|row| row.try_get("name_key")).collect()
        );
        Ok(keys?)
    }
}
