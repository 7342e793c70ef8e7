//! Schedules and schedulers against diffusers 0.42 (`scripts/make_scheduler_fixtures.py`):
//! full DDPM / DDIM trajectories, in f64, to 1e-6 (they agree to ~1e-12).
//!
//! The trajectories run on `DIFFAD_TEST_DEVICE` (`diffad_nn::testing::test_device`, the CPU
//! by default); off the CPU the tolerance is `testing::device_tolerance`'s looser one.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use diffad_diffusion::{
    spaced_timesteps, BetaSchedule, Ddim, DdimConfig, Ddpm, DdpmConfig, NoiseSchedule,
    PredictionType, Scheduler, TimestepSpacing, VarianceType,
};
use serde_json::Value;

/// The tolerance on the CPU.
const TOL: f64 = 1e-6;

/// The device the trajectories run on (one for the whole binary).
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| diffad_nn::testing::test_device().unwrap())
}

/// [`TOL`], loosened off the CPU.
fn tol() -> f64 {
    diffad_nn::testing::device_tolerance(device(), TOL)
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schedulers.json"
    ))
    .expect("fixture present");
    serde_json::from_str(&text).expect("valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn beta_schedule(cfg: &Value) -> BetaSchedule {
    let start = cfg["beta_start"].as_f64().unwrap();
    let end = cfg["beta_end"].as_f64().unwrap();
    match cfg["beta_schedule"].as_str().unwrap() {
        "linear" => BetaSchedule::Linear {
            beta_start: start,
            beta_end: end,
        },
        "scaled_linear" => BetaSchedule::ScaledLinear {
            beta_start: start,
            beta_end: end,
        },
        "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
        other => panic!("unknown schedule {other}"),
    }
}

fn prediction(cfg: &Value) -> PredictionType {
    match cfg["prediction_type"].as_str().unwrap() {
        "epsilon" => PredictionType::Epsilon,
        "sample" => PredictionType::Sample,
        "v_prediction" => PredictionType::VPrediction,
        other => panic!("unknown prediction {other}"),
    }
}

fn spacing(cfg: &Value) -> TimestepSpacing {
    match cfg["timestep_spacing"].as_str().unwrap() {
        "leading" => TimestepSpacing::Leading,
        "trailing" => TimestepSpacing::Trailing,
        "linspace" => TimestepSpacing::Linspace,
        other => panic!("unknown spacing {other}"),
    }
}

fn clip(cfg: &Value) -> Option<f64> {
    cfg["clip_sample"].as_bool().unwrap().then(|| {
        cfg.get("clip_sample_range")
            .and_then(Value::as_f64)
            .unwrap_or(1.0)
    })
}

fn tensor(values: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, device()).unwrap()
}

/// The fixture's analytic model output `0.8 tanh(x) + 0.05 sin(t / 37)`.
fn model_output(x: &Tensor, t: usize) -> Tensor {
    (x.tanh().unwrap() * 0.8)
        .unwrap()
        .affine(1.0, 0.05 * (t as f64 / 37.0).sin())
        .unwrap()
}

/// The fixture's analytic noise `sin(1.7 x + 0.013 t)`.
fn analytic_noise(x: &Tensor, t: usize) -> Tensor {
    x.affine(1.7, 0.013 * t as f64).unwrap().sin().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &[f64]) -> f64 {
    let a: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn run_and_compare(
    sched: &dyn Scheduler,
    case: &Value,
    shape: &[usize],
    initial: &[f64],
    label: &str,
) {
    let want_ts: Vec<usize> = case["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(sched.timesteps(), want_ts.as_slice(), "{label}: timesteps");
    let steps = case["steps"].as_array().unwrap();
    let mut recorded = steps.iter().peekable();
    let mut x = tensor(initial.to_vec(), shape);
    for (i, &t) in sched.timesteps().iter().enumerate() {
        let eps = model_output(&x, t);
        let noise = analytic_noise(&x, t);
        let out = sched.step(&eps, t, &x, Some(&noise)).unwrap();
        x = out.prev_sample;
        if let Some(rec) = recorded.peek() {
            if rec["index"].as_u64().unwrap() as usize == i {
                assert_eq!(rec["t"].as_u64().unwrap() as usize, t);
                let d = max_abs_diff(&x, &floats(&rec["prev_sample"]));
                assert!(
                    d < tol(),
                    "{label}: step {i} (t = {t}) prev_sample off by {d}"
                );
                let d = max_abs_diff(
                    &out.pred_original_sample,
                    &floats(&rec["pred_original_sample"]),
                );
                assert!(
                    d < tol(),
                    "{label}: step {i} (t = {t}) pred_original_sample off by {d}"
                );
                recorded.next();
            }
        }
    }
    assert!(
        recorded.peek().is_none(),
        "{label}: not every recorded step was visited"
    );
}

#[test]
fn schedules_match_diffusers_float32_alphas_cumprod() {
    let fx = fixture();
    for s in fx["schedules"].as_array().unwrap() {
        let schedule = NoiseSchedule::new(beta_schedule(&s["config"]), 1000).unwrap();
        let want = floats(&s["alphas_cumprod_f32"]);
        let d = schedule
            .alphas_cumprod()
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // diffusers accumulates in float32; our f64 values differ by its rounding only.
        assert!(d < TOL, "{}: alphas_cumprod off by {d}", s["config"]);
    }
    assert_eq!(
        NoiseSchedule::diffad(),
        NoiseSchedule::new(BetaSchedule::diffad(), 1000).unwrap()
    );
}

#[test]
fn ddpm_trajectories_match_diffusers() {
    let fx = fixture();
    let shape: Vec<usize> = fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let initial = floats(&fx["initial_sample"]);
    for case in fx["ddpm"].as_array().unwrap() {
        let cfg = &case["config"];
        let config = DdpmConfig {
            num_train_timesteps: 1000,
            beta_schedule: beta_schedule(cfg),
            variance_type: match cfg["variance_type"].as_str().unwrap() {
                "fixed_small" => VarianceType::FixedSmall,
                "fixed_large" => VarianceType::FixedLarge,
                other => panic!("{other}"),
            },
            prediction_type: prediction(cfg),
            clip_sample: clip(cfg),
            timestep_spacing: spacing(cfg),
            steps_offset: cfg["steps_offset"].as_u64().unwrap() as usize,
            num_inference_steps: cfg["num_inference_steps"].as_u64().map(|n| n as usize),
        };
        let sched = Ddpm::new(config).unwrap();
        run_and_compare(&sched, case, &shape, &initial, &format!("DDPM {cfg}"));
    }
}

#[test]
fn ddim_trajectories_match_diffusers() {
    let fx = fixture();
    let shape: Vec<usize> = fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let initial = floats(&fx["initial_sample"]);
    for case in fx["ddim"].as_array().unwrap() {
        let cfg = &case["config"];
        let config = DdimConfig {
            num_train_timesteps: 1000,
            beta_schedule: beta_schedule(cfg),
            prediction_type: prediction(cfg),
            clip_sample: clip(cfg),
            set_alpha_to_one: cfg["set_alpha_to_one"].as_bool().unwrap(),
            steps_offset: cfg["steps_offset"].as_u64().unwrap() as usize,
            timestep_spacing: spacing(cfg),
            num_inference_steps: cfg["num_inference_steps"].as_u64().unwrap() as usize,
            eta: cfg["eta"].as_f64().unwrap(),
        };
        let sched = Ddim::new(config).unwrap();
        run_and_compare(&sched, case, &shape, &initial, &format!("DDIM {cfg}"));
    }
}

#[test]
fn diffad_ddim_is_the_compvis_sampler() {
    let d = Ddim::diffad().unwrap();
    // CompVis: range(0, T, T/S) + 1, reversed.
    assert_eq!(
        d.timesteps(),
        &[901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    );
    assert_eq!(d.with_steps(50).unwrap().timesteps().len(), 50);
    assert_eq!(d.timesteps_from(450), &[401, 301, 201, 101, 1]);
}

#[test]
fn add_noise_per_sample_matches_diffusers() {
    let fx = fixture();
    let shape: Vec<usize> = fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x0 = tensor(floats(&fx["initial_sample"]), &shape);
    let noise = analytic_noise(&x0, 0);
    for case in fx["add_noise"].as_array().unwrap() {
        let schedule = NoiseSchedule::new(beta_schedule(&case["config"]), 1000).unwrap();
        let t: Vec<usize> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let noisy = schedule.add_noise(&x0, &noise, &t).unwrap();
        let d = max_abs_diff(&noisy, &floats(&case["noisy"]));
        assert!(d < tol(), "add_noise off by {d}");
    }
}

#[test]
fn steps_work_in_f32_close_to_f64() {
    let sched = Ddim::new(DdimConfig {
        eta: 0.5,
        ..DdimConfig::diffad()
    })
    .unwrap();
    let x64 = Tensor::randn(0f64, 1.0, (2, 4, 3, 3), &Device::Cpu).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let t = sched.timesteps()[3];
    let n64 = analytic_noise(&x64, t);
    let a = sched
        .step(&model_output(&x64, t), t, &x64, Some(&n64))
        .unwrap()
        .prev_sample;
    let b = sched
        .step(
            &model_output(&x32, t),
            t,
            &x32,
            Some(&n64.to_dtype(DType::F32).unwrap()),
        )
        .unwrap()
        .prev_sample;
    let d = (a - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(d < 1e-5, "f32 step differs by {d}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let sched = Ddim::new(DdimConfig {
        eta: 1.0,
        ..DdimConfig::diffad()
    })
    .unwrap();
    let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::zeros((1, 4, 2, 3), DType::F32, &Device::Cpu).unwrap();
    let t = sched.timesteps()[0];
    assert!(matches!(
        sched.step(&x, t, &x, None),
        Err(diffad_diffusion::Error::MissingNoise { .. })
    ));
    assert!(matches!(
        sched.step(&y, t, &x, Some(&x)),
        Err(diffad_diffusion::Error::Shape { .. })
    ));
    assert!(matches!(
        sched.step(&x, 5000, &x, Some(&x)),
        Err(diffad_diffusion::Error::Timestep { .. })
    ));
    assert!(Ddim::new(DdimConfig {
        eta: 1.5,
        ..DdimConfig::default()
    })
    .is_err());
    assert!(Ddim::new(DdimConfig {
        num_inference_steps: 0,
        ..DdimConfig::default()
    })
    .is_err());
    assert!(spaced_timesteps(TimestepSpacing::Leading, 1000, 1000, 1).is_err());
    assert!(NoiseSchedule::from_betas(vec![0.1, f64::NAN]).is_err());
    assert!(NoiseSchedule::diffad().add_noise(&x, &x, &[1, 2]).is_err());
    let ddpm = Ddpm::new(DdpmConfig::diffad()).unwrap();
    assert!(matches!(
        ddpm.step(&x, 10, &x, None),
        Err(diffad_diffusion::Error::MissingNoise { .. })
    ));
    // t = 0 is deterministic.
    assert!(ddpm.step(&x, 0, &x, None).is_ok());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every spacing yields `n` strictly decreasing timesteps inside `0..T`.
        #[test]
        fn spaced_timesteps_are_valid(n in 1usize..=1000, which in 0usize..3) {
            let spacing = [TimestepSpacing::Leading, TimestepSpacing::Trailing, TimestepSpacing::Linspace][which];
            let offset = if which == 0 && n < 1000 { 1 } else { 0 };
            let ts = spaced_timesteps(spacing, 1000, n, offset).unwrap();
            prop_assert_eq!(ts.len(), n);
            prop_assert!(ts.windows(2).all(|w| w[0] > w[1]));
            prop_assert!(ts.iter().all(|&t| t < 1000));
        }

        /// abar is strictly decreasing in (0, 1) and add_noise preserves unit variance
        /// for unit-variance, independent x0 and noise (the coefficients square-sum to 1).
        #[test]
        fn schedule_invariants(start in 1e-5f64..1e-3, end in 5e-3f64..0.05, kind in 0usize..3, t in 0usize..1000) {
            let bs = [
                BetaSchedule::Linear { beta_start: start, beta_end: end },
                BetaSchedule::ScaledLinear { beta_start: start, beta_end: end },
                BetaSchedule::SquaredCosCapV2,
            ][kind];
            let s = NoiseSchedule::new(bs, 1000).unwrap();
            let a = s.alphas_cumprod();
            prop_assert!(a.windows(2).all(|w| w[1] < w[0]));
            prop_assert!(a.iter().all(|&v| v > 0.0 && v < 1.0));
            let one = Tensor::ones((1, 1), DType::F64, &Device::Cpu).unwrap();
            let sa = s.add_noise(&one, &one.zeros_like().unwrap(), &[t]).unwrap().to_vec2::<f64>().unwrap()[0][0];
            let sb = s.add_noise(&one.zeros_like().unwrap(), &one, &[t]).unwrap().to_vec2::<f64>().unwrap()[0][0];
            prop_assert!((sa * sa + sb * sb - 1.0).abs() < 1e-12);
        }

        /// With a perfect epsilon model, deterministic DDIM recovers x0 exactly when the
        /// final alpha is 1 (x_prev = sqrt(abar_prev) x0 + sqrt(1-abar_prev) eps).
        #[test]
        fn ddim_with_oracle_recovers_x0(x0v in proptest::collection::vec(-2.0f64..2.0, 8), seed in 0u64..1000, n in 1usize..30) {
            let sched = Ddim::new(DdimConfig {
                clip_sample: None,
                num_inference_steps: n,
                ..DdimConfig::default()
            }).unwrap();
            let x0 = Tensor::from_vec(x0v, (2, 4), &Device::Cpu).unwrap();
            let eps = (x0.affine(0.37, seed as f64 * 1e-3).unwrap().sin().unwrap() * 1.3).unwrap();
            let t0 = sched.timesteps()[0];
            let mut x = sched.add_noise(&x0, &eps, &[t0, t0]).unwrap();
            for &t in sched.timesteps() {
                x = sched.step(&eps, t, &x, None).unwrap().prev_sample;
            }
            let d = (x - &x0).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            prop_assert!(d < 1e-9, "x0 recovered to {}", d);
        }
    }
}
