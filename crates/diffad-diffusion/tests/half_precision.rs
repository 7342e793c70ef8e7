//! Half-precision inference: the UNet loaded in `bf16`/`f16` predicts `f32` noise from
//! `f32` latents (the sampler's arithmetic stays in `f32`) within a stated tolerance of
//! the `f32` network, and a whole DDIM reconstruction stays close (tiny configuration, on
//! `DIFFAD_TEST_DEVICE`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_diffusion::{
    reconstruct, ConditionMode, Ddim, DdimConfig, Denoiser, ReconstructOptions, UNet, UNetConfig,
};
use diffad_nn::testing::{relative_max_error, test_device};

/// Deterministic latents `(2, 4, 8, 8)` of unit scale, shifted by `phase`.
fn latents(phase: f64, device: &Device) -> Tensor {
    Tensor::arange(0u32, 2 * 4 * 8 * 8, device)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.affine(0.173, phase))
        .and_then(|t| t.sin())
        .and_then(|t| t.reshape((2, 4, 8, 8)))
        .expect("latents")
}

/// Tolerances of `max |half - f32| / max |f32|`: bf16 keeps 8 bits of mantissa, f16 11;
/// the bounds (2^-4, 2^-7) leave room for a deep network to compound the rounding and
/// still catch a wrong weight or a lost timestep embedding (errors of order 1).
const TOLERANCES: [(DType, f64); 2] = [(DType::BF16, 0.0625), (DType::F16, 0.0078)];

#[test]
fn bf16_and_f16_inference_stays_close_to_f32() {
    let device = test_device().unwrap();
    let config = UNetConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unet.safetensors");
    let vars = VarMap::new();
    let vb = diffad_nn::init::seeded_var_builder(&vars, 5, DType::F32, &device);
    UNet::new(config.clone(), vb).unwrap();
    vars.save(&path).unwrap();
    let full = UNet::load(config.clone(), &path, &device).unwrap();
    assert_eq!(full.dtype(), DType::F32);

    let z_t = latents(0.0, &device);
    let c = latents(1.0, &device);
    let t = Tensor::new(&[500u32, 500], &device).unwrap();
    let eps = full.predict(&z_t, &t, Some(&c)).unwrap();
    let ddim = Ddim::new(DdimConfig {
        num_inference_steps: 5,
        ..DdimConfig::diffad()
    })
    .unwrap();
    let opts = ReconstructOptions {
        steps: 5,
        eta: 0.0,
        mode: ConditionMode::CleanCondition,
        condition_t: None,
        seed: 3,
        sample_offset: 0,
        shared_stream: false,
    };
    let z_r = reconstruct(&full, &ddim, &c, &opts).unwrap();
    for (dtype, tolerance) in TOLERANCES {
        let half = UNet::load_with_dtype(config.clone(), &path, dtype, &device).unwrap();
        assert_eq!(half.dtype(), dtype);
        let eps_half = half.predict(&z_t, &t, Some(&c)).unwrap();
        assert_eq!(
            eps_half.dtype(),
            DType::F32,
            "{dtype:?}: noise leaves in f32"
        );
        let e = relative_max_error(&eps, &eps_half).unwrap();
        let z_half = reconstruct(&half, &ddim, &c, &opts).unwrap();
        assert_eq!(
            z_half.dtype(),
            DType::F32,
            "{dtype:?}: the sampler stays in f32"
        );
        let er = relative_max_error(&z_r, &z_half).unwrap();
        eprintln!("{dtype:?}: noise error {e:.2e}, reconstruction error {er:.2e}");
        assert!(
            e > 0.0,
            "{dtype:?}: the network did not run in half precision"
        );
        assert!(e < tolerance, "{dtype:?}: noise error {e} >= {tolerance}");
        assert!(
            er < tolerance,
            "{dtype:?}: reconstruction error {er} >= {tolerance}"
        );
    }
}
