//! Criterion benches of `diffad-nn` at the paper's shapes (batch 8): 3x3 convolution
//! forward and forward+backward at the UNet's (c256 32x32, c512 16x16, c1024 8x8) and the
//! segmenter's (c64 256x256) widths, our `Conv2d` against Candle's `conv2d`; the UNet's
//! `ResnetBlock2D` (c256, temb 1024) and `Attention` (c256, heads of 32) at 32x32.
//!
//! `cargo bench --bench nn` (filter with e.g. `-- conv3x3_fwd/`); the PyTorch baselines are
//! timed by `crates/diffad-nn/scripts/bench_reference.py` (see docs/benchmarks.md).
//! `DIFFAD_NN_BENCH_BATCH` overrides the batch size.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffad_nn::{
    attention, conv2d, init::seeded_var_builder, resnet_block2d, AttentionConfig, Conv2dConfig,
    ResnetBlock2DConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn batch() -> usize {
    std::env::var("DIFFAD_NN_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

fn uniform(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("bench tensor")
}

/// `sum(y · r)` backward, returning the gradients.
fn backward(y: &Tensor, r: &Tensor) -> candle_core::backprop::GradStore {
    (y * r)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .expect("backward")
}

const CONV_SHAPES: [(usize, usize); 4] = [(256, 32), (512, 16), (1024, 8), (64, 256)];

fn conv(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad_nn::tune_allocator();
    let b = batch();
    let mut fwd = c.benchmark_group("conv3x3_fwd");
    fwd.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (ch, hw) in CONV_SHAPES {
        let id = format!("b{b}_c{ch}_{hw}x{hw}");
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let layer = conv2d(ch, ch, 3, Conv2dConfig::padded(1), vb).expect("conv");
        let x = uniform(&[b, ch, hw, hw], 1);
        fwd.bench_function(BenchmarkId::new("ours", &id), |bench| {
            bench.iter(|| black_box(layer.forward(&x).expect("forward")))
        });
        let w = layer.weight().clone();
        fwd.bench_function(BenchmarkId::new("candle", &id), |bench| {
            bench.iter(|| black_box(x.conv2d(&w, 1, 1, 1, 1).expect("forward")))
        });
    }
    fwd.finish();

    let mut bwd = c.benchmark_group("conv3x3_fwd_bwd");
    bwd.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (ch, hw) in CONV_SHAPES {
        let id = format!("b{b}_c{ch}_{hw}x{hw}");
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let layer = conv2d(ch, ch, 3, Conv2dConfig::padded(1), vb).expect("conv");
        let x = Var::from_tensor(&uniform(&[b, ch, hw, hw], 1)).expect("var");
        let r = uniform(&[b, ch, hw, hw], 2);
        bwd.bench_function(BenchmarkId::new("ours", &id), |bench| {
            bench.iter(|| black_box(backward(&layer.forward(&x).expect("forward"), &r)))
        });
        let w = layer.weight().clone();
        bwd.bench_function(BenchmarkId::new("candle", &id), |bench| {
            bench.iter(|| black_box(backward(&x.conv2d(&w, 1, 1, 1, 1).expect("forward"), &r)))
        });
    }
    bwd.finish();
}

fn blocks(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad_nn::tune_allocator();
    let b = batch();
    let (ch, hw, temb_ch) = (256, 32, 1024);
    let id = format!("b{b}_c{ch}_{hw}x{hw}");
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    let cfg = ResnetBlock2DConfig {
        temb_channels: Some(temb_ch),
        ..ResnetBlock2DConfig::new(ch, ch)
    };
    let block = resnet_block2d(cfg, vb.pp("resnet")).expect("resnet");
    let attn = attention(AttentionConfig::new(ch, 32), vb.pp("attn")).expect("attention");
    let x = Var::from_tensor(&uniform(&[b, ch, hw, hw], 1)).expect("var");
    let temb = uniform(&[b, temb_ch], 3);
    let r = uniform(&[b, ch, hw, hw], 2);

    let mut g = c.benchmark_group("resnet_block2d");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.bench_function(BenchmarkId::new("fwd", &id), |bench| {
        bench.iter(|| black_box(block.forward(&x, Some(&temb), false).expect("forward")))
    });
    g.bench_function(BenchmarkId::new("fwd_bwd", &id), |bench| {
        bench.iter(|| {
            let y = block.forward(&x, Some(&temb), false).expect("forward");
            black_box(backward(&y, &r))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("attention");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.bench_function(BenchmarkId::new("fwd", &id), |bench| {
        bench.iter(|| black_box(attn.forward(&x).expect("forward")))
    });
    g.bench_function(BenchmarkId::new("fwd_bwd", &id), |bench| {
        bench.iter(|| black_box(backward(&attn.forward(&x).expect("forward"), &r)))
    });
    g.finish();
}

criterion_group!(benches, conv, blocks);
criterion_main!(benches);
