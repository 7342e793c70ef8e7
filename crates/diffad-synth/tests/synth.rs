//! The synthesizer: blending, labels, determinism, options and errors.

use std::sync::Arc;

use candle_core::Device;
use diffad_synth::{
    blend, procedural_texture, AnomalySynthesizer, AugmenterKind, AutoForeground, EmptyMaskPolicy,
    Error, ForegroundMode, InMemoryTextures, MaskConfig, PatternKind, Plane, ProceduralTextures,
    RgbImage, SelfAugmentation, SynthConfig, TextureSource,
};

fn normals(n: usize, h: usize, w: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| {
            let kind = PatternKind::ALL[i % 4];
            RgbImage::from_rgb8(&procedural_texture(kind, h, w, 100 + i as u64).unwrap()).unwrap()
        })
        .collect()
}

fn synth(config: SynthConfig, source: Arc<dyn TextureSource>) -> AnomalySynthesizer {
    AnomalySynthesizer::new(config, source, 42).unwrap()
}

#[test]
fn blend_formula_is_exact_on_hand_made_values() {
    // 1x2 image: pixel 0 outside the mask, pixel 1 inside.
    let x = RgbImage::from_hwc(1, 2, vec![0.5, 0.25, 1.0, 0.5, 0.25, 1.0]).unwrap();
    let t = RgbImage::from_hwc(1, 2, vec![0.0, 1.0, 0.5, 0.25, 1.0, 0.0]).unwrap();
    let m = Plane::from_vec(1, 2, vec![0.0, 1.0]).unwrap();
    let out = blend(&x, &t, &m, 0.5).unwrap();
    // Outside: x. Inside: (1 - 0.5) T + 0.5 x.
    assert_eq!(out.as_hwc(), &[0.5, 0.25, 1.0, 0.375, 0.625, 0.5]);
    // beta = 0: the texture replaces the image inside the mask.
    let out = blend(&x, &t, &m, 0.0).unwrap();
    assert_eq!(out.as_hwc(), &[0.5, 0.25, 1.0, 0.25, 1.0, 0.0]);
    // beta = 0.75 (exact in binary): 0.25 T + 0.75 x.
    let out = blend(&x, &t, &m, 0.75).unwrap();
    assert_eq!(out.as_hwc(), &[0.5, 0.25, 1.0, 0.4375, 0.4375, 0.75]);
    // Size mismatch is a typed error.
    let small = Plane::from_vec(1, 1, vec![1.0]).unwrap();
    assert!(matches!(
        blend(&x, &t, &small, 0.5),
        Err(Error::SizeMismatch { .. })
    ));
}

#[test]
fn anomalous_samples_follow_the_blend_and_labels_match_masks() {
    let config = SynthConfig {
        rotate_normal_probability: 0.0,
        ..SynthConfig::default()
    };
    let s = synth(config, Arc::new(ProceduralTextures::default()));
    let imgs = normals(4, 32, 32);
    let mut anomalous = 0;
    let total = 200;
    for i in 0..total {
        let img = &imgs[i % 4];
        let sample = s.synthesize_indexed(img, None, 0, i as u64).unwrap();
        assert_eq!(&sample.normal, img);
        let on = sample.mask.as_slice().iter().filter(|&&v| v == 1.0).count();
        assert!(sample.mask.as_slice().iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!(sample.label, if on > 0 { 1.0 } else { 0.0 });
        if sample.label == 0.0 {
            assert_eq!(sample.augmented, sample.normal);
            continue;
        }
        anomalous += 1;
        let beta = sample.beta.unwrap();
        assert!((0.0..0.8).contains(&beta));
        assert_eq!(sample.augmenters.len(), 3);
        let t = RgbImage::from_rgb8(sample.texture.as_ref().unwrap()).unwrap();
        let expected = blend(img, &t, &sample.mask, beta).unwrap();
        assert_eq!(sample.augmented, expected);
    }
    // P(anomalous) = 0.5 x P(non-empty mask) ~ 0.47; 200 draws: sd ~ 0.035.
    let frac = anomalous as f64 / total as f64;
    assert!((0.33..0.62).contains(&frac), "anomalous fraction {frac}");
}

fn batch_values(s: &AnomalySynthesizer, imgs: &[RgbImage], threads: usize) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let batch = pool
        .install(|| s.synthesize_batch(imgs, None, 3, 1000, &Device::Cpu))
        .unwrap();
    [&batch.augmented, &batch.mask, &batch.normal]
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .chain(std::iter::once(batch.label.to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn batches_are_bit_identical_across_thread_counts() {
    let imgs = normals(8, 32, 32);
    let sources: [Arc<dyn TextureSource>; 2] = [
        Arc::new(ProceduralTextures::default()),
        Arc::new(SelfAugmentation::default()),
    ];
    for source in sources {
        let s = synth(SynthConfig::default(), source);
        let one = batch_values(&s, &imgs, 1);
        let two = batch_values(&s, &imgs, 2);
        assert_eq!(one, two);
        // Same (seed, epoch, index) as the per-sample API.
        let sample = s.synthesize_indexed(&imgs[5], None, 3, 1005).unwrap();
        let plane = 3 * 32 * 32;
        assert_eq!(
            &one[0][5 * plane..6 * plane],
            &sample.augmented.to_chw()[..]
        );
        assert_eq!(one[3][5], sample.label);
    }
}

#[test]
fn different_epochs_and_seeds_give_different_batches() {
    let imgs = normals(4, 32, 32);
    let config = SynthConfig {
        anomaly_probability: 1.0,
        ..SynthConfig::default()
    };
    let s = synth(config.clone(), Arc::new(ProceduralTextures::default()));
    let a = s.synthesize_samples(&imgs, None, 0, 0).unwrap();
    let b = s.synthesize_samples(&imgs, None, 1, 0).unwrap();
    let c = AnomalySynthesizer::new(config, Arc::new(ProceduralTextures::default()), 43)
        .unwrap()
        .synthesize_samples(&imgs, None, 0, 0)
        .unwrap();
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, s.synthesize_samples(&imgs, None, 0, 0).unwrap());
}

#[test]
fn batch_tensors_have_the_documented_shapes_and_ranges() {
    let imgs = normals(3, 24, 40);
    let s = synth(
        SynthConfig::default(),
        Arc::new(ProceduralTextures::default()),
    );
    let batch = s.synthesize_batch(&imgs, None, 0, 0, &Device::Cpu).unwrap();
    assert_eq!(batch.augmented.dims(), &[3, 3, 24, 40]);
    assert_eq!(batch.normal.dims(), &[3, 3, 24, 40]);
    assert_eq!(batch.mask.dims(), &[3, 1, 24, 40]);
    assert_eq!(batch.label.dims(), &[3]);
    let v = batch
        .augmented
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
}

#[test]
fn foreground_masks_restrict_the_anomaly() {
    let imgs = normals(1, 32, 32);
    let config = SynthConfig {
        anomaly_probability: 1.0,
        rotate_normal_probability: 0.0,
        ..SynthConfig::default()
    };
    let s = synth(config, Arc::new(ProceduralTextures::default()));
    // Left half only.
    let fg = Plane::from_vec(
        32,
        32,
        (0..32 * 32)
            .map(|i| if i % 32 < 16 { 1.0 } else { 0.0 })
            .collect(),
    )
    .unwrap();
    for i in 0..40 {
        let sample = s.synthesize_indexed(&imgs[0], Some(&fg), 0, i).unwrap();
        for (k, &m) in sample.mask.as_slice().iter().enumerate() {
            if k % 32 >= 16 {
                assert_eq!(m, 0.0);
            }
        }
    }
    // An empty foreground means every sample is normal.
    let empty = Plane::filled(32, 32, 0.0).unwrap();
    for i in 0..10 {
        let sample = s.synthesize_indexed(&imgs[0], Some(&empty), 0, i).unwrap();
        assert_eq!(sample.label, 0.0);
    }
}

#[test]
fn auto_foreground_finds_an_object_on_a_plain_background() {
    // A grey background with a red disc in the middle.
    let (h, w) = (40, 40);
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let inside = (y as f32 - 19.5).powi(2) + (x as f32 - 19.5).powi(2) < 100.0;
            data.extend_from_slice(if inside {
                &[0.9, 0.1, 0.1]
            } else {
                &[0.5, 0.5, 0.5]
            });
        }
    }
    let img = RgbImage::from_hwc(h, w, data).unwrap();
    let fg = diffad_synth::auto_foreground(&img, &AutoForeground::default()).unwrap();
    let cov = fg.coverage();
    let disc = std::f64::consts::PI * 100.0 / (40.0 * 40.0);
    assert!((cov - disc).abs() < 0.02, "coverage {cov} vs disc {disc}");
    assert_eq!(fg.as_slice()[20 * 40 + 20], 1.0);
    assert_eq!(fg.as_slice()[0], 0.0);
    // Through the config: anomalies only on the disc.
    let config = SynthConfig {
        anomaly_probability: 1.0,
        rotate_normal_probability: 0.0,
        foreground: ForegroundMode::Auto(AutoForeground::default()),
        ..SynthConfig::default()
    };
    let s = synth(config, Arc::new(ProceduralTextures::default()));
    for i in 0..20 {
        let sample = s.synthesize_indexed(&img, None, 0, i).unwrap();
        for (m, f) in sample.mask.as_slice().iter().zip(fg.as_slice()) {
            assert!(*m <= *f);
        }
    }
}

#[test]
fn empty_mask_policy_retry_reduces_empty_masks() {
    let imgs = normals(1, 32, 32);
    let mut config = SynthConfig {
        anomaly_probability: 1.0,
        rotate_normal_probability: 0.0,
        ..SynthConfig::default()
    };
    let count_normal = |config: &SynthConfig| {
        let s = synth(
            config.clone(),
            Arc::new(ProceduralTextures::new(vec![PatternKind::Checks]).unwrap()),
        );
        (0..300)
            .filter(|&i| s.synthesize_indexed(&imgs[0], None, 0, i).unwrap().label == 0.0)
            .count()
    };
    let keep = count_normal(&config);
    config.empty_mask = EmptyMaskPolicy::Retry { max_retries: 10 };
    let retry = count_normal(&config);
    // DRAEM leaves ~5% of anomalous draws empty; ten retries leave ~0.
    assert!(keep >= 5, "keep-as-normal gave {keep} empty of 300");
    assert_eq!(retry, 0);
    // A threshold no noise reaches: every retry fails and the sample is normal.
    config.mask.threshold = 2.0;
    assert_eq!(count_normal(&config), 300);
}

#[test]
fn normal_rotation_rotates_the_target_too() {
    let imgs = normals(1, 32, 32);
    let config = SynthConfig {
        anomaly_probability: 0.0,
        rotate_normal_probability: 1.0,
        ..SynthConfig::default()
    };
    let s = synth(config, Arc::new(ProceduralTextures::default()));
    let sample = s.synthesize_indexed(&imgs[0], None, 0, 0).unwrap();
    assert_ne!(sample.normal, imgs[0]);
    assert_eq!(sample.augmented, sample.normal);
    assert_eq!(sample.label, 0.0);
}

#[test]
fn invalid_settings_and_inputs_are_typed_errors() {
    let src: Arc<dyn TextureSource> = Arc::new(ProceduralTextures::default());
    let bad =
        |config: SynthConfig, field: &str| match AnomalySynthesizer::new(config, src.clone(), 0) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig({field}), got {other:?}"),
        };
    bad(
        SynthConfig {
            anomaly_probability: 1.5,
            ..Default::default()
        },
        "anomaly_probability",
    );
    bad(
        SynthConfig {
            anomaly_probability: f32::NAN,
            ..Default::default()
        },
        "anomaly_probability",
    );
    bad(
        SynthConfig {
            rotate_normal_probability: -0.1,
            ..Default::default()
        },
        "rotate_normal_probability",
    );
    bad(
        SynthConfig {
            beta_max: 2.0,
            ..Default::default()
        },
        "beta_max",
    );
    bad(
        SynthConfig {
            mask: MaskConfig {
                min_scale_exponent: 4,
                max_scale_exponent: 2,
                ..Default::default()
            },
            ..Default::default()
        },
        "scale exponents",
    );
    bad(
        SynthConfig {
            augmenters: vec![AugmenterKind::Invert],
            ..Default::default()
        },
        "augmenters_per_sample",
    );

    let s = synth(SynthConfig::default(), src.clone());
    assert!(matches!(
        s.synthesize_samples(&[], None, 0, 0),
        Err(Error::EmptyBatch)
    ));
    let mut imgs = normals(2, 16, 16);
    imgs.push(normals(1, 16, 20).remove(0));
    match s.synthesize_samples(&imgs, None, 0, 0) {
        Err(Error::SizeMismatch {
            index, found_width, ..
        }) => {
            assert_eq!((index, found_width), (2, 20))
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert!(matches!(
        RgbImage::from_hwc(0, 5, vec![]),
        Err(Error::ZeroSizedImage {
            height: 0,
            width: 5
        })
    ));
    assert!(matches!(
        RgbImage::from_hwc(2, 2, vec![0.0; 11]),
        Err(Error::BufferLength {
            expected: 12,
            found: 11,
            ..
        })
    ));
    let nan = RgbImage::from_hwc(1, 1, vec![f32::NAN, 0.0, 0.0]).unwrap();
    assert!(matches!(
        s.synthesize_indexed(&nan, None, 0, 0),
        Err(Error::NonFinite(_))
    ));
    assert!(matches!(
        InMemoryTextures::new(vec![]),
        Err(Error::EmptyTextureFolder { .. })
    ));
}

#[test]
fn image_conversions_round_trip() {
    let img = normals(1, 9, 7).remove(0);
    let rgb = img.to_rgb8();
    assert_eq!(RgbImage::from_rgb8(&rgb).unwrap(), img);
    let chw = img.to_chw();
    assert_eq!(RgbImage::from_chw(9, 7, &chw).unwrap(), img);
    let t = img.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 9, 7]);
    assert_eq!(RgbImage::from_tensor(&t).unwrap(), img);
    assert!(matches!(
        RgbImage::from_tensor(&t.flatten_all().unwrap()),
        Err(Error::TensorShape(_))
    ));
    // Rotation by 0 is the identity; resizing to the same size too.
    assert_eq!(img.rotated(0.0), img);
    assert_eq!(img.resize(9, 7).unwrap(), img);
    assert_eq!(img.resize(18, 14).unwrap().height(), 18);
}
