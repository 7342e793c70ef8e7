//! Criterion benches of `diffad-metrics` at MVTec AD scale: 100 anomaly maps
//! of 256x256 (6.55 M pixels, about 3 % of them anomalous).
//!
//! `cargo bench --bench metrics`; the Python baselines are timed by
//! `crates/diffad-metrics/scripts/bench_reference.py` (see docs/benchmarks.md).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use diffad_metrics::{
    aupro, auroc, average_precision, classification_metrics, image_score, PixelMetrics,
    DEFAULT_FPR_LIMIT, DRAEM_KERNEL,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IMAGES: usize = 100;
const SIZE: usize = 256;

/// Synthetic evaluation set: half the images carry 1-3 elliptic defects
/// (about 6 % of their pixels, 3 % overall); scores are continuous values in
/// [0, 1], higher on average inside defects (AUROC about 0.9). Seeded per
/// image.
fn synthetic(images: usize, size: usize) -> (Vec<Vec<f32>>, Vec<Vec<bool>>) {
    (0..images)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(0xD1FF_AD00 + i as u64);
            let mut mask = vec![false; size * size];
            if i % 2 == 1 {
                let target = size * size * 6 / 100;
                let defects = rng.random_range(1..=3);
                for _ in 0..defects {
                    let area = target as f64 / f64::from(defects);
                    let aspect = rng.random_range(0.4..2.5f64);
                    let a = (area / std::f64::consts::PI * aspect).sqrt();
                    let b = area / std::f64::consts::PI / a;
                    let (cx, cy) = (
                        rng.random_range(0.2..0.8) * size as f64,
                        rng.random_range(0.2..0.8) * size as f64,
                    );
                    for y in 0..size {
                        for x in 0..size {
                            let (dx, dy) = ((x as f64 - cx) / a, (y as f64 - cy) / b);
                            if dx * dx + dy * dy <= 1.0 {
                                mask[y * size + x] = true;
                            }
                        }
                    }
                }
            }
            let map = mask
                .iter()
                .map(|&d| {
                    let noise: f32 = (0..3).map(|_| rng.random::<f32>()).sum::<f32>() / 3.0;
                    (0.7 * noise + if d { 0.25 } else { 0.0 }).clamp(0.0, 1.0)
                })
                .collect();
            (map, mask)
        })
        .unzip()
}

fn bench_metrics(c: &mut Criterion) {
    let (maps, masks) = synthetic(IMAGES, SIZE);
    let scores: Vec<f32> = maps.iter().flatten().copied().collect();
    let labels: Vec<bool> = masks.iter().flatten().copied().collect();
    let map_refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let mask_refs: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
    let positives = labels.iter().filter(|&&l| l).count();
    eprintln!(
        "{} pixels, {:.2} % anomalous",
        labels.len(),
        100.0 * positives as f64 / labels.len() as f64
    );

    let mut group = c.benchmark_group("metrics_100x256x256");
    group.sample_size(10);
    group.bench_function("pixel_auroc_ap_f1_one_sort", |b| {
        b.iter(|| classification_metrics(black_box(&scores), black_box(&labels)).unwrap())
    });
    group.bench_function("pixel_auroc_then_ap_two_sorts", |b| {
        b.iter(|| {
            let a = auroc(black_box(&scores), black_box(&labels)).unwrap();
            let p = average_precision(black_box(&scores), black_box(&labels)).unwrap();
            (a, p)
        })
    });
    group.bench_function("aupro_0.3", |b| {
        b.iter(|| {
            aupro(
                black_box(&map_refs),
                black_box(&mask_refs),
                SIZE,
                SIZE,
                DEFAULT_FPR_LIMIT,
            )
            .unwrap()
        })
    });
    group.bench_function("pixel_metrics_accumulator", |b| {
        b.iter(|| {
            let mut metrics = PixelMetrics::new();
            for (map, mask) in maps.iter().zip(&masks) {
                metrics.update(map, mask, SIZE, SIZE).unwrap();
            }
            metrics.finish().unwrap()
        })
    });
    group.finish();

    c.bench_function("image_score_21x21_256x256", |b| {
        b.iter(|| image_score(black_box(&maps[1]), SIZE, SIZE, DRAEM_KERNEL).unwrap())
    });
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
