//! The strict safetensors loader: every kind of bad file gives a typed error naming the
//! file and the offending tensors, and leaves the model unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use diffad_vae::checkpoint::TensorFile;
use diffad_vae::{AutoencoderKl, AutoencoderKlConfig, Error};

/// Every tensor of a safetensors file, by name.
fn read_tensors(
    path: &Path,
    device: &Device,
) -> diffad_vae::Result<std::collections::BTreeMap<String, Tensor>> {
    Ok(TensorFile::read(path, device)?.tensors)
}

/// Writes named tensors to a safetensors file.
fn write_tensors(
    tensors: &std::collections::HashMap<String, Tensor>,
    path: &Path,
) -> diffad_vae::Result<()> {
    let named = tensors.iter().map(|(n, t)| (n.as_str(), t));
    Ok(diffad_vae::checkpoint::save_tensors(path, named, None)?)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config() -> AutoencoderKlConfig {
    AutoencoderKlConfig::from_diffusers_json(&fixture("tiny_vae_config.json")).unwrap()
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    read_tensors(&fixture("tiny_vae.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

fn conv_in(vae: &AutoencoderKl) -> Vec<f32> {
    let data = vae.varmap().data().lock().unwrap();
    data["encoder.conv_in.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn missing_file_is_an_io_error() {
    let vae = AutoencoderKl::new(config(), 0, &Device::Cpu).unwrap();
    match vae.load_weights(Path::new("/nonexistent/vae.safetensors")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("vae.safetensors")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn truncated_and_garbage_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny_vae.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let vae = AutoencoderKl::new(config(), 0, &Device::Cpu).unwrap();
    let before = conv_in(&vae);
    for path in [&truncated, &garbage, &empty] {
        match vae.load_weights(path) {
            Err(Error::CorruptFile { path: p, .. }) => assert_eq!(&p, path),
            other => panic!("expected CorruptFile for {}, got {other:?}", path.display()),
        }
    }
    assert_eq!(
        conv_in(&vae),
        before,
        "a failed load must not change the model"
    );
}

#[test]
fn mismatches_are_reported_by_name() {
    let mut tensors = fixture_tensors();
    tensors.remove("decoder.conv_out.bias");
    tensors.remove("quant_conv.weight");
    tensors.insert(
        "encoder.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "post_quant_conv.weight".into(),
        Tensor::zeros((4, 4, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    write_tensors(&tensors, &path).unwrap();
    let vae = AutoencoderKl::new(config(), 0, &Device::Cpu).unwrap();
    let before = conv_in(&vae);
    match vae.load_weights(&path) {
        Err(Error::WeightsMismatch { path: p, mismatch }) => {
            assert_eq!(p, path);
            assert_eq!(
                mismatch.missing,
                vec!["decoder.conv_out.bias", "quant_conv.weight"]
            );
            assert_eq!(mismatch.unexpected, vec!["encoder.extra.weight"]);
            assert_eq!(
                mismatch.wrong_shape,
                vec![(
                    "post_quant_conv.weight".to_string(),
                    vec![4, 4, 1, 1],
                    vec![4, 4, 3, 3]
                )]
            );
            let msg = Error::WeightsMismatch { path: p, mismatch }.to_string();
            assert!(
                msg.contains("quant_conv.weight") && msg.contains("bad.safetensors"),
                "{msg}"
            );
        }
        other => panic!("expected WeightsMismatch, got {other:?}"),
    }
    assert_eq!(conv_in(&vae), before);
}

#[test]
fn a_different_architecture_is_a_mismatch() {
    // The tiny test config's model cannot take the fixture's weights.
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 0, &Device::Cpu).unwrap();
    assert!(matches!(
        vae.load_weights(fixture("tiny_vae.safetensors")),
        Err(Error::WeightsMismatch { .. })
    ));
}

#[test]
fn non_finite_weights_are_rejected() {
    let mut tensors = fixture_tensors();
    let w = &tensors["encoder.conv_in.bias"];
    let mut v = w.to_vec1::<f32>().unwrap();
    v[0] = f32::NAN;
    tensors.insert(
        "encoder.conv_in.bias".into(),
        Tensor::new(v.as_slice(), &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    write_tensors(&tensors, &path).unwrap();
    let vae = AutoencoderKl::new(config(), 0, &Device::Cpu).unwrap();
    match vae.load_weights(&path) {
        Err(Error::CorruptFile { reason, .. }) => assert!(reason.contains("encoder.conv_in.bias")),
        other => panic!("expected CorruptFile, got {other:?}"),
    }
}

#[test]
fn half_precision_files_are_converted() {
    // A Stable Diffusion VAE is often stored in f16.
    let tensors: HashMap<String, Tensor> = fixture_tensors()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f16.safetensors");
    write_tensors(&tensors, &path).unwrap();
    let vae = AutoencoderKl::load(config(), &path, &Device::Cpu).unwrap();
    let w = &vae.varmap().data().lock().unwrap()["encoder.conv_in.weight"];
    assert_eq!(w.dtype(), DType::F32);
}

#[test]
fn bad_inputs_are_typed_errors() {
    use diffad_vae::LatentCodec;
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 0, &Device::Cpu).unwrap();
    let odd = Tensor::zeros((1, 3, 15, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.encode_raw(&odd), Err(Error::Shape { .. })));
    let gray = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.encode_raw(&gray), Err(Error::Shape { .. })));
    let latents = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.decode_raw(&latents), Err(Error::Shape { .. })));
    let nan = (Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap() / 0.0).unwrap();
    assert!(vae.encode(&nan).is_err());
}
