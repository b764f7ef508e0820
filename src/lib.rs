//! actor-chat: a chat server and terminal client built on actix.
//!
//! The server is a `ChatServer` actor that owns who is online and the rooms, plus one `Session`
//! actor per connection, speaking the protocol over a transport-agnostic `Connection`;
//! [`server::run`] wires them to a listener. The client ([`client`]) and the server share the
//! wire format in [`codec`]. docs/ARCHITECTURE.md shows how the parts fit.

pub mod accounts;
pub(crate) mod actors;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub(crate) mod connection;
pub(crate) mod flood;
pub(crate) mod metrics;
pub(crate) mod outbox;
pub(crate) mod priority;
pub mod server;
pub mod signal;
pub mod store;
pub mod tls;
pub mod web;
