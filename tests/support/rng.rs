//! The seeded generator of the tests: raft's own (`ember::raft::Rng`,
//! SplitMix64), with the shapes the tests ask for: percentages, indices,
//! bytes. A test that needs only `next_u64` and `below` uses raft's type
//! directly. Either way a run replays from the seed it prints.
//!
//! Included with `#[path]` by each test that draws from it.

#![allow(dead_code)]

#[derive(Clone, Debug)]
pub struct Rng(ember::raft::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(ember::raft::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..bound`. Invariant: `bound > 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0.below(bound)
    }

    /// An index into something `len` long. Invariant: `len > 0`.
    pub fn index(&mut self, len: usize) -> usize {
        self.0.below(len as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.0.chance(percent, 100)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
