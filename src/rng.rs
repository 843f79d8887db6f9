//! Seeded random streams. Every random draw of a replica (initial weights, batch order,
//! random masks) comes from its own ChaCha20 stream keyed by (seed, purpose, index), never from
//! torch's global generator, so a replica's draws do not depend on which other replicas share
//! its population.
//!
//! Key layout (32 bytes): seed (u64 LE) | FNV-1a 64 of the purpose tag (u64 LE) |
//! index (u64 LE) | zeros.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// What a stream is used for; each purpose gets independent draws for the same seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Initial weights (index = parameter position in the layout).
    Init,
    /// Batch order (index = epoch).
    Batches,
    /// The train/validation split (index 0).
    Split,
    /// Fresh weights of a `reinit` or `random-prune` arm (index from [`arm_round_index`]).
    Reinit,
    /// Random masks of a `random-prune` arm (index from [`arm_round_index`]).
    RandomMask,
    /// Data augmentation (index = iteration).
    Augment,
    /// Training examples a pruning criterion scores on (index = the round, or the iteration
    /// of a gradual pruning step).
    Score,
    /// An `at-init` arm's mask shuffled within each tensor (index from [`arm_round_index`]).
    Shuffle,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Init => "init",
            Purpose::Batches => "batches",
            Purpose::Split => "split",
            Purpose::Reinit => "reinit",
            Purpose::RandomMask => "random-mask",
            Purpose::Augment => "augment",
            Purpose::Score => "score",
            Purpose::Shuffle => "shuffle",
        }
    }
}

/// The ChaCha20 stream for (seed, purpose, index).
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv1a64(purpose.tag().as_bytes()).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha20Rng::from_seed(key)
}

/// Stream index of an arm's round: FNV-1a 64 of the arm's name plus the round, so draws
/// depend on the arm's name, not its position in the config.
pub fn arm_round_index(arm: &str, round: u32) -> u64 {
    fnv1a64(arm.as_bytes()).wrapping_add(u64::from(round))
}

/// Stream index of parameter `param` of a draw whose base index is `base`.
pub fn param_index(base: u64, param: usize) -> u64 {
    base.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(param as u64)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A uniformly random permutation of `0..n` (Fisher-Yates driven by `rng`).
pub fn permutation(rng: &mut ChaCha20Rng, n: usize) -> Vec<u32> {
    use rand::seq::SliceRandom;
    let mut p: Vec<u32> = (0..n as u32).collect();
    p.shuffle(rng);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_differ_by_seed_purpose_and_index_and_repeat_exactly() {
        let draw = |s, p, i| stream(s, p, i).random::<u64>();
        assert_eq!(draw(1, Purpose::Init, 0), draw(1, Purpose::Init, 0));
        assert_ne!(draw(1, Purpose::Init, 0), draw(2, Purpose::Init, 0));
        assert_ne!(draw(1, Purpose::Init, 0), draw(1, Purpose::Batches, 0));
        assert_ne!(draw(1, Purpose::Init, 0), draw(1, Purpose::Init, 1));
    }

    #[test]
    fn permutation_holds_every_index_once() {
        let mut p = permutation(&mut stream(7, Purpose::Split, 0), 1000);
        assert_ne!(
            p,
            (0..1000).collect::<Vec<u32>>(),
            "a shuffle of 1000 is never the identity"
        );
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}
