//! The one seeding scheme of the pipeline.
//!
//! Every random draw of a run derives from the configuration's `seed` through
//! [`mix`] (`diffad_diffusion::noise::mix_seed`, a SplitMix64-style bijective
//! mix of `seed + salt * golden_ratio`): a stream is `mix(seed, SALT)`, and a
//! per-epoch or per-batch stream mixes the stream with the epoch. Distinct
//! salts give statistically independent streams, so adding a draw to one stage
//! never shifts the numbers of another, and the stage crates seed every sample
//! from `(stream, epoch, index)`, so results do not depend on batching or on
//! the number of threads.
//!
//! The salts are the ASCII bytes of a short name, so a salt reads as what it
//! separates.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `"vae"`: the VAE's initial weights and the VAE trainer's seed (batch
/// order, posterior samples).
pub const VAE: u64 = 0x0076_6165;
/// `"ldm"`: the denoiser's initial weights and its training draws
/// (timesteps `t`, `t_c`, noises `eps` and `eps'`).
pub const LDM: u64 = 0x006c_646d;
/// `"synt"`: the DRAEM anomalies `(x_a, M)` the LDM stage conditions on.
pub const SYNTH: u64 = 0x7379_6e74;
/// `"segs"`: the DRAEM anomalies `(x_a, M)` the segmenter trains on, a stream
/// of its own so that the segmenter never sees exactly the anomalies the LDM
/// was fitted to (epoch `e`, image `i` differ between the two stages).
pub const SEG_SYNTH: u64 = 0x7365_6773;
/// `"vali"`: which good images are held out for the thresholds, and the
/// synthetic anomalies pasted on copies of them.
pub const VALIDATION: u64 = 0x7661_6c69;
/// `"seg"`: the segmenter trainer's seed (initial weights, batch order).
pub const SEG: u64 = 0x0073_6567;
/// `"shuf"`: the order in which the LDM stage visits the good images.
pub const SHUFFLE: u64 = 0x7368_7566;
/// `"reco"`: the reverse-process noise of the DDIM reconstructions (the
/// segmenter's training data and inference).
pub const RECONSTRUCTION: u64 = 0x7265_636f;

/// The stream `salt` of `seed` (see the module documentation).
pub fn mix(seed: u64, salt: u64) -> u64 {
    diffad_diffusion::noise::mix_seed(seed, salt)
}

/// The image order of `epoch`: a shuffle seeded by `(seed, SHUFFLE, epoch)`.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(seed, SHUFFLE), epoch));
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_distinct_and_streams_differ() {
        let salts = [
            VAE,
            LDM,
            SYNTH,
            SEG_SYNTH,
            VALIDATION,
            SEG,
            SHUFFLE,
            RECONSTRUCTION,
        ];
        for (i, a) in salts.iter().enumerate() {
            for b in &salts[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(mix(7, *a), mix(7, *b));
            }
        }
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(3, 1, 10);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(3, 1, 10));
        assert_ne!(a, epoch_order(3, 2, 10));
    }
}
