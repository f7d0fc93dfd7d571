//! Keyspace hashes at the node: a client's `HashKv`, answered once its
//! sliced hash is done (`hashes.rs`), and this member's part of the
//! corruption check.

use super::hashes::{Finished, HashFor};
use super::node::Node;
use super::proposals::Waiter;
use crate::mvcc::KvHash;
use crate::proto::{self, ErrorBody, ErrorCode, Response};
use crate::state::command;

impl Node {
    /// Begins the hash a client asked for; it is answered when done.
    pub(super) fn hash_kv_request(&mut self, waiter: Waiter, revision: i64) {
        let begun = self.state.store().begin_hash(revision.max(0) as u64);
        let started = begun
            .map_err(command::store_error)
            .and_then(|hash| self.hashes.start_client(waiter, hash));
        if let Err(refused) = started {
            self.clients.answer(waiter, Err(refused));
        }
    }

    /// One slice of the hashes in flight; answers or reports one that ended.
    pub(super) fn step_hashes(&mut self) {
        if let Some(finished) = self.hashes.step(self.state.store()) {
            self.hash_finished(finished);
        }
    }

    /// The store was replaced: every hash in flight stops.
    pub(super) fn abort_hashes(&mut self) {
        for finished in self.hashes.abort_all() {
            self.hash_finished(finished);
        }
    }

    fn hash_finished(&mut self, finished: Finished) {
        let HashFor::Client(waiter) = finished.purpose;
        let answer = match finished.hash {
            Some(hash) => Ok(self.hash_response(hash)),
            None => Err(ErrorBody::new(ErrorCode::HashAborted)),
        };
        self.clients.answer(waiter, answer);
    }

    fn hash_response(&self, hash: KvHash) -> Response {
        Response::HashKv(proto::HashKvResponse {
            header: self.header(),
            hash: hash.hash,
            compact_revision: i64::try_from(hash.compact_revision).unwrap_or(i64::MAX),
            hash_revision: i64::try_from(hash.hash_revision).unwrap_or(i64::MAX),
        })
    }
}
