//! One training step (forward, loss, backward, optimiser update) of each of the three
//! stages at the `tiny` preset's sizes: batch 8, 64x64 images, float32 on the CPU.
//!
//! ```text
//! cargo bench --bench train_step
//! ```
//!
//! | bench | network | step |
//! |---|---|---|
//! | `train_step/vae_w16` | the tiny preset's VAE (widths 16/32/32, 1 res block, f = 4) | [`VaeTrainer::train_step`]: L1 + SSIM + KL, AdamW (0.5, 0.9) |
//! | `train_step/vae_w32` | the same with base width 32 (widths 32/64/64, issue 15's case) | the same |
//! | `train_step/ldm_tiny` | the tiny preset's UNet (32/64, attention on level 2) on 16x16x4 latents + 4 condition channels (clean condition concatenated) | [`LdmTrainer::train_step`]: epsilon MSE, clip 1, AdamW |
//! | `train_step/seg_tiny` | the tiny preset's segmenter (DRAEM's network, width 8, 9 input channels) | [`SegTrainer::train_step`]: focal loss, Adam |
//!
//! Architectures and training settings come from [`diffad::Config::tiny`] (the VAE's
//! base width overridden for `vae_w32`), so the bench follows the preset. The PyTorch side
//! is `scripts/bench_train_steps.py` (the same networks, batch, losses and optimisers,
//! `torch.set_num_threads(2)`); both are recorded in docs/benchmarks.md.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use common::uniform;

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use diffad::diffusion::{ConditionMode, LdmTrainer};
use diffad::seg::{SegBatch, SegSample, SegTrainer};
use diffad::vae::{AutoencoderKl, VaeTrainer};
use diffad::Config;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 8;
const SIZE: usize = 64;

fn normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    diffad::nn::latent::standard_normal(shape, &mut rng, &Device::Cpu).expect("bench tensor")
}

fn group<'a>(c: &'a mut Criterion) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    group
}

/// The tiny preset's VAE step with base width `width` (16: the preset itself).
fn vae(c: &mut Criterion, width: usize) {
    let mut config = Config::tiny();
    config.vae.base_channels = width;
    // A run of the preset's length: the PatchGAN (from step 50001) stays off, as in `diffad
    // demo`; no checkpoints.
    let mut train = config.vae_train_config(1_000, PathBuf::new());
    train.checkpoint_dir = None;
    let vae = AutoencoderKl::new(config.vae_architecture(), 0, &Device::Cpu).expect("vae");
    let mut trainer = VaeTrainer::new(vae, train).expect("trainer");
    let images = uniform(&[BATCH, 3, SIZE, SIZE], 1, None);
    let mut group = group(c);
    group.bench_function(format!("vae_w{width}"), |b| {
        b.iter(|| trainer.train_step(&images).expect("vae step"))
    });
    group.finish();
}

/// The tiny preset's UNet on the tiny VAE's latents (64x64 images, f = 4: 16x16x4), the
/// clean condition concatenated.
fn ldm(c: &mut Criterion) {
    let config = Config::tiny();
    let f = 1 << (config.vae.channel_mult.len() - 1);
    let (latent, side) = (config.vae.latent_channels, SIZE / f);
    let train = diffad::diffusion::LdmTrainConfig {
        mode: ConditionMode::CleanCondition,
        ..config.ldm_train_config()
    };
    let mut trainer =
        LdmTrainer::new(config.unet_architecture(), train, &Device::Cpu).expect("trainer");
    let z = normal(&[BATCH, latent, side, side], 2);
    let cond = normal(&[BATCH, latent, side, side], 3);
    let mut group = group(c);
    group.bench_function("ldm_tiny", |b| {
        b.iter(|| {
            let seed = trainer.step_seed(trainer.step());
            trainer.train_step(&z, &cond, seed).expect("ldm step")
        })
    });
    group.finish();
}

/// The tiny preset's segmenter on `(x_r, x_inter, x_a)` (9 channels) against masks with
/// 10% anomalous pixels.
fn seg(c: &mut Criterion) {
    let config = Config::tiny();
    let mut train = config.seg_train_config(&PathBuf::new());
    train.checkpoint = None;
    let mut trainer =
        SegTrainer::new(config.segmenter_architecture(), train, &Device::Cpu).expect("trainer");
    let plane = |seed| uniform(&[3, SIZE, SIZE], seed, None);
    let samples: Vec<SegSample> = (0..BATCH as u64)
        .map(|i| SegSample {
            x_a: plane(10 + 3 * i),
            x_r: plane(11 + 3 * i),
            x_inter: Some(plane(12 + 3 * i)),
            mask: uniform(&[1, SIZE, SIZE], 100 + i, Some(0.1)),
        })
        .collect();
    let batch = SegBatch::stack(&samples).expect("batch");
    let mut group = group(c);
    group.bench_function("seg_tiny", |b| {
        b.iter(|| trainer.train_step(&batch).expect("seg step"))
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad::nn::tune_allocator();
    vae(c, 16);
    vae(c, 32);
    ldm(c);
    seg(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
