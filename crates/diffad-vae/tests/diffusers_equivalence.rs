//! Our AutoencoderKL against diffusers 0.42 on a small random-weight model
//! (fixtures from `scripts/make_fixtures.py`).
//!
//! The model runs on `DIFFAD_TEST_DEVICE` (`diffad_nn::testing::test_device`, the CPU by
//! default); off the CPU the tolerances are `testing::device_tolerance`'s looser ones.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use diffad_nn::testing;
use diffad_vae::checkpoint::TensorFile;
use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, LatentCodec};

/// Every tensor of a safetensors file, by name.
fn read_tensors(
    path: &Path,
    device: &Device,
) -> diffad_vae::Result<std::collections::BTreeMap<String, Tensor>> {
    Ok(TensorFile::read(path, device)?.tensors)
}

/// The device the model runs on (one for the whole binary).
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| testing::test_device().unwrap())
}

/// The CPU tolerance `tol`, loosened off the CPU.
fn tolerance(tol: f32) -> f32 {
    testing::device_tolerance(device(), tol as f64) as f32
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load() -> (AutoencoderKl, std::collections::BTreeMap<String, Tensor>) {
    let config =
        AutoencoderKlConfig::from_diffusers_json(&fixture("tiny_vae_config.json")).unwrap();
    let vae = AutoencoderKl::load(config, fixture("tiny_vae.safetensors"), device()).unwrap();
    let io = read_tensors(&fixture("tiny_vae_io.safetensors"), device()).unwrap();
    (vae, io)
}

#[test]
fn posterior_and_decoding_match_diffusers() {
    let (vae, io) = load();
    let posterior = vae.encode_raw(&io["x"]).unwrap();
    let d_mean = max_abs_diff(&posterior.mean, &io["mean"]);
    let d_logvar = max_abs_diff(&posterior.logvar, &io["logvar"]);
    assert!(d_mean < tolerance(1e-4), "mean differs by {d_mean}");
    assert!(d_logvar < tolerance(1e-4), "logvar differs by {d_logvar}");

    let decoded = vae.decode_raw(&io["mean"]).unwrap();
    let d_dec = max_abs_diff(&decoded, &io["decoded_mean"]);
    assert!(d_dec < tolerance(1e-4), "decoded(mean) differs by {d_dec}");

    // Sampling with diffusers' noise, then decoding.
    let z = posterior.sample(&io["eps"]).unwrap();
    let d_sample = max_abs_diff(&vae.decode_raw(&z).unwrap(), &io["decoded_sample"]);
    assert!(
        d_sample < tolerance(1e-4),
        "decoded(sample) differs by {d_sample}"
    );

    let kl = posterior.kl().unwrap();
    let rel = ((&kl - &io["kl"]).unwrap().abs().unwrap() / io["kl"].abs().unwrap())
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(rel < tolerance(1e-4), "kl differs by {rel} (relative)");
}

#[test]
fn latent_codec_maps_unit_range_images() {
    let (vae, io) = load();
    // The codec takes [0, 1] images: (x + 1) / 2 must give diffusers' mean for x.
    let images = io["x"].affine(0.5, 0.5).unwrap();
    let mean = vae.encode(&images).unwrap();
    assert!(max_abs_diff(&mean, &io["mean"]) < tolerance(1e-4));
    let decoded = vae.decode(&io["mean"]).unwrap();
    let expected = io["decoded_mean"]
        .affine(0.5, 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    assert!(max_abs_diff(&decoded, &expected) < tolerance(1e-4));
    assert_eq!(vae.latent_channels(), 4);
    assert_eq!(vae.downsample_factor(), 4);
}

#[test]
fn save_then_load_reproduces_outputs() {
    let (vae, io) = load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vae.safetensors");
    vae.save(&path).unwrap();
    assert!(!dir.path().join("vae.safetensors.tmp").exists());
    let again = AutoencoderKl::load(vae.config().clone(), &path, device()).unwrap();
    let a = vae.encode_raw(&io["x"]).unwrap().mean;
    let b = again.encode_raw(&io["x"]).unwrap().mean;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // The file holds exactly diffusers' names.
    let ours: Vec<String> = read_tensors(&path, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    let theirs: Vec<String> = read_tensors(&fixture("tiny_vae.safetensors"), &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn ssim_matches_the_conv2d_reference() {
    let io = read_tensors(&fixture("ssim_io.safetensors"), device()).unwrap();
    let map = diffad_vae::loss::ssim_map(&io["a"], &io["b"], 1.0).unwrap();
    let d = max_abs_diff(&map, &io["ssim_map"]);
    assert!(d < tolerance(1e-5), "ssim map differs by {d}");
}
