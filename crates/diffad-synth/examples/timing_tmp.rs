use std::time::Instant;
use diffad_synth::*;
use rand::SeedableRng;
fn main() {
    for rot in [0.0f32, 90.0] {
        let cfg = MaskConfig { rotation_degrees: rot, ..MaskConfig::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let n = 3000;
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..n { std::hint::black_box(anomaly_mask(256, 256, &cfg, &mut rng).unwrap()); }
            best = best.max(n as f64 / t.elapsed().as_secs_f64());
        }
        println!("rotation {rot}: masks/s one thread: {best:.0}");
    }
}
