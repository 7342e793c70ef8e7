//! Criterion bench of the whole predict path (`DiffAd::predict_batch`: VAE encode,
//! DDIM-N with the whole batch through the UNet at every step, the two VAE decodes of
//! `x_r` and `x_inter`, the segmenter, the image scores), in images/s, at batch 1 and 8,
//! on seeded random weights in a run directory (as a trained run would be loaded).
//!
//! ```text
//! cargo bench --bench predict -- tiny       # the tiny preset (64x64, DDIM 5): seconds
//! cargo bench --bench predict -- paper      # the paper config (256x256, DDIM 10): ~20 min
//! ```
//!
//! Batch 8 against batch 1 is the gain of batched sampling over the per-image loop it
//! replaced (the results are bit-identical; see `tests/end_to_end.rs` and
//! `crates/diffad-diffusion/tests/batch_invariance.rs`). Figures: docs/benchmarks.md.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use diffad::demo_data::good_image;
use diffad::{Config, DiffAd};

/// Whether the command line's filters (if any) can select `predict/<name>/...`, so a
/// filtered run does not build the paper-size networks it will not bench.
fn selected(name: &str) -> bool {
    let id = format!("predict/{name}/batch");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| id.contains(f.as_str()) || f.contains(&id))
}

fn bench_config(c: &mut Criterion, name: &str, config: Config) {
    if !selected(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let size = config.data.image_size;
    let mut config = config;
    config.inference.batch_size = 8;
    let run = common::random_run(&dir.path().join("run"), &config);
    let model = DiffAd::load(&run, &Device::Cpu).expect("model");
    let images: Vec<_> = (0..8)
        .map(|i| good_image(size, 0, 0, i).expect("image"))
        .collect();
    let mut group = c.benchmark_group(format!("predict/{name}"));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    if name == "paper" {
        group.warm_up_time(Duration::from_millis(1));
        group.measurement_time(Duration::from_secs(60));
    }
    for batch in [1usize, 8] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| black_box(model.predict_batch(&images[..batch]).expect("predict")))
        });
    }
    group.finish();
}

fn predict(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad::nn::tune_allocator();
    bench_config(c, "tiny", Config::tiny());
    bench_config(c, "paper", Config::paper());
}

criterion_group!(benches, predict);
criterion_main!(benches);
