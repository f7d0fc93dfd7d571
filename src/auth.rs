//! Authentication and authorisation: users, roles, permissions on key ranges,
//! and tokens.
//!
//! Must not touch: sockets or files; its state changes only by applying
//! committed entries.
