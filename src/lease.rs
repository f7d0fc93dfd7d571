//! Leases: the lease table, time-to-live and expiry of the keys attached to a
//! lease.
//!
//! Must not touch: sockets or files. Expiry is driven by the leader's clock
//! through proposals, so applying the log stays deterministic.
