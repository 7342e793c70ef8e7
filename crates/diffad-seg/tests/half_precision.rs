//! Half-precision inference: the segmenter loaded in `bf16`/`f16` takes `f32` input and
//! returns `f32` logits within a stated tolerance of the `f32` network (small
//! configuration, on `DIFFAD_TEST_DEVICE`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_nn::testing::{relative_max_error, test_device};
use diffad_seg::{DiscriminativeUNet, DiscriminativeUNetConfig};

/// Deterministic input `(2, 9, 32, 32)` in `[0, 1]` (x_a, x_r, x_inter).
fn input(device: &Device) -> Tensor {
    Tensor::arange(0u32, 2 * 9 * 32 * 32, device)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.affine(0.0291, 0.0))
        .and_then(|t| t.sin())
        .and_then(|t| t.affine(0.5, 0.5))
        .and_then(|t| t.reshape((2, 9, 32, 32)))
        .expect("input")
}

/// Tolerances of `max |half - f32| / max |f32|` on the logits: bf16 keeps 8 bits of
/// mantissa, f16 11; the bounds (2^-4, 2^-7) leave room for twelve conv + BatchNorm
/// layers to compound the rounding, far below a wrong weight (an error of order 1).
const TOLERANCES: [(DType, f64); 2] = [(DType::BF16, 0.0625), (DType::F16, 0.0078)];

#[test]
fn bf16_and_f16_inference_stays_close_to_f32() {
    let device = test_device().unwrap();
    let config = DiscriminativeUNetConfig::new(9, 8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.safetensors");
    let vars = VarMap::new();
    DiscriminativeUNet::init(config, &vars, 4, &device).unwrap();
    DiscriminativeUNet::save(&vars, &path).unwrap();
    let full = DiscriminativeUNet::load(config, &path, &device).unwrap();
    assert_eq!(full.dtype(), DType::F32);
    let x = input(&device);
    let logits = full.forward(&x).unwrap();
    for (dtype, tolerance) in TOLERANCES {
        let half = DiscriminativeUNet::load_with_dtype(config, &path, dtype, &device).unwrap();
        assert_eq!(half.dtype(), dtype);
        let out = half.forward(&x).unwrap();
        assert_eq!(out.dtype(), DType::F32, "{dtype:?}: logits leave in f32");
        let e = relative_max_error(&logits, &out).unwrap();
        eprintln!("{dtype:?}: logit error {e:.2e}");
        assert!(
            e > 0.0,
            "{dtype:?}: the network did not run in half precision"
        );
        assert!(e < tolerance, "{dtype:?}: logit error {e} >= {tolerance}");
    }
}
