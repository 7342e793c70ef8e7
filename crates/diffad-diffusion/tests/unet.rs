//! The UNet against diffusers' `UNet2DModel` (`scripts/make_unet_fixture.py`), its
//! parameter layout, and its gradients.
//!
//! The diffusers comparison runs on `DIFFAD_TEST_DEVICE` (`diffad_nn::testing::test_device`,
//! the CPU by default); off the CPU its tolerance is `testing::device_tolerance`'s looser one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffad_diffusion::{Denoiser, UNet, UNetConfig};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture_config() -> UNetConfig {
    let json = std::fs::read_to_string(format!("{FIX}/unet_tiny_config.json")).unwrap();
    UNetConfig::from_diffusers_json(&json).unwrap()
}

#[test]
fn forward_matches_diffusers_unet2dmodel() {
    let dev = diffad_nn::testing::test_device().unwrap();
    let tol = diffad_nn::testing::device_tolerance(&dev, 1e-4) as f32;
    let config = fixture_config();
    assert_eq!(config.block_out_channels, vec![16, 32]);
    assert_eq!(config.attention, vec![true, false]);
    let unet = UNet::load(config, format!("{FIX}/unet_tiny.safetensors"), &dev).unwrap();
    let io =
        candle_core::safetensors::load(format!("{FIX}/unet_tiny_io.safetensors"), &dev).unwrap();
    let (sample, timesteps, want) = (&io["sample"], &io["timesteps"], &io["output"]);
    let got = unet.forward(sample, timesteps, false).unwrap();
    let d = (&got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < tol, "UNet output differs from diffusers by {d}");

    // Integer timesteps give the same result, and `predict` concatenates the condition.
    let t_u32 = timesteps.to_dtype(DType::U32).unwrap();
    let z = sample.narrow(1, 0, 4).unwrap();
    let c = sample.narrow(1, 4, 4).unwrap();
    let via_predict = unet.predict(&z, &t_u32, Some(&c)).unwrap();
    let d = (&via_predict - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < tol, "predict differs from diffusers by {d}");
}

#[test]
fn diffusers_config_round_trips() {
    let config = fixture_config();
    let again = UNetConfig::from_diffusers_json(&config.to_diffusers_json()).unwrap();
    assert_eq!(config, again);
    let paper = UNetConfig::diffad();
    assert_eq!(
        UNetConfig::from_diffusers_json(&paper.to_diffusers_json()).unwrap(),
        paper
    );
    assert!(UNetConfig::from_diffusers_json("{").is_err());
    assert!(UNetConfig::from_diffusers_json(
        r#"{"block_out_channels":[32],"down_block_types":["CrossAttnDownBlock2D"],"up_block_types":["UpBlock2D"]}"#
    )
    .is_err());
}

/// A VarBuilder backend that records every requested parameter and hands out broadcast
/// zeros (no allocation), to count the paper model's parameters cheaply.
struct Counter(Arc<Mutex<BTreeMap<String, usize>>>);

impl candle_nn::var_builder::SimpleBackend for Counter {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), s.elem_count());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unexpected unchecked get of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

fn count(config: UNetConfig) -> BTreeMap<String, usize> {
    let names = Arc::new(Mutex::new(BTreeMap::new()));
    let vb = VarBuilder::from_backend(Box::new(Counter(names.clone())), DType::F32, Device::Cpu);
    UNet::new(config, vb).unwrap();
    let map = names.lock().unwrap().clone();
    map
}

#[test]
fn parameter_counts_match_diffusers() {
    // Totals printed by diffusers 0.42 for the same UNet2DModel configurations.
    let paper = count(UNetConfig::diffad());
    assert_eq!(paper.values().sum::<usize>(), 257_742_340);
    assert_eq!(count(UNetConfig::tiny()).values().sum::<usize>(), 704_228);
    for name in [
        "time_embedding.linear_1.weight",
        "time_embedding.linear_2.bias",
        "conv_in.weight",
        "down_blocks.0.resnets.1.time_emb_proj.weight",
        "down_blocks.0.attentions.1.to_q.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.2.attentions.0.group_norm.weight",
        "mid_block.attentions.0.to_out.0.weight",
        "mid_block.resnets.1.conv2.weight",
        "up_blocks.0.resnets.2.conv_shortcut.weight",
        "up_blocks.1.upsamplers.0.conv.weight",
        "up_blocks.2.attentions.2.to_v.bias",
        "conv_norm_out.weight",
        "conv_out.bias",
    ] {
        assert!(paper.contains_key(name), "missing {name}");
    }
    // The fixture's state dict has exactly the names we build.
    let st = candle_core::safetensors::load(format!("{FIX}/unet_tiny.safetensors"), &Device::Cpu)
        .unwrap();
    let built = count(fixture_config());
    let mut want: Vec<&String> = st.keys().collect();
    want.sort();
    assert_eq!(built.keys().collect::<Vec<_>>(), want);
}

#[test]
fn every_parameter_gets_a_gradient() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = diffad_nn::init::seeded_var_builder(&varmap, 3, DType::F32, &dev);
    let config = UNetConfig {
        attention: vec![true, true],
        ..UNetConfig::tiny()
    };
    let unet = UNet::new(config, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 8, 8, 8), &dev).unwrap();
    let t = Tensor::new(&[3u32, 950], &dev).unwrap();
    let y = unet.forward(&x, &t, true).unwrap();
    let w = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
    let loss = (y * w).unwrap().sum_all().unwrap();
    let missing = diffad_nn::testing::params_without_gradient(&varmap, &loss).unwrap();
    assert!(
        missing.is_empty(),
        "parameters without gradient: {missing:?}"
    );
    assert!(diffad_nn::testing::named_vars(&varmap).unwrap().len() > 100);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let dev = Device::Cpu;
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let unet = UNet::new(UNetConfig::tiny(), vb).unwrap();
    let t = Tensor::new(&[1u32, 2], &dev).unwrap();
    let z = Tensor::zeros((2, 4, 8, 8), DType::F32, &dev).unwrap();
    // Missing condition, wrong condition size, odd spatial size, wrong timestep count.
    assert!(unet.predict(&z, &t, None).is_err());
    let c_bad = Tensor::zeros((2, 4, 4, 4), DType::F32, &dev).unwrap();
    assert!(unet.predict(&z, &t, Some(&c_bad)).is_err());
    let odd = Tensor::zeros((2, 8, 7, 8), DType::F32, &dev).unwrap();
    assert!(matches!(
        unet.forward(&odd, &t, false),
        Err(diffad_diffusion::Error::Shape { .. })
    ));
    let x = Tensor::zeros((2, 8, 8, 8), DType::F32, &dev).unwrap();
    assert!(unet
        .forward(&x, &Tensor::new(&[1u32], &dev).unwrap(), false)
        .is_err());
    // Invalid configurations.
    let bad = UNetConfig {
        attention_head_dim: 7,
        ..UNetConfig::tiny()
    };
    assert!(UNet::new(bad, VarBuilder::zeros(DType::F32, &dev)).is_err());
    let bad = UNetConfig {
        attention: vec![true],
        ..UNetConfig::tiny()
    };
    assert!(bad.validate().is_err());
    // Corrupt or missing checkpoint files.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.safetensors");
    std::fs::write(&p, b"not a safetensors file").unwrap();
    assert!(matches!(
        UNet::load(UNetConfig::tiny(), &p, &dev),
        Err(diffad_diffusion::Error::Checkpoint { .. })
    ));
    assert!(matches!(
        UNet::load(UNetConfig::tiny(), dir.path().join("absent"), &dev),
        Err(diffad_diffusion::Error::Io { .. })
    ));
    // The fixture's weights do not fit the paper's shapes.
    assert!(UNet::load(
        UNetConfig::diffad(),
        format!("{FIX}/unet_tiny.safetensors"),
        &dev
    )
    .is_err());
}
