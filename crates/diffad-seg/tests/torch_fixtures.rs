//! Comparisons with PyTorch reference values (`scripts/make_fixtures.py`,
//! outputs committed in `tests/fixtures/`).
//!
//! Everything runs on `DIFFAD_TEST_DEVICE` (`diffad_nn::testing::test_device`, the CPU by
//! default); off the CPU the tolerances are `testing::device_tolerance`'s looser ones.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use diffad_nn::checkpoint::TensorFile;
use diffad_nn::optim::{AdamW, AdamWConfig};
use diffad_seg::{focal_loss, DiscriminativeUNet, DiscriminativeUNetConfig};

fn fixture(name: &str) -> TensorFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    TensorFile::read(&path, device()).unwrap()
}

/// The device the tests run on (one for the whole binary).
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| diffad_nn::testing::test_device().unwrap())
}

/// The CPU tolerance `tol`, loosened off the CPU.
fn tol(tol: f32) -> f32 {
    diffad_nn::testing::device_tolerance(device(), tol as f64) as f32
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a - b| / max(max |b|, floor)
fn rel_err(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (vec(a), vec(b));
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn bilinear_align_corners_matches_pytorch_interpolate() {
    let f = fixture("bilinear.safetensors");
    for case in ["a", "b", "c"] {
        let x = f.get(&format!("{case}.x")).unwrap();
        let y = f.get(&format!("{case}.y")).unwrap();
        let (_, _, oh, ow) = y.dims4().unwrap();
        let ours = diffad_nn::upsample_bilinear2d(x, oh, ow).unwrap();
        assert!(rel_err(&ours, y, 1.0) < tol(1e-5), "case {case}");
    }
}

#[test]
fn focal_loss_and_gradient_match_draem_in_pytorch() {
    let f = fixture("focal.safetensors");
    let logits = f.get("logits").unwrap();
    let mask = f.get("mask").unwrap();
    let cases: [(&str, f64, Option<&[f64]>, f64); 3] = [
        ("default", 2.0, None, 1e-5),
        ("alpha", 2.0, Some(&[0.25, 0.75]), 1e-5),
        ("nosmooth", 0.5, None, 0.0),
    ];
    for (name, gamma, alpha, smooth) in cases {
        let var = candle_core::Var::from_tensor(logits).unwrap();
        let loss = focal_loss(var.as_tensor(), mask, gamma, alpha, smooth).unwrap();
        let want = vec(f.get(&format!("{name}.loss")).unwrap())[0];
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(
            (got - want).abs() <= tol(1e-5) * want.abs().max(1.0),
            "{name}: {got} vs {want}"
        );
        let grads = loss.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap();
        let want_g = f.get(&format!("{name}.grad")).unwrap();
        assert!(rel_err(g, want_g, 1e-6) < tol(1e-4), "{name} gradient");
    }
}

/// Loads the fixture's DRAEM state dict (keys `state.<name>`) into a fresh
/// VarMap-backed network.
fn tiny_unet(f: &TensorFile) -> (DiscriminativeUNet, VarMap) {
    let varmap = VarMap::new();
    let net = DiscriminativeUNet::init(DiscriminativeUNetConfig::new(9, 2), &varmap, 0, device())
        .unwrap();
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    // Every DRAEM float tensor maps to one of ours and vice versa
    // (`num_batches_tracked` counters are integers and have no counterpart).
    let draem: Vec<&String> = f
        .tensors
        .iter()
        .filter(|(k, t)| k.starts_with("state.") && t.dtype().is_float())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        draem.len(),
        names.len(),
        "DRAEM state dict and ours differ in size"
    );
    let mut varmap_mut = varmap.clone();
    for name in &names {
        varmap_mut
            .set_one(name, f.get(&format!("state.{name}")).unwrap())
            .unwrap();
    }
    (net, varmap)
}

#[test]
fn tiny_unet_matches_draem_discriminative_subnetwork() {
    let f = fixture("unet_tiny.safetensors");
    let (net, varmap) = tiny_unet(&f);
    let x = f.get("input").unwrap();

    let eval = net.forward_t(x, false).unwrap();
    assert!(rel_err(&eval, f.get("logits_eval").unwrap(), 1e-3) < tol(1e-4));

    let train = net.forward_t(x, true).unwrap();
    assert!(rel_err(&train, f.get("logits_train").unwrap(), 1e-3) < tol(1e-3));
    // Running statistics after one training-mode pass (momentum 0.1,
    // unbiased variance).
    let data = varmap.data().lock().unwrap();
    let mut checked = 0;
    for (name, var) in data.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let want = f.get(&format!("after_train.{name}")).unwrap();
            assert!(rel_err(var.as_tensor(), want, 1e-2) < tol(1e-3), "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 27, "27 BatchNorm layers");
}

#[test]
fn tiny_unet_focal_gradients_and_adam_step_match_pytorch() {
    let f = fixture("unet_tiny.safetensors");
    let (net, varmap) = tiny_unet(&f);
    let x = f.get("input").unwrap();
    let mask = f.get("mask").unwrap();
    let logits = net.forward_t(x, true).unwrap();
    let loss = focal_loss(&logits, mask, 2.0, None, 1e-5).unwrap();
    let want = vec(f.get("loss_train").unwrap())[0];
    assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < tol(1e-5) * want.max(1.0));
    let grads = loss.backward().unwrap();

    let mut params: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(params.len(), 28 * 2 + 27 * 2, "28 convs and 27 BatchNorms");
    // Conv biases followed by BatchNorm have a gradient that is zero in
    // exact arithmetic in training mode (BN subtracts the batch mean); both
    // frameworks give rounding noise there (PyTorch ~1e-9, ours < 1e-6), so
    // those are checked to be ~0 rather than compared.
    let mut noise_only = Vec::new();
    for (name, var) in &params {
        let g = grads.get(var.as_tensor()).unwrap();
        let want = f.get(&format!("grad.{name}")).unwrap();
        let ours_max = vec(g).iter().fold(0f32, |m, v| m.max(v.abs()));
        if vec(want).iter().all(|v| v.abs() < 1e-6) {
            assert!(
                ours_max < tol(1e-6),
                "{name} should have a ~0 gradient, got {ours_max}"
            );
            noise_only.push(name.clone());
        } else {
            let e = rel_err(g, want, 1e-6);
            assert!(e < tol(2e-3), "gradient of {name}: relative error {e}");
        }
    }
    assert_eq!(
        noise_only.len(),
        27,
        "exactly the 27 conv biases before a BatchNorm"
    );

    // Adam: fed PyTorch's own gradients, one step must land on PyTorch's
    // weights (this isolates the optimiser from gradient rounding, which
    // decides the sign of lr * g / (|g| + eps) where |g| ~ eps).
    let mut grads = grads;
    for (name, var) in &params {
        grads.insert(
            var.as_tensor(),
            f.get(&format!("grad.{name}")).unwrap().clone(),
        );
    }
    let mut adam = AdamW::new(params.clone(), AdamWConfig::adam(1e-3)).unwrap();
    adam.step(&grads).unwrap();
    assert_eq!(adam.step_count(), 1);
    for (name, var) in &params {
        let want = f.get(&format!("after_step.{name}")).unwrap();
        let max = vec(&(var.as_tensor() - want).unwrap().abs().unwrap())
            .into_iter()
            .fold(0f32, f32::max);
        assert!(
            max < tol(1e-6),
            "{name} after one Adam step: max diff {max}"
        );
    }
}
