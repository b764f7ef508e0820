//! The terminal client (being written).
