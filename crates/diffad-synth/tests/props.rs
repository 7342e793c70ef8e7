//! Property tests: masks are binary, x_a stays in [0, 1] and equals x outside
//! the mask, Perlin noise is bounded, for arbitrary sizes and seeds.

use std::sync::Arc;

use diffad_synth::{
    anomaly_mask, rand_perlin_2d, AnomalySynthesizer, MaskConfig, ProceduralTextures, RgbImage,
    SelfAugmentation, SynthConfig, TextureSource,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn masks_are_binary(h in 1usize..48, w in 1usize..48, seed in any::<u64>(), kmax in 0u32..6) {
        let config = MaskConfig { max_scale_exponent: kmax, ..MaskConfig::default() };
        let m = anomaly_mask(h, w, &config, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        prop_assert_eq!((m.height(), m.width()), (h, w));
        prop_assert!(m.as_slice().iter().all(|&v| v == 0.0 || v == 1.0));
    }

    #[test]
    fn perlin_is_bounded(h in 1usize..40, w in 1usize..40, r0 in 1usize..9, r1 in 1usize..9, seed in any::<u64>()) {
        let p = rand_perlin_2d(h, w, (r0, r1), &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        prop_assert!(p.as_slice().iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-5));
    }

    #[test]
    fn augmented_stays_in_unit_range(
        h in 2usize..33,
        w in 2usize..33,
        seed in any::<u64>(),
        pixels in proptest::collection::vec(0.0f32..=1.0, 3),
        self_aug in any::<bool>(),
    ) {
        // A smooth image from three random corner values.
        let data: Vec<f32> = (0..h * w)
            .flat_map(|i| {
                let (y, x) = ((i / w) as f32 / h as f32, (i % w) as f32 / w as f32);
                [pixels[0] * x, pixels[1] * y, pixels[2] * (1.0 - x * y)]
            })
            .collect();
        let img = RgbImage::from_hwc(h, w, data).unwrap();
        let source: Arc<dyn TextureSource> = if self_aug {
            Arc::new(SelfAugmentation::default())
        } else {
            Arc::new(ProceduralTextures::default())
        };
        let config = SynthConfig { anomaly_probability: 1.0, ..SynthConfig::default() };
        let s = AnomalySynthesizer::new(config, source, seed).unwrap();
        let sample = s.synthesize_indexed(&img, None, 0, 0).unwrap();
        prop_assert!(sample.augmented.as_hwc().iter().all(|v| (0.0..=1.0).contains(v)));
        prop_assert!(sample.mask.as_slice().iter().all(|&v| v == 0.0 || v == 1.0));
        for ((a, n), &m) in sample
            .augmented
            .as_hwc()
            .chunks_exact(3)
            .zip(sample.normal.as_hwc().chunks_exact(3))
            .zip(sample.mask.as_slice())
        {
            if m == 0.0 {
                prop_assert_eq!(a, n);
            }
        }
    }
}
