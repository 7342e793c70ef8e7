//! Criterion benches of `diffad-vae`: encode (posterior mean, `c = E(x)`) and decode
//! images/s for the paper's VAE (`AutoencoderKlConfig::diffad()`, 83.7 M parameters) at
//! 256x256, batch 1 and 8, on the CPU.
//!
//! `cargo bench --bench vae`. The diffusers baseline (same config, same thread count) is
//! `crates/diffad-vae/scripts/bench_diffusers.py`; both are recorded in
//! docs/benchmarks.md. Each iteration takes seconds on 2 cores, so the groups use flat
//! sampling with 10 samples of one iteration.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use diffad_vae::synthetic::synthetic_images;
use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, LatentCodec};

const SIZE: usize = 256;

fn bench_vae(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad_nn::tune_allocator();
    let device = Device::Cpu;
    let vae = AutoencoderKl::new(AutoencoderKlConfig::diffad(), 0, &device).expect("paper VAE");
    let mut group = c.benchmark_group("vae_diffad_256");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for batch in [1usize, 8] {
        let images = synthetic_images(batch, SIZE, 0, &device).expect("images");
        let latents: Tensor = vae.encode(&images).expect("encode");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("encode", batch), &images, |b, x| {
            b.iter(|| black_box(vae.encode(x).expect("encode")))
        });
        group.bench_with_input(BenchmarkId::new("decode", batch), &latents, |b, z| {
            b.iter(|| black_box(vae.decode(z).expect("decode")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_vae);
criterion_main!(benches);
