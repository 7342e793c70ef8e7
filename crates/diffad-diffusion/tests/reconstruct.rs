//! Reconstruction: wiring checked with an oracle denoiser, determinism and batch
//! independence with a real (tiny) UNet, and the Table 1 modes.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_diffusion::{
    reconstruct, ConditionMode, Ddim, DdimConfig, Denoiser, NoiseSchedule, ReconstructOptions,
    UNet, UNetConfig,
};

/// Knows the clean latent `x0` and returns the exact noise of `z_t` at each sample's own
/// timestep: `eps = (z_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)`. Records the conditions it
/// was given.
struct Oracle {
    x0: Tensor,
    schedule: NoiseSchedule,
    seen: Mutex<Vec<Option<Tensor>>>,
}

impl Denoiser for Oracle {
    fn predict(
        &self,
        z_t: &Tensor,
        t: &Tensor,
        condition: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.seen.lock().unwrap().push(condition.cloned());
        let ts: Vec<u32> = t.to_vec1()?;
        let mut rows = Vec::new();
        for (i, &ti) in ts.iter().enumerate() {
            let a = self.schedule.alphas_cumprod()[ti as usize];
            let zi = z_t.get(i)?;
            let xi = self.x0.get(i)?;
            rows.push(((zi - (xi * a.sqrt())?)? / (1.0 - a).sqrt())?);
        }
        Tensor::stack(&rows, 0)
    }
}

fn oracle(x0: &Tensor) -> Oracle {
    Oracle {
        x0: x0.clone(),
        schedule: NoiseSchedule::diffad(),
        seen: Mutex::new(Vec::new()),
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// DDIM with the final alpha set to one lands exactly on the oracle's x0.
fn exact_ddim() -> Ddim {
    Ddim::new(DdimConfig {
        set_alpha_to_one: true,
        ..DdimConfig::diffad()
    })
    .unwrap()
}

#[test]
fn oracle_denoiser_is_reconstructed_exactly() {
    let dev = Device::Cpu;
    let x0 = Tensor::randn(0f64, 1.0, (3, 4, 4, 4), &dev).unwrap();
    for mode in [
        ConditionMode::CleanCondition,
        ConditionMode::NoisyCondition,
        ConditionMode::Unconditional,
        ConditionMode::ForwardReverse { t_start: 450 },
    ] {
        for eta in [0.0, 1.0] {
            let o = oracle(&x0);
            let opts = ReconstructOptions {
                steps: 10,
                eta,
                mode,
                seed: 5,
                ..Default::default()
            };
            let z_r = reconstruct(&o, &exact_ddim(), &x0, &opts).unwrap();
            assert_eq!(z_r.dims(), x0.dims());
            assert!(
                max_diff(&z_r, &x0) < 1e-9,
                "{mode:?} eta {eta}: off by {}",
                max_diff(&z_r, &x0)
            );
            let seen = o.seen.lock().unwrap();
            // ForwardReverse noises to exactly t_start = 450, steps to 401 on the grid,
            // then runs the steps 401, 301, .., 1.
            let expected_calls = if matches!(mode, ConditionMode::ForwardReverse { .. }) {
                6
            } else {
                10
            };
            assert_eq!(seen.len(), expected_calls, "{mode:?}");
            assert_eq!(seen[0].is_some(), mode.is_conditional(), "{mode:?}");
        }
    }
}

#[test]
fn noisy_condition_at_sampling_is_the_forward_process_of_c() {
    let dev = Device::Cpu;
    let c = Tensor::randn(0f64, 1.0, (2, 4, 4, 4), &dev).unwrap();
    let run = |t_c: Option<usize>| {
        let o = oracle(&c);
        let opts = ReconstructOptions {
            steps: 3,
            condition_t: t_c,
            ..Default::default()
        };
        reconstruct(&o, &exact_ddim(), &c, &opts).unwrap();
        let seen = o.seen.lock().unwrap();
        // The same (fixed) condition at every step.
        let first = seen[0].clone().unwrap();
        assert!(seen
            .iter()
            .all(|s| max_diff(s.as_ref().unwrap(), &first) == 0.0));
        first
    };
    assert_eq!(max_diff(&run(None), &c), 0.0);
    let noisy = run(Some(450));
    let a = NoiseSchedule::diffad().alphas_cumprod()[450];
    // c_noisy - sqrt(abar) c = sqrt(1 - abar) eps' with eps' ~ N(0, 1): check its scale.
    let resid = (noisy - (&c * a.sqrt()).unwrap()).unwrap();
    let std = resid
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
        / (1.0 - a).sqrt();
    assert!((0.7..1.3).contains(&std), "eps' std {std}");
}

fn tiny_unet(seed: u64) -> UNet {
    let varmap = VarMap::new();
    let vb = diffad_nn::init::seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    UNet::new(UNetConfig::tiny(), vb).unwrap()
}

#[test]
fn deterministic_and_independent_of_batching() {
    let dev = Device::Cpu;
    let unet = tiny_unet(1);
    let c = Tensor::randn(0f32, 1.0, (3, 4, 8, 8), &dev).unwrap();
    let opts = ReconstructOptions {
        steps: 3,
        eta: 0.5,
        condition_t: Some(300),
        seed: 11,
        ..Default::default()
    };
    let sched = Ddim::diffad().unwrap();
    let all = reconstruct(&unet, &sched, &c, &opts).unwrap();
    let again = reconstruct(&unet, &sched, &c, &opts).unwrap();
    assert_eq!(max_diff(&all, &again), 0.0);
    // Sample 2 alone, with its stream index, equals sample 2 of the batch.
    let alone_opts = ReconstructOptions {
        sample_offset: 2,
        ..opts.clone()
    };
    let alone = reconstruct(&unet, &sched, &c.narrow(0, 2, 1).unwrap(), &alone_opts).unwrap();
    assert!(max_diff(&alone, &all.narrow(0, 2, 1).unwrap()) < 1e-5);
    // Another seed gives another result.
    let other = reconstruct(&unet, &sched, &c, &ReconstructOptions { seed: 12, ..opts }).unwrap();
    assert!(max_diff(&other, &all) > 1e-3);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    let unet = tiny_unet(2);
    let sched = Ddim::diffad().unwrap();
    let opts = ReconstructOptions::default();
    let empty = Tensor::zeros((0, 4, 8, 8), DType::F32, &dev).unwrap();
    assert!(matches!(
        reconstruct(&unet, &sched, &empty, &opts),
        Err(diffad_diffusion::Error::Input(_))
    ));
    let rank3 = Tensor::zeros((4, 8, 8), DType::F32, &dev).unwrap();
    assert!(matches!(
        reconstruct(&unet, &sched, &rank3, &opts),
        Err(diffad_diffusion::Error::Shape { .. })
    ));
    let c = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
    let fr = ReconstructOptions {
        mode: ConditionMode::ForwardReverse { t_start: 1000 },
        ..Default::default()
    };
    assert!(matches!(
        reconstruct(&unet, &sched, &c, &fr),
        Err(diffad_diffusion::Error::Timestep { .. })
    ));
    let fr0 = ReconstructOptions {
        mode: ConditionMode::ForwardReverse { t_start: 0 },
        ..Default::default()
    };
    assert!(reconstruct(&unet, &sched, &c, &fr0).is_err()); // no DDIM step at or below t = 0
                                                            // The conditional UNet refuses to run without its condition channels.
    let none = ReconstructOptions {
        mode: ConditionMode::Unconditional,
        ..Default::default()
    };
    assert!(reconstruct(&unet, &sched, &c, &none).is_err());
    // Wrong channel count for the condition.
    let c3 = Tensor::zeros((1, 3, 8, 8), DType::F32, &dev).unwrap();
    assert!(reconstruct(&unet, &sched, &c3, &opts).is_err());
    let bad_steps = ReconstructOptions {
        steps: 0,
        ..Default::default()
    };
    assert!(reconstruct(&unet, &sched, &c, &bad_steps).is_err());
}
