//! Criterion benches of `diffad-diffusion` sampling: UNet forward images/s and DDIM
//! reconstructions/s on 32x32x4 latents (+ 4 condition channels), for DiffAD's
//! 258M-parameter UNet (`UNetConfig::diffad`) and the small `UNetConfig::tiny`, at batch
//! 1 and 8.
//!
//! ```text
//! cargo bench --bench sampling                 # everything (the paper config takes minutes)
//! cargo bench --bench sampling -- tiny         # the small config only
//! ```
//!
//! The paper config runs 10 samples per point (criterion's minimum) and its DDIM-10 /
//! DDIM-50 chains are not run in full: a DDIM step is one UNet forward plus the scheduler
//! update (`ddim_step/*`, benched separately), so DDIM-N time = N x (forward + step).
//! The PyTorch side is `crates/diffad-diffusion/scripts/bench_diffusers_unet.py`
//! (same configs, 2 threads); results in docs/benchmarks.md.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use diffad_diffusion::noise::{gaussian_per_sample, sample_rng};
use diffad_diffusion::{reconstruct, Ddim, ReconstructOptions, Scheduler, UNet, UNetConfig};

const LATENT: usize = 32;

/// A UNet with seeded random weights held as plain tensors (no autograd graph), as a
/// loaded checkpoint would be.
fn inference_unet(config: &UNetConfig) -> UNet {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = diffad_nn::init::seeded_var_builder(&varmap, 0, DType::F32, &dev);
    UNet::new(config.clone(), vb).expect("UNet builds");
    let tensors = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    UNet::new(
        config.clone(),
        VarBuilder::from_tensors(tensors, DType::F32, &dev),
    )
    .expect("UNet builds")
}

fn latents(batch: usize, channels: usize, seed: u64) -> Tensor {
    let mut rngs: Vec<_> = (0..batch as u64).map(|i| sample_rng(seed, 0, i)).collect();
    gaussian_per_sample(
        &mut rngs,
        &[channels, LATENT, LATENT],
        DType::F32,
        &Device::Cpu,
    )
    .expect("noise")
}

fn bench_config(c: &mut Criterion, name: &str, config: UNetConfig, full_chains: bool) {
    let unet = inference_unet(&config);
    let sched = Ddim::diffad().expect("scheduler");
    let mut forward = c.benchmark_group(format!("unet_forward/{name}"));
    if !full_chains {
        forward.sample_size(10).sampling_mode(SamplingMode::Flat);
        forward.warm_up_time(Duration::from_millis(1));
        forward.measurement_time(Duration::from_secs(20));
    }
    for batch in [1usize, 8] {
        let x = latents(batch, config.in_channels, 1);
        let t = Tensor::from_vec(vec![500u32; batch], batch, &Device::Cpu).expect("t");
        forward.throughput(Throughput::Elements(batch as u64));
        forward.bench_with_input(
            BenchmarkId::from_parameter(format!("batch{batch}")),
            &x,
            |b, x| b.iter(|| black_box(unet.forward(x, &t, false).expect("forward"))),
        );
    }
    forward.finish();

    // The scheduler update alone (element-wise), to turn forward time into DDIM time.
    let mut step = c.benchmark_group(format!("ddim_step/{name}"));
    for batch in [1usize, 8] {
        let x = latents(batch, config.out_channels, 2);
        let eps = latents(batch, config.out_channels, 3);
        let t = sched.timesteps()[3];
        step.throughput(Throughput::Elements(batch as u64));
        step.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| black_box(sched.step(&eps, t, &x, None).expect("step")))
        });
    }
    step.finish();

    if full_chains {
        let mut chains = c.benchmark_group(format!("ddim_reconstruct/{name}"));
        chains.sample_size(10).sampling_mode(SamplingMode::Flat);
        for steps in [10usize, 50] {
            for batch in [1usize, 8] {
                let cond = latents(batch, config.in_channels - config.out_channels, 4);
                let opts = ReconstructOptions {
                    steps,
                    ..Default::default()
                };
                chains.throughput(Throughput::Elements(batch as u64));
                chains.bench_function(format!("ddim{steps}/batch{batch}"), |b| {
                    b.iter(|| {
                        black_box(reconstruct(&unet, &sched, &cond, &opts).expect("reconstruct"))
                    })
                });
            }
        }
        chains.finish();
    }
}

fn sampling(c: &mut Criterion) {
    // Reuse freed activations instead of page-faulting them in again (see docs/benchmarks.md).
    diffad_nn::tune_allocator();
    bench_config(c, "tiny", UNetConfig::tiny(), true);
    bench_config(c, "diffad", UNetConfig::diffad(), false);
}

criterion_group!(benches, sampling);
criterion_main!(benches);
