pub mod client;
pub mod codec;
pub mod config;
pub mod outbox;
