//! The operator's account commands (`actor-chat-server --config FILE account …`): library code
//! over a [`Store`] opened from the config, with no server running. A running server picks
//! the change up by itself (see [`super::REFRESH_EVERY`]); a removed account's user, if
//! online, is logged out then.

use super::{hashing, password_problem};
use crate::{
    codec::is_valid_name,
    store::{AccountSummary, Store, StoreError},
};

/// Why an account command failed; each displays as the one sentence the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("\"{0}\" is not a valid name: use 1 to 32 of A-Z a-z 0-9 _ . -")]
    BadName(String),
    #[error("that password will not do: {0}")]
    WeakPassword(String),
    #[error("the name {0} is registered already")]
    Exists(String),
    #[error("there is no account {0}")]
    NoSuchAccount(String),
    #[error("{0}")]
    Hash(#[from] hashing::HashError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Checks `name` and `password` and hashes the password.
fn checked_hash(name: &str, password: &str) -> Result<String, AdminError> {
    if !is_valid_name(name) {
        return Err(AdminError::BadName(name.to_owned()));
    }
    if let Some(problem) = password_problem(password) {
        return Err(AdminError::WeakPassword(problem));
    }
    Ok(hashing::hash_password(password)?)
}

/// `account add NAME`: registers `name` with `password`.
pub async fn add(store: &Store, name: &str, password: &str) -> Result<(), AdminError> {
    let hash = checked_hash(name, password)?;
    if store.create_account(name, &hash).await? {
        Ok(())
    } else {
        Err(AdminError::Exists(name.to_owned()))
    }
}

/// `account passwd NAME`: gives `name`'s account a new password.
pub async fn passwd(store: &Store, name: &str, password: &str) -> Result<(), AdminError> {
    let hash = checked_hash(name, password)?;
    if store.set_password(name, &hash).await? {
        Ok(())
    } else {
        Err(AdminError::NoSuchAccount(name.to_owned()))
    }
}

/// `account remove NAME`: deletes `name`'s account; the name is free again.
pub async fn remove(store: &Store, name: &str) -> Result<(), AdminError> {
    if store.remove_account(name).await? {
        Ok(())
    } else {
        Err(AdminError::NoSuchAccount(name.to_owned()))
    }
}

/// `account list`: every account, by name.
pub async fn list(store: &Store) -> Result<Vec<AccountSummary>, AdminError> {
    Ok(store.accounts().await?)
}
