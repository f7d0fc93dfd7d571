//! Peer connections between members over mio.
//!
//! Owns: one outbound TCP connection per peer, the peer handshake, framing,
//! batched writes, bounded per-peer queues, reconnection with capped exponential
//! backoff, and streaming of snapshots in chunks.
//!
//! Must not touch: what a message means. It moves framed messages and reports
//! unreachable peers; Raft decides everything else.
