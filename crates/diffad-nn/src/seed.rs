//! Deriving independent seeds from one seed: [`mix_seed`].
//!
//! Every random stream of DiffAD (initial weights, batch order, diffusion noise, anomaly
//! synthesis, ...) is a `ChaCha8Rng` seeded from the run's one seed and a *salt* that
//! names what the stream is for. `mix_seed(seed, salt)` turns the pair into the ChaCha
//! seed. The salts themselves are documented where they are defined (each crate's
//! seeding code and the facade's seeds module).
//!
//! ```
//! use diffad_nn::seed::mix_seed;
//!
//! // Same inputs, same seed (the function is pure).
//! assert_eq!(mix_seed(42, 1), mix_seed(42, 1));
//! // Different salts give different seeds for the same run seed.
//! assert_ne!(mix_seed(42, 1), mix_seed(42, 2));
//! ```

/// SplitMix64 step: `splitmix64(seed + (salt + 1)·γ)` with `γ = 0x9E37_79B9_7F4A_7C15`
/// (2^64 divided by the golden ratio, the SplitMix64 increment), all arithmetic modulo
/// 2^64.
///
/// It computes the `salt + 1`-th output of the SplitMix64 generator (Steele, Lea and
/// Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014) started at
/// `seed`: the Weyl sequence `seed + k·γ` passed through the SplitMix64 finaliser
/// (`z ^= z >> 30; z *= 0xBF58_476D_1CE4_E5B9; z ^= z >> 27; z *= 0x94D0_49BB_1331_11EB;
/// z ^= z >> 31`).
///
/// Why streams derived with distinct salts are independent:
///
/// * **Distinct.** For a fixed `seed`, `salt ↦ mix_seed(seed, salt)` is a bijection of
///   `u64`: `γ` is odd, so `salt ↦ (salt + 1)·γ` is a bijection modulo 2^64, and each step
///   of the finaliser (`z ^ (z >> k)`, multiplication by an odd constant) is invertible.
///   Two salts never give the same ChaCha seed. (The same holds for distinct seeds with a
///   fixed salt; the only coincidences are `mix_seed(s, k + 1) == mix_seed(s + γ, k)`,
///   i.e. run seeds `γ` apart.)
/// * **Uncorrelated.** The finaliser avalanches: flipping any input bit flips each output
///   bit with probability close to ½, so nearby seeds and salts (`0`, `1`, `2`, ...)
///   give unrelated ChaCha keys, and ChaCha8 streams under different keys are
///   indistinguishable from independent.
pub fn mix_seed(seed: u64, salt: u64) -> u64 {
    let mut z = seed
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_splitmix64() {
        // The first output of SplitMix64 seeded with 0 (reference value of the
        // published algorithm) is mix_seed(0, 0).
        assert_eq!(mix_seed(0, 0), 0xE220_A839_7B1D_CDAF);
        // Its second output is mix_seed(0, 1).
        assert_eq!(mix_seed(0, 1), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn salts_never_collide_for_a_seed() {
        let seeds: std::collections::HashSet<u64> = (0..10_000).map(|s| mix_seed(7, s)).collect();
        assert_eq!(seeds.len(), 10_000);
    }
}
