//! The fault tests' seeded generator: the one raft uses, with the shapes the
//! scenarios ask for, so every fault run replays from its seed.

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
    pub fn below(&mut self, bound: u32) -> u32 {
        self.0.below(u64::from(bound)) as u32
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.0.chance(u64::from(percent), 100)
    }
}
