//! Snapshot files under `<data-dir>/snap/`.
//!
//! Owns: writing a snapshot atomically (temp file, fsync, rename, directory
//! fsync), verifying its CRC on load, loading the newest valid one and keeping
//! only the newest few.
//!
//! Must not touch: when to snapshot (the server decides) or what the payload
//! means (the state machine image is opaque bytes here).
