//! The two actors: [`ChatServer`] owns who is online and the rooms; a [`Session`] serves one
//! connection.

pub mod chat_server;
pub mod session;

pub use chat_server::ChatServer;
pub use session::{Session, SessionContext};
