//! The member's side of leases: the millisecond clock that lease deadlines
//! are kept on, the limits a grant is checked against, and the generator of
//! fresh lease ids. The lease table itself is replicated state and lives in
//! the state machine (`state`).

use std::time::Instant;

use super::config::Config;
use super::proposals::random_u64;
use crate::lease::{self, LeaseTable};

/// Random ids tried before a grant gives up: with 63-bit ids and at most a
/// million leases, a second collision in a row is already unheard of.
const FRESH_ID_ATTEMPTS: usize = 8;

/// The member's side of leases: its millisecond clock, the limits, and the
/// generator of fresh ids. The table itself is replicated state and lives
/// in the state machine.
pub struct LeaseClock {
    /// The zero of the table's millisecond clock.
    epoch: Instant,
    pub min_ttl_secs: i64,
    /// Invariant: ≥ 1.
    pub max_leases: usize,
    /// Invariant: ≥ 1; `REVOKE_RATE_PER_SEC` spread over the ticks of a second.
    pub revokes_per_tick: usize,
    /// How long an expired lease waits before its revoke is proposed again.
    pub revoke_retry_ms: u64,
    /// splitmix64 state for ids chosen here.
    rng: u64,
}

impl LeaseClock {
    pub fn new(config: &Config, now: Instant) -> LeaseClock {
        let ticks_per_sec = (1000 / config.heartbeat_interval_ms.max(1)).max(1);
        LeaseClock {
            epoch: now,
            min_ttl_secs: lease::min_ttl_secs(config.election_timeout_ms),
            max_leases: (config.max_leases as usize).max(1),
            revokes_per_tick: (lease::REVOKE_RATE_PER_SEC / ticks_per_sec).max(1) as usize,
            revoke_retry_ms: 2 * config.election_timeout_ms,
            rng: config.member_id ^ random_u64(),
        }
    }

    /// `now` on the clock the state machine's lease deadlines use.
    pub fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A positive id not in the table.
    pub fn fresh_id(&mut self, table: &LeaseTable) -> Option<i64> {
        for _ in 0..FRESH_ID_ATTEMPTS {
            let id = (splitmix64(&mut self.rng) >> 1) as i64;
            if id != 0 && !table.contains(id) {
                return Some(id);
            }
        }
        None
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_ids_differ() {
        let mut state = 7;
        let (a, b) = (splitmix64(&mut state), splitmix64(&mut state));
        assert_ne!(a, b);
    }
}
