//! Half-precision inference: the VAE loaded in `bf16`/`f16` takes and returns `f32`
//! and stays within a stated tolerance of the `f32` model (tiny configuration, on
//! `DIFFAD_TEST_DEVICE`).

use candle_core::{DType, Device, Tensor};
use diffad_nn::testing::{relative_max_error, test_device};
use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, LatentCodec};

/// Deterministic images in `[0, 1]`, `(2, 3, 32, 32)`.
fn images(device: &Device) -> Tensor {
    let n = 2 * 3 * 32 * 32;
    Tensor::arange(0u32, n as u32, device)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.affine(0.0137, 0.0))
        .and_then(|t| t.sin())
        .and_then(|t| t.affine(0.5, 0.5))
        .and_then(|t| t.reshape((2, 3, 32, 32)))
        .expect("images")
}

/// Tolerances of `max |half - f32| / max |f32|` (latent mean and decoded image). bf16 keeps
/// 8 bits of mantissa (relative rounding 2^-9 per value), f16 11 bits (2^-12); a dozen
/// layers compound that to a few times the unit, so the bounds are 2^-4 and 2^-7: well
/// above what the conversion costs, far below a wrong weight (an error of order 1).
const TOLERANCES: [(DType, f64); 2] = [(DType::BF16, 0.0625), (DType::F16, 0.0078)];

#[test]
fn bf16_and_f16_inference_stays_close_to_f32() {
    let device = test_device().unwrap();
    let config = AutoencoderKlConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vae.safetensors");
    AutoencoderKl::new(config.clone(), 11, &device)
        .unwrap()
        .save(&path)
        .unwrap();
    let full = AutoencoderKl::load(config.clone(), &path, &device).unwrap();
    assert_eq!(full.dtype(), DType::F32);
    let x = images(&device);
    let z = full.encode(&x).unwrap();
    let y = full.decode(&z).unwrap();
    for (dtype, tolerance) in TOLERANCES {
        let half = AutoencoderKl::load_with_dtype(config.clone(), &path, dtype, &device).unwrap();
        assert_eq!(half.dtype(), dtype);
        let z_half = half.encode(&x).unwrap();
        assert_eq!(
            z_half.dtype(),
            DType::F32,
            "{dtype:?}: latents leave in f32"
        );
        let y_half = half.decode(&z).unwrap();
        assert_eq!(y_half.dtype(), DType::F32, "{dtype:?}: images leave in f32");
        let ez = relative_max_error(&z, &z_half).unwrap();
        let ey = relative_max_error(&y, &y_half).unwrap();
        eprintln!("{dtype:?}: latent error {ez:.2e}, image error {ey:.2e}");
        assert!(
            ez > 0.0,
            "{dtype:?}: the network did not run in half precision"
        );
        assert!(
            ez < tolerance,
            "{dtype:?}: latent error {ez} >= {tolerance}"
        );
        assert!(ey < tolerance, "{dtype:?}: image error {ey} >= {tolerance}");
    }
}
