//! diffad-seg: forward throughput and one training step of the default
//! segmenter (DRAEM's discriminative U-Net, 9 input channels, base width 64,
//! 28.4M parameters) on batches of 8 at 256x256, float32 on the CPU.
//!
//! ```text
//! cargo bench --bench seg
//! ```
//!
//! The PyTorch side of the comparison is
//! `crates/diffad-seg/scripts/bench_torch.py` (same network, same batch,
//! `torch.set_num_threads` = the number of cores used here); both figures are
//! recorded in docs/benchmarks.md. Each iteration takes seconds on a 2-core
//! machine, so the sample size is criterion's minimum.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod common;

use common::uniform;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diffad_seg::{
    DiscriminativeUNetConfig, SegBatch, SegInput, SegSample, SegTrainConfig, SegTrainer,
};

const SIZE: usize = 256;

fn batch(size: usize) -> SegBatch {
    let samples: Vec<SegSample> = (0..size as u64)
        .map(|i| SegSample {
            x_a: uniform(&[3, SIZE, SIZE], 3 * i, None),
            x_r: uniform(&[3, SIZE, SIZE], 3 * i + 1, None),
            x_inter: Some(uniform(&[3, SIZE, SIZE], 3 * i + 2, None)),
            mask: uniform(&[1, SIZE, SIZE], 100 + i, Some(0.1)),
        })
        .collect();
    SegBatch::stack(&samples).expect("bench batch")
}

/// Forward (evaluation mode) and one training step (training-mode forward,
/// focal loss, backward, Adam) of the default network on a batch of `n`.
fn bench_batch(c: &mut Criterion, n: usize) {
    let device = Device::Cpu;
    let input = SegInput::default();
    let mut trainer = SegTrainer::new(
        DiscriminativeUNetConfig::default(),
        SegTrainConfig {
            ..SegTrainConfig::default()
        },
        &device,
    )
    .expect("trainer");
    let batch = batch(n);
    let x = batch.input(&input).expect("input");

    let mut group = c.benchmark_group(format!("seg_b{n}_{SIZE}x{SIZE}_w64"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(n as u64));
    group.bench_function("forward_eval", |b| {
        b.iter(|| trainer.model().forward(&x).expect("forward"))
    });
    group.bench_function("train_step", |b| {
        b.iter(|| trainer.train_step(&batch).expect("train step"))
    });
    group.finish();
}

/// Batch 8 (the issue's setting) and batch 1 (ten times quicker to measure
/// on a busy 2-core machine: `cargo bench --bench seg -- seg_b1`).
fn bench(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad_nn::tune_allocator();
    bench_batch(c, 1);
    bench_batch(c, 8);
}

criterion_group!(benches, bench);
criterion_main!(benches);
