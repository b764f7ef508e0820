//! actor-chat: a chat server and terminal client built on actix.
//!
//! The server is a [`ChatServer`](actors::ChatServer) actor that owns who is online and the
//! rooms, plus one [`Session`](actors::Session) actor per connection; [`server::run`] wires them
//! to a listener. The client (`client`) and the server share the wire format in [`codec`].

pub mod actors;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod flood;
pub mod outbox;
pub mod server;
pub mod signal;
