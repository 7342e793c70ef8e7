//! Forward passes against PyTorch / diffusers on small random-weight fixtures
//! (`scripts/make_fixtures.py`, outputs in `tests/fixtures/`), in f64 (to 1e-9) and in f32
//! (to 1e-5), plus a check that each block asks for exactly the parameter names of the
//! diffusers state dict.
//!
//! The blocks run on `DIFFAD_TEST_DEVICE` (`testing::test_device`, the CPU by default); off
//! the CPU the tolerances are `testing::device_tolerance`'s looser ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffad_nn::*;

const DTYPES: [(DType, f64); 2] = [(DType::F64, 1e-9), (DType::F32, 1e-5)];

/// The device the blocks run on (one for the whole binary: tensors of two CUDA devices
/// created apart cannot be mixed).
fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| testing::test_device().unwrap())
}

/// The CPU tolerance `tol`, loosened off the CPU.
fn tolerance(tol: f64) -> f64 {
    testing::device_tolerance(device(), tol)
}

struct Fixture {
    params: HashMap<String, Tensor>,
    data: HashMap<String, Tensor>,
}

fn load(name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let all = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut params = HashMap::new();
    let mut data = HashMap::new();
    for (k, v) in all {
        match k.strip_prefix("params.") {
            // `Conv2d_0` is diffusers' legacy alias of `conv` in a stand-alone
            // `Downsample2D(name="conv")`; the VAE and UNet blocks do not register it.
            Some(p) if p.starts_with("Conv2d_0") => {}
            Some(p) => {
                params.insert(p.to_string(), v);
            }
            None => {
                data.insert(k, v);
            }
        }
    }
    Fixture { params, data }
}

impl Fixture {
    fn vb(&self, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.params.clone(), dtype, device())
    }

    fn get(&self, key: &str, dtype: DType) -> Tensor {
        self.data[key]
            .to_dtype(dtype)
            .unwrap()
            .to_device(device())
            .unwrap()
    }

    /// The block built on a fresh VarMap creates exactly the fixture's parameter names,
    /// with the same shapes.
    fn assert_same_names<T>(&self, build: impl Fn(VarBuilder<'static>) -> diffad_nn::Result<T>) {
        let varmap = VarMap::new();
        build(init::seeded_var_builder(
            &varmap,
            0,
            DType::F32,
            &Device::Cpu,
        ))
        .unwrap();
        let ours: BTreeSet<(String, Vec<usize>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        let theirs: BTreeSet<(String, Vec<usize>)> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        assert_eq!(ours, theirs);
    }
}

fn assert_close(ours: &Tensor, reference: &Tensor, tol: f64, what: &str) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let a: Vec<f64> = ours
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = reference
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol,
        "{what}: max abs difference {worst:e} > {tol:e}"
    );
    // The references are not trivially zero.
    assert!(
        b.iter().any(|v| v.abs() > 1e-3),
        "{what}: degenerate reference"
    );
}

/// Builds a block from the fixture and compares `forward(input[, temb])` with `output`.
fn check<T>(
    name: &str,
    build: impl Fn(VarBuilder<'static>) -> diffad_nn::Result<T>,
    forward: impl Fn(&T, &Tensor, Option<&Tensor>) -> diffad_nn::Result<Tensor>,
) {
    let f = load(name);
    f.assert_same_names(&build);
    for (dtype, tol) in DTYPES {
        let block = build(f.vb(dtype)).unwrap();
        let temb = f.data.get("temb").map(|_| f.get("temb", dtype));
        let y = forward(&block, &f.get("input", dtype), temb.as_ref()).unwrap();
        assert_eq!(y.device().location(), device().location());
        assert_close(
            &y,
            &f.data["output"],
            tolerance(tol),
            &format!("{name} {dtype:?}"),
        );
    }
}

#[test]
fn convolutions() {
    let cases = [
        ("conv_pad1", Conv2dConfig::padded(1), 3),
        (
            "conv_stride2",
            Conv2dConfig {
                stride: 2,
                padding: 1,
                ..Default::default()
            },
            3,
        ),
        (
            "conv_groups_dilation",
            Conv2dConfig {
                padding: 2,
                dilation: 2,
                groups: 2,
                ..Default::default()
            },
            3,
        ),
        (
            "conv_1x1_nobias",
            Conv2dConfig {
                bias: false,
                ..Default::default()
            },
            1,
        ),
    ];
    for (name, cfg, k) in cases {
        check(name, |vb| conv2d(4, 6, k, cfg, vb), |c, x, _| c.forward(x));
    }
}

#[test]
fn linear_layer() {
    check("linear", |vb| linear(5, 3, vb), |l, x, _| l.forward(x));
}

#[test]
fn group_norm_layer() {
    check(
        "group_norm",
        |vb| group_norm(2, 6, 1e-6, vb),
        |g, x, _| g.forward(x),
    );
}

#[test]
fn batch_norm_train_step_and_eval() {
    check(
        "batch_norm_eval",
        |vb| batch_norm2d(3, 1e-5, 0.1, vb),
        |b, x, _| b.forward_t(x, false),
    );
    check(
        "batch_norm_train",
        |vb| batch_norm2d(3, 1e-5, 0.1, vb),
        |b, x, _| b.forward_t(x, true),
    );
    // The running statistics after one training step equal PyTorch's.
    let f = load("batch_norm_train");
    for (dtype, tol) in DTYPES {
        let varmap = VarMap::new();
        let vb = init::seeded_var_builder(&varmap, 0, dtype, device());
        let bn = batch_norm2d(3, 1e-5, 0.1, vb).unwrap();
        for (k, v) in &f.params {
            varmap.data().lock().unwrap()[k]
                .set(&v.to_dtype(dtype).unwrap().to_device(device()).unwrap())
                .unwrap();
        }
        bn.forward_t(&f.get("input", dtype), true).unwrap();
        // The update is visible through the VarMap (what a checkpoint saves).
        let data = varmap.data().lock().unwrap();
        assert_close(
            data["running_mean"].as_tensor(),
            &f.data["running_mean"],
            tolerance(tol),
            "running_mean",
        );
        assert_close(
            data["running_var"].as_tensor(),
            &f.data["running_var"],
            tolerance(tol),
            "running_var",
        );
    }
}

#[test]
fn attention_block() {
    let cfg = AttentionConfig {
        norm_groups: Some(2),
        rescale_output_factor: 1.5,
        ..AttentionConfig::new(8, 4)
    };
    check("attention", |vb| attention(cfg, vb), |a, x, _| a.forward(x));
}

#[test]
fn resnet_blocks() {
    let with_temb = ResnetBlock2DConfig {
        temb_channels: Some(5),
        groups: 2,
        groups_out: Some(3),
        output_scale_factor: 2.0,
        ..ResnetBlock2DConfig::new(4, 6)
    };
    let scale_shift = ResnetBlock2DConfig {
        temb_channels: Some(5),
        groups: 2,
        time_embedding_norm: TimeEmbeddingNorm::ScaleShift,
        ..ResnetBlock2DConfig::new(4, 6)
    };
    let no_temb = ResnetBlock2DConfig {
        groups: 2,
        ..ResnetBlock2DConfig::new(4, 4)
    };
    for (name, cfg) in [
        ("resnet_temb", with_temb),
        ("resnet_scale_shift", scale_shift),
        ("resnet_no_temb", no_temb),
    ] {
        check(
            name,
            |vb| resnet_block2d(cfg, vb),
            |b, x, t| b.forward(x, t, false),
        );
    }
}

#[test]
fn down_and_upsampling() {
    check(
        "downsample_pad0",
        |vb| downsample2d(4, 5, true, 0, vb),
        |d, x, _| d.forward(x),
    );
    check(
        "downsample_pad1",
        |vb| downsample2d(4, 5, true, 1, vb),
        |d, x, _| d.forward(x),
    );
    check(
        "downsample_avgpool",
        |vb| downsample2d(4, 4, false, 1, vb),
        |d, x, _| d.forward(x),
    );
    check(
        "upsample",
        |vb| upsample2d(4, 3, true, vb),
        |u, x, _| u.forward(x),
    );
}

#[test]
fn timestep_embeddings() {
    for (name, ts) in [
        ("timesteps_unet", Timesteps::new(32, true, 0.0)),
        ("timesteps_default", Timesteps::new(32, false, 1.0)),
        ("timesteps_odd", Timesteps::new(7, true, 1.0)),
    ] {
        let f = load(name);
        for dtype in [DType::F32, DType::F64, DType::I64] {
            let t = f.get("timesteps", dtype);
            let y = ts.forward(&t).unwrap();
            // f32 arithmetic as diffusers: equal to f32 rounding even at t = 999.
            assert_close(&y, &f.data["output"], tolerance(1e-5), name);
        }
    }
    check(
        "timestep_embedding",
        |vb| timestep_embedding(6, 8, vb),
        |e, x, _| e.forward(x),
    );
}

#[test]
fn mid_blocks() {
    let unet = UNetMidBlock2DConfig {
        temb_channels: Some(5),
        groups: 2,
        attention_head_dim: Some(4),
        ..UNetMidBlock2DConfig::new(8)
    };
    let vae = UNetMidBlock2DConfig {
        groups: 2,
        attention_head_dim: Some(8),
        ..UNetMidBlock2DConfig::new(8)
    };
    let no_attention = UNetMidBlock2DConfig {
        temb_channels: Some(5),
        groups: 2,
        add_attention: false,
        ..UNetMidBlock2DConfig::new(8)
    };
    for (name, cfg) in [
        ("mid_block_unet", unet),
        ("mid_block_vae", vae),
        ("mid_block_no_attention", no_attention),
    ] {
        check(
            name,
            |vb| unet_mid_block2d(cfg, vb),
            |m, x, t| m.forward(x, t, false),
        );
    }
}

#[test]
fn resampling() {
    let f = load("resampling");
    for (dtype, tol) in DTYPES {
        let x = f.get("input", dtype);
        let cases: [(&str, Tensor); 6] = [
            ("nearest2x", upsample_nearest2x(&x).unwrap()),
            ("bilinear_9x13", upsample_bilinear2d(&x, 9, 13).unwrap()),
            ("bilinear_10x14", upsample_bilinear2d(&x, 10, 14).unwrap()),
            ("bilinear_3x4", upsample_bilinear2d(&x, 3, 4).unwrap()),
            ("max_pool2", max_pool2d(&x, 2).unwrap()),
            ("avg_pool2", avg_pool2d(&x, 2).unwrap()),
        ];
        for (key, y) in cases {
            assert_close(
                &y,
                &f.data[key],
                tolerance(tol),
                &format!("{key} {dtype:?}"),
            );
        }
    }
}
