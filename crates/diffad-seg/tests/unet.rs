//! The discriminative U-Net: size, names, gradients, errors, save/load.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use diffad_seg::{focal_loss, DiscriminativeUNet, DiscriminativeUNetConfig, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn binary_mask(b: usize, s: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * s * s)
        .map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(v, (b, 1, s, s), &Device::Cpu).unwrap()
}

#[test]
fn default_config_has_draem_parameter_count() {
    // 28,375,874 is PyTorch's count for DRAEM's DiscriminativeSubNetwork(9, 2,
    // base 64) (printed by scripts/make_fixtures.py). With 6 input channels
    // plus DRAEM's reconstructive sub-network (69.05M) this is the 97.4M
    // anomalib reports for DRAEM.
    assert_eq!(
        DiscriminativeUNetConfig::default().num_parameters(),
        28_375_874
    );
    let draem = (DiscriminativeUNetConfig::new(6, 64).num_parameters() + 69_048_579) as f64 / 1e6;
    assert!((draem - 97.4).abs() < 0.05, "{draem}");
}

#[test]
fn variables_match_the_architecture_and_draem_names() {
    let varmap = VarMap::new();
    let config = DiscriminativeUNetConfig::new(9, 4);
    DiscriminativeUNet::init(config, &varmap, 0, &Device::Cpu).unwrap();
    let data = varmap.data().lock().unwrap();
    let trainable: usize = data
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, v)| v.elem_count())
        .sum();
    assert_eq!(trainable, config.num_parameters());
    for name in [
        "encoder_segment.block1.0.weight",
        "encoder_segment.block1.1.running_var",
        "encoder_segment.block6.4.bias",
        "decoder_segment.up_b.1.weight",
        "decoder_segment.up_b.2.weight",
        "decoder_segment.db_b.3.weight",
        "decoder_segment.db4.4.running_mean",
        "decoder_segment.fin_out.0.weight",
        "decoder_segment.fin_out.0.bias",
    ] {
        assert!(data.contains_key(name), "missing {name}");
    }
    assert_eq!(
        data["encoder_segment.block1.0.weight"].dims(),
        &[4, 9, 3, 3]
    );
    assert_eq!(data["decoder_segment.db3.0.weight"].dims(), &[4, 12, 3, 3]);
}

#[test]
fn init_is_draem_and_reproducible() {
    let (a, b) = (VarMap::new(), VarMap::new());
    let config = DiscriminativeUNetConfig::new(6, 8);
    DiscriminativeUNet::init(config, &a, 5, &Device::Cpu).unwrap();
    DiscriminativeUNet::init(config, &b, 5, &Device::Cpu).unwrap();
    let (a, b) = (a.data().lock().unwrap(), b.data().lock().unwrap());
    for (k, v) in a.iter() {
        let d = (v.as_tensor() - b[k].as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{k} differs between equal seeds");
    }
    let stats = |name: &str| {
        let v = a[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        (mean, std)
    };
    // Conv weight N(0, 0.02) over 64*64*9 = 36864 draws.
    let (m, s) = stats("encoder_segment.block6.0.weight");
    assert!(m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3, "{m} {s}");
    // BN weight N(1, 0.02), bias 0.
    let (m, s) = stats("encoder_segment.block6.1.weight");
    assert!((m - 1.0).abs() < 0.01 && s > 0.005 && s < 0.04, "{m} {s}");
    assert_eq!(stats("encoder_segment.block6.1.bias"), (0.0, 0.0));
}

#[test]
fn every_parameter_receives_a_gradient() {
    let varmap = VarMap::new();
    let net = DiscriminativeUNet::init(
        DiscriminativeUNetConfig::new(6, 2),
        &varmap,
        1,
        &Device::Cpu,
    )
    .unwrap();
    let x = random((2, 6, 32, 32), 3);
    let mask = binary_mask(2, 32, 4);

    // Evaluation mode: BatchNorm is a fixed affine map, every parameter
    // (conv biases included) influences the loss. At DRAEM's init the
    // running statistics (0, 1) do not match the tiny activations, which
    // leaves ReLUs dead; warm them up with training-mode passes first.
    for _ in 0..40 {
        net.forward_t(&x, true).unwrap();
    }
    let loss = focal_loss(&net.forward_t(&x, false).unwrap(), &mask, 2.0, None, 1e-5).unwrap();
    let missing = diffad_nn::testing::params_without_gradient(&varmap, &loss).unwrap();
    assert!(missing.is_empty(), "no gradient in eval mode: {missing:?}");

    // Training mode: the same, except that a conv bias followed by
    // BatchNorm is cancelled by the batch mean (zero gradient in exact
    // arithmetic, as in PyTorch).
    let loss = focal_loss(&net.forward_t(&x, true).unwrap(), &mask, 2.0, None, 1e-5).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut cancelled = 0;
    for (name, var) in data.iter().filter(|(k, _)| !k.contains("running_")) {
        let g = grads.get(var.as_tensor()).expect(name);
        let max = g
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let before_bn = name.ends_with("bias") && !name.contains("fin_out") && {
            let idx: usize = name.rsplit('.').nth(1).unwrap().parse().unwrap();
            let up = name.contains(".up");
            (up && idx == 1) || (!up && (idx == 0 || idx == 3))
        };
        if before_bn {
            assert!(max < 1e-5, "{name}: expected ~0, got {max}");
            cancelled += 1;
        } else {
            assert!(max > 1e-7, "{name} receives no gradient ({max})");
        }
    }
    assert_eq!(cancelled, 27);
}

#[test]
fn batch_norm_modes_differ_and_running_stats_update() {
    let varmap = VarMap::new();
    let net = DiscriminativeUNet::init(
        DiscriminativeUNetConfig::new(6, 2),
        &varmap,
        1,
        &Device::Cpu,
    )
    .unwrap();
    let x = random((2, 6, 32, 32), 9).affine(3.0, 1.0).unwrap();
    let rm = || {
        varmap.data().lock().unwrap()["encoder_segment.block1.1.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(rm(), vec![0.0, 0.0]);
    let eval1 = net.forward_t(&x, false).unwrap();
    assert_eq!(
        rm(),
        vec![0.0, 0.0],
        "eval mode must not touch running stats"
    );
    let train = net.forward_t(&x, true).unwrap();
    assert!(
        rm().iter().any(|v| *v != 0.0),
        "train mode updates running stats"
    );
    for _ in 0..20 {
        net.forward_t(&x, true).unwrap();
    }
    let eval2 = net.forward_t(&x, false).unwrap();
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(diff(&eval1, &train) > 1e-4);
    assert!(diff(&eval1, &eval2) > 0.0);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let varmap = VarMap::new();
    let net = DiscriminativeUNet::init(
        DiscriminativeUNetConfig::new(6, 2),
        &varmap,
        1,
        &Device::Cpu,
    )
    .unwrap();
    for shape in [(1, 9, 32, 32), (1, 6, 48, 32), (1, 6, 32, 40)] {
        let x = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        match net.forward_t(&x, false) {
            Err(Error::Shape { got, .. }) => {
                assert_eq!(got, vec![shape.0, shape.1, shape.2, shape.3])
            }
            other => panic!("{shape:?}: expected a shape error, got {other:?}"),
        }
    }
    let x = Tensor::zeros((6, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(net.forward_t(&x, false), Err(Error::Shape { .. })));
    // NaN would otherwise vanish in ReLU (max(NaN, 0) = 0) and BatchNorm.
    let mut v = vec![0f32; 2 * 6 * 32 * 32];
    v[17] = f32::NAN;
    let x = Tensor::from_vec(v, (2, 6, 32, 32), &Device::Cpu).unwrap();
    assert!(matches!(net.forward_t(&x, true), Err(Error::NonFinite(_))));
    assert!(matches!(net.forward_t(&x, false), Err(Error::NonFinite(_))));
    assert!(matches!(
        DiscriminativeUNet::init(
            DiscriminativeUNetConfig::new(0, 2),
            &VarMap::new(),
            0,
            &Device::Cpu
        ),
        Err(Error::Config(_))
    ));
}

#[test]
fn save_and_load_round_trip_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.safetensors");
    let varmap = VarMap::new();
    let config = DiscriminativeUNetConfig::new(6, 2);
    let net = DiscriminativeUNet::init(config, &varmap, 7, &Device::Cpu).unwrap();
    let x = random((2, 6, 32, 32), 1);
    net.forward_t(&x, true).unwrap(); // non-trivial running stats
    DiscriminativeUNet::save(&varmap, &path).unwrap();
    assert!(!dir.path().join("seg.safetensors.tmp").exists());
    let loaded = DiscriminativeUNet::load(config, &path, &Device::Cpu).unwrap();
    let a = net
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = loaded
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);

    // Wrong architecture: a shape mismatch naming the parameter.
    match DiscriminativeUNet::load(DiscriminativeUNetConfig::new(9, 2), &path, &Device::Cpu) {
        Err(Error::Nn(diffad_nn::Error::WeightsMismatch { mismatch, .. })) => {
            assert!(
                mismatch
                    .to_string()
                    .contains("encoder_segment.block1.0.weight"),
                "{mismatch}"
            )
        }
        other => panic!("expected a checkpoint error, got {:?}", other.map(|_| ())),
    }
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    match DiscriminativeUNet::load(config, &cut, &Device::Cpu) {
        Err(Error::Nn(diffad_nn::Error::Checkpoint { path, .. })) => assert_eq!(path, cut),
        other => panic!("expected a checkpoint error, got {:?}", other.map(|_| ())),
    }
    // Garbage and missing files.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    assert!(matches!(
        DiscriminativeUNet::load(config, &junk, &Device::Cpu),
        Err(Error::Nn(diffad_nn::Error::Checkpoint { .. }))
    ));
    assert!(matches!(
        DiscriminativeUNet::load(config, dir.path().join("absent"), &Device::Cpu),
        Err(Error::Nn(diffad_nn::Error::Io { .. }))
    ));
}
