//! Move-leader requests waiting for the leadership to reach their target.
//!
//! The leader asks Raft to transfer leadership (`RawNode::transfer_leader`:
//! the target is caught up, then told to campaign at once); the request is
//! answered when this member sees the target lead, and fails with etcd's
//! timeout error when it does not within `LEADER_MOVE_TIMEOUT`. Raft
//! abandons a transfer after one election timeout, so the deadline is a
//! few of them.

use std::time::{Duration, Instant};

use super::proposals::{Reply, Waiter};
use crate::proto::{ErrorBody, ErrorCode, Response, ResponseHeader};

/// Move-leader requests waiting at once; more are refused as too many
/// requests. One transfer runs at a time in Raft; a few waiting requests
/// cover operators' scripts asking again.
pub const LEADER_MOVES_MAX: usize = 8;
/// How long a move-leader request waits for the target to lead.
pub const LEADER_MOVE_TIMEOUT: Duration = Duration::from_secs(5);

struct LeaderMove {
    waiter: Waiter,
    target_id: u64,
    deadline: Instant,
}

/// Invariant: at most `LEADER_MOVES_MAX` requests wait.
#[derive(Default)]
pub struct LeaderMoves {
    pending: Vec<LeaderMove>,
}

impl LeaderMoves {
    /// A request waiting for `target_id` to lead.
    pub fn wait(&mut self, waiter: Waiter, target_id: u64, now: Instant) -> Result<(), ErrorBody> {
        if self.pending.len() >= LEADER_MOVES_MAX {
            return Err(ErrorBody::new(ErrorCode::TooManyRequests));
        }
        let deadline = now + LEADER_MOVE_TIMEOUT;
        self.pending.push(LeaderMove { waiter, target_id, deadline });
        Ok(())
    }

    /// Answers the requests whose target leads now, and those past their
    /// deadline.
    pub fn poll(&mut self, leader_id: u64, header: ResponseHeader, now: Instant) -> Vec<Reply> {
        let mut replies = Vec::new();
        self.pending.retain(|m| {
            if m.target_id == leader_id {
                replies.push((m.waiter, Ok(Response::MoveLeader(header))));
                false
            } else if now >= m.deadline {
                replies.push((m.waiter, Err(ErrorBody::new(ErrorCode::LeaderTransferTimeout))));
                false
            } else {
                true
            }
        });
        replies
    }
}
