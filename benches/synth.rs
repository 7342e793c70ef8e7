//! diffad-synth throughput at 256x256: Perlin masks/s (one thread, and a
//! batch on the rayon pool) and full training samples/s (mask + texture +
//! 3 augmenters + blend). Compare with `crates/diffad-synth/scripts/bench_draem_masks.py`
//! (DRAEM's NumPy mask generation); results in docs/benchmarks.md.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::sync::Arc;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diffad::synth::{
    anomaly_mask, procedural_texture, AnomalySynthesizer, AugmenterKind, InMemoryTextures,
    MaskConfig, PatternKind, ProceduralTextures, RgbImage, SelfAugmentation, SynthConfig,
    TextureSource,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const SIZE: usize = 256;
const BATCH: usize = 32;

fn normals() -> Vec<RgbImage> {
    (0..BATCH)
        .map(|i| {
            let kind = PatternKind::ALL[i % 4];
            RgbImage::from_rgb8(&procedural_texture(kind, SIZE, SIZE, i as u64).unwrap()).unwrap()
        })
        .collect()
}

fn masks(c: &mut Criterion) {
    let mut g = c.benchmark_group("synth_masks_256");
    let config = MaskConfig::default();
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_thread", |b| {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        b.iter(|| anomaly_mask(SIZE, SIZE, &config, &mut rng).unwrap())
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("rayon_batch_64", |b| {
        let mut epoch = 0u64;
        b.iter(|| {
            epoch += 1;
            (0..64u64)
                .into_par_iter()
                .map(|i| {
                    let mut rng = diffad::synth::sample_rng(0, epoch, i);
                    anomaly_mask(SIZE, SIZE, &config, &mut rng).unwrap()
                })
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

fn samples(c: &mut Criterion) {
    let imgs = normals();
    // 16 in-memory 256x256 textures: DTD preloaded (FolderOptions::preload).
    let textures = InMemoryTextures::new(
        (0..16)
            .map(|i| {
                procedural_texture(PatternKind::ALL[i % 4], SIZE, SIZE, 1000 + i as u64).unwrap()
            })
            .collect(),
    )
    .unwrap();
    let sources: Vec<(&str, Arc<dyn TextureSource>)> = vec![
        ("memory", Arc::new(textures)),
        ("procedural", Arc::new(ProceduralTextures::default())),
        ("self_aug", Arc::new(SelfAugmentation::default())),
    ];
    let mut g = c.benchmark_group("synth_samples_256");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, source) in sources {
        for (p_name, p) in [("all_anomalous", 1.0f32), ("draem_default", 0.5)] {
            let config = SynthConfig {
                anomaly_probability: p,
                ..SynthConfig::default()
            };
            let synth = AnomalySynthesizer::new(config, source.clone(), 0).unwrap();
            let mut epoch = 0u64;
            g.bench_function(BenchmarkId::new(name, p_name), |b| {
                b.iter(|| {
                    epoch += 1;
                    synth.synthesize_samples(&imgs, None, epoch, 0).unwrap()
                })
            });
        }
    }
    // Full batch as Candle tensors on the CPU device.
    let synth = AnomalySynthesizer::new(
        SynthConfig::default(),
        Arc::new(ProceduralTextures::default()),
        0,
    )
    .unwrap();
    let mut epoch = 0u64;
    g.bench_function("batch_tensors/procedural_draem_default", |b| {
        b.iter(|| {
            epoch += 1;
            synth
                .synthesize_batch(&imgs, None, epoch, 0, &Device::Cpu)
                .unwrap()
        })
    });
    g.finish();

    // Each augmenter alone on a 256x256 texture (one thread).
    let mut g = c.benchmark_group("synth_augmenters_256");
    let base = procedural_texture(PatternKind::Cellular, SIZE, SIZE, 5).unwrap();
    for kind in AugmenterKind::ALL {
        g.bench_function(format!("{kind:?}"), |b| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            b.iter(|| {
                let mut img = base.clone();
                kind.apply(&mut img, &mut rng);
                img
            })
        });
    }
    g.finish();
}

criterion_group!(benches, masks, samples);
criterion_main!(benches);
