//! Typed errors on bad input, seeded initialisation, BatchNorm state and invariants.

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Init, VarMap};
use diffad_nn::*;
use proptest::prelude::*;

fn vb(varmap: &VarMap) -> candle_nn::VarBuilder<'static> {
    init::seeded_var_builder(varmap, 3, DType::F32, &Device::Cpu)
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn is_shape_error<T: std::fmt::Debug>(r: diffad_nn::Result<T>, layer: &str, got: &[usize]) {
    match r {
        Err(Error::Shape {
            layer: l, got: g, ..
        }) => {
            assert_eq!(l, layer);
            assert_eq!(g, got);
        }
        other => panic!("expected a shape error from {layer}, got {other:?}"),
    }
}

#[test]
fn wrong_shapes_are_typed_errors() {
    let vm = VarMap::new();
    let conv = conv2d(4, 6, 3, Conv2dConfig::padded(1), vb(&vm).pp("c")).unwrap();
    is_shape_error(conv.forward(&zeros(&[2, 5, 8, 8])), "Conv2d", &[2, 5, 8, 8]);
    is_shape_error(conv.forward(&zeros(&[4, 8, 8])), "Conv2d", &[4, 8, 8]);
    let tiny = conv2d(4, 6, 3, Conv2dConfig::default(), vb(&vm).pp("t")).unwrap();
    is_shape_error(tiny.forward(&zeros(&[1, 4, 2, 2])), "Conv2d", &[1, 4, 2, 2]);
    // Through the candle `Module` trait the error is wrapped, not a panic.
    assert!(conv.forward(&zeros(&[2, 5, 8, 8])).is_err());
    assert!(Module::forward(&conv, &zeros(&[2, 5, 8, 8])).is_err());

    let l = linear(5, 3, vb(&vm).pp("l")).unwrap();
    is_shape_error(l.forward(&zeros(&[2, 4])), "Linear", &[2, 4]);
    let gn = group_norm(2, 6, 1e-6, vb(&vm).pp("g")).unwrap();
    is_shape_error(
        gn.forward(&zeros(&[2, 4, 3, 3])),
        "GroupNorm",
        &[2, 4, 3, 3],
    );
    let bn = batch_norm2d(3, 1e-5, 0.1, vb(&vm).pp("b")).unwrap();
    is_shape_error(
        bn.forward_t(&zeros(&[2, 4, 3, 3]), true),
        "BatchNorm2d",
        &[2, 4, 3, 3],
    );
    is_shape_error(
        bn.forward_t(&zeros(&[1, 3, 1, 1]), true),
        "BatchNorm2d",
        &[1, 3, 1, 1],
    );
    assert!(ModuleT::forward_t(&bn, &zeros(&[1, 3, 2, 2]), false).is_ok());

    let attn = attention(AttentionConfig::new(32, 8), vb(&vm).pp("a")).unwrap();
    assert_eq!(attn.heads(), 4);
    is_shape_error(
        attn.forward(&zeros(&[1, 16, 4, 4])),
        "Attention",
        &[1, 16, 4, 4],
    );

    let cfg = ResnetBlock2DConfig {
        temb_channels: Some(8),
        ..ResnetBlock2DConfig::new(32, 32)
    };
    let block = resnet_block2d(cfg, vb(&vm).pp("r")).unwrap();
    let x = zeros(&[2, 32, 4, 4]);
    is_shape_error(
        block.forward(&x, Some(&zeros(&[2, 7])), false),
        "ResnetBlock2D",
        &[2, 7],
    );
    is_shape_error(
        block.forward(&x, Some(&zeros(&[3, 8])), false),
        "ResnetBlock2D",
        &[3, 8],
    );
    let no_temb = resnet_block2d(ResnetBlock2DConfig::new(32, 32), vb(&vm).pp("n")).unwrap();
    is_shape_error(
        no_temb.forward(&x, Some(&zeros(&[2, 8])), false),
        "ResnetBlock2D",
        &[2, 8],
    );

    is_shape_error(
        upsample_nearest2x(&zeros(&[3, 3])),
        "upsample_nearest2x",
        &[3, 3],
    );
    is_shape_error(
        upsample_bilinear2d(&zeros(&[1, 1, 2, 2]), 0, 4),
        "upsample_bilinear2d",
        &[1, 1, 2, 2],
    );
    is_shape_error(
        max_pool2d(&zeros(&[1, 1, 1, 4]), 2),
        "max_pool2d",
        &[1, 1, 1, 4],
    );
    is_shape_error(
        avg_pool2d(&zeros(&[1, 1, 4, 4]), 0),
        "avg_pool2d",
        &[1, 1, 4, 4],
    );
    is_shape_error(
        Timesteps::new(8, true, 0.0).forward(&zeros(&[2, 1])),
        "Timesteps",
        &[2, 1],
    );
}

#[test]
fn impossible_configs_are_typed_errors() {
    let vm = VarMap::new();
    let bad = |r: diffad_nn::Result<()>| assert!(matches!(r, Err(Error::Config { .. })), "{r:?}");
    bad(group_norm(3, 8, 1e-6, vb(&vm).pp("g")).map(|_| ()));
    bad(conv2d(
        6,
        4,
        3,
        Conv2dConfig {
            groups: 4,
            ..Default::default()
        },
        vb(&vm).pp("c"),
    )
    .map(|_| ()));
    bad(attention(AttentionConfig::new(32, 5), vb(&vm).pp("a")).map(|_| ()));
    bad(downsample2d(4, 8, false, 1, vb(&vm).pp("d")).map(|_| ()));
    bad(upsample2d(4, 8, false, vb(&vm).pp("u")).map(|_| ()));
    bad(Dropout::new(1.0, 0).map(|_| ()));
    bad(batch_norm2d(3, 1e-5, 1.5, vb(&vm).pp("b")).map(|_| ()));
    let cfg = ResnetBlock2DConfig {
        use_in_shortcut: Some(false),
        ..ResnetBlock2DConfig::new(32, 64)
    };
    bad(resnet_block2d(cfg, vb(&vm).pp("r")).map(|_| ()));
    // A weight of the wrong shape in a checkpoint is an error, not a panic.
    let vm2 = VarMap::new();
    conv2d(4, 6, 3, Conv2dConfig::default(), vb(&vm2)).unwrap();
    assert!(conv2d(4, 6, 1, Conv2dConfig::default(), vb(&vm2)).is_err());
}

#[test]
fn seeded_init_is_reproducible_and_follows_hints() {
    let build = |seed| {
        let vm = VarMap::new();
        let v = init::seeded_var_builder(&vm, seed, DType::F64, &Device::Cpu);
        let cfg = Conv2dConfig {
            init: Some(init::DRAEM_CONV_WEIGHT),
            ..Conv2dConfig::padded(1)
        };
        let c = conv2d(64, 64, 3, cfg, v.pp("draem")).unwrap();
        let d = conv2d(64, 32, 3, Conv2dConfig::padded(1), v.pp("torch")).unwrap();
        let bn =
            batch_norm2d_with_init(4096, 1e-5, 0.1, BatchNormInit::draem(), v.pp("bn")).unwrap();
        (c, d, bn)
    };
    let (c1, d1, bn1) = build(1);
    let (c2, _, _) = build(1);
    let (c3, _, _) = build(2);
    let vals = |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    assert_eq!(vals(c1.weight()), vals(c2.weight()));
    assert_ne!(vals(c1.weight()), vals(c3.weight()));
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        (m, s)
    };
    // DRAEM: N(0, 0.02) over 36864 values.
    let (m, s) = stats(&vals(c1.weight()));
    assert!(m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3, "{m} {s}");
    // PyTorch default: U(±1/sqrt(576)), std = bound/sqrt(3).
    let bound = 1.0 / 576f64.sqrt();
    let w = vals(d1.weight());
    assert!(w.iter().all(|x| x.abs() <= bound));
    let (_, s) = stats(&w);
    assert!((s / (bound / 3f64.sqrt()) - 1.0).abs() < 0.03, "{s}");
    assert!(vals(d1.bias().unwrap()).iter().all(|x| x.abs() <= bound));
    // BatchNorm: weight N(1, 0.02), bias 0, running stats 0 / 1.
    let (m, s) = stats(&vals(bn1.weight()));
    assert!((m - 1.0).abs() < 2e-3 && (s - 0.02).abs() < 2e-3, "{m} {s}");
    assert!(vals(bn1.bias()).iter().all(|&x| x == 0.0));
    assert!(vals(bn1.running_mean()).iter().all(|&x| x == 0.0));
    assert!(vals(bn1.running_var()).iter().all(|&x| x == 1.0));
    assert!(matches!(init::pytorch_default(0), Init::Const(c) if c == 0.0));
    assert!(
        matches!(init::pytorch_default(4), Init::Uniform { lo, up } if lo == -0.5 && up == 0.5)
    );
}

#[test]
fn dropout_is_seeded_and_scales() {
    let x = Tensor::ones((1000,), DType::F32, &Device::Cpu).unwrap();
    let a = Dropout::new(0.5, 9).unwrap();
    let b = Dropout::new(0.5, 9).unwrap();
    let ya: Vec<f32> = a.forward(&x, true).unwrap().to_vec1().unwrap();
    let yb: Vec<f32> = b.forward(&x, true).unwrap().to_vec1().unwrap();
    assert_eq!(ya, yb);
    assert!(ya.iter().all(|&v| v == 0.0 || v == 2.0));
    let kept = ya.iter().filter(|&&v| v > 0.0).count();
    assert!((400..600).contains(&kept), "{kept}");
    // The stream advances; eval is the identity.
    let ya2: Vec<f32> = a.forward(&x, true).unwrap().to_vec1().unwrap();
    assert_ne!(ya, ya2);
    let eval: Vec<f32> = a.forward(&x, false).unwrap().to_vec1().unwrap();
    assert!(eval.iter().all(|&v| v == 1.0));
}

#[test]
fn params_without_gradient_finds_unused_parameters() {
    let vm = VarMap::new();
    let used = linear(3, 2, vb(&vm).pp("used")).unwrap();
    let _unused = linear(3, 2, vb(&vm).pp("unused")).unwrap();
    let _bn = batch_norm2d(2, 1e-5, 0.1, vb(&vm).pp("bn")).unwrap();
    let x = Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap();
    let loss = used.forward(&x).unwrap().sum_all().unwrap();
    let missing = testing::params_without_gradient(&vm, &loss).unwrap();
    // Buffers (running stats) are not reported, trainable parameters are.
    assert_eq!(
        missing,
        vec!["bn.bias", "bn.weight", "unused.bias", "unused.weight"]
    );
}

fn arb_map() -> impl Strategy<Value = (Vec<f32>, usize, usize)> {
    (1usize..5, 1usize..5).prop_flat_map(|(h, w)| {
        (
            proptest::collection::vec(-10f32..10.0, 2 * h * w),
            Just(h),
            Just(w),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Upsampling then pooling with the same factor gives the map back.
    #[test]
    fn nearest_then_pool_round_trips((v, h, w) in arb_map()) {
        let x = Tensor::from_vec(v, (1, 2, h, w), &Device::Cpu).unwrap();
        let up = upsample_nearest2x(&x).unwrap();
        for back in [avg_pool2d(&up, 2).unwrap(), max_pool2d(&up, 2).unwrap()] {
            let d = (back - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            prop_assert!(d == 0.0);
        }
    }

    /// Bilinear resizing with align_corners keeps the corners, stays within the input's
    /// range, and maps a map to itself at the same size.
    #[test]
    fn bilinear_invariants((v, h, w) in arb_map(), oh in 1usize..9, ow in 1usize..9) {
        let x = Tensor::from_vec(v.clone(), (1, 2, h, w), &Device::Cpu).unwrap();
        let y = upsample_bilinear2d(&x, oh, ow).unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        prop_assert!(yv.iter().all(|&y| y >= lo - 1e-4 && y <= hi + 1e-4));
        prop_assert_eq!(yv[0], v[0]);
        if oh > 1 && ow > 1 {
            prop_assert!((yv[oh * ow - 1] - v[h * w - 1]).abs() < 1e-4);
        }
        let same = upsample_bilinear2d(&x, h, w).unwrap();
        let d = (same - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert!(d < 1e-5);
    }

    /// GroupNorm output has zero mean and unit variance per group (weight 1, bias 0).
    #[test]
    fn group_norm_normalises(v in proptest::collection::vec(-5f32..5.0, 4 * 9), shift in -100f32..100.0) {
        let vm = VarMap::new();
        let gn = group_norm(2, 4, 1e-6, vb(&vm)).unwrap();
        let x = (Tensor::from_vec(v, (1, 4, 3, 3), &Device::Cpu).unwrap() + shift as f64).unwrap();
        let y = gn.forward(&x).unwrap().reshape((2, 18)).unwrap();
        let mean: Vec<f32> = y.mean(1).unwrap().to_vec1().unwrap();
        let var: Vec<f32> = y.sqr().unwrap().mean(1).unwrap().to_vec1().unwrap();
        let xv: Vec<f32> = x.reshape((2, 18)).unwrap().to_vec2::<f32>().unwrap().concat();
        let spread = xv.iter().fold(0f32, |a, &b| a.max((b - shift).abs()));
        prop_assume!(spread > 0.5);
        for (m, s) in mean.iter().zip(&var) {
            prop_assert!(m.abs() < 1e-3);
            prop_assert!((s - 1.0).abs() < 1e-2);
        }
    }
}
