//! The two actors: [`ChatServer`] owns who is online and the rooms; a [`Session`] speaks the
//! protocol for one connection.

pub(crate) mod chat_server;
pub(crate) mod session;

pub(crate) use chat_server::ChatServer;
pub(crate) use session::{Session, SessionContext};
