//! Finite-difference gradient checks (f64, central differences) for every block's
//! parameters and input, and "every parameter gets a non-zero gradient" checks.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use diffad_nn::testing::{check_gradients, named_vars, params_without_gradient, FiniteDifference};
use diffad_nn::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let normal = Normal::new(0.0, 1.0).unwrap();
    let v: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn vb(varmap: &VarMap, seed: u64) -> VarBuilder<'static> {
    init::seeded_var_builder(varmap, seed, DType::F64, &Device::Cpu)
}

/// Checks every variable of `varmap` and the input `x` against finite differences, for the
/// loss `sum(f(x) * r)` with a fixed random `r` (a plain sum would have zero gradients
/// through normalisations).
fn check_block<F>(varmap: &VarMap, x_shape: &[usize], f: F)
where
    F: Fn(&Tensor) -> diffad_nn::Result<Tensor>,
{
    let x = Var::from_tensor(&randn(x_shape, 99)).unwrap();
    let y = f(x.as_tensor()).unwrap();
    let r = randn(y.dims(), 7);
    let loss = || -> diffad_nn::Result<Tensor> { Ok((f(x.as_tensor())? * &r)?.sum_all()?) };
    let missing = params_without_gradient(varmap, &loss().unwrap()).unwrap();
    assert!(
        missing.is_empty(),
        "parameters without gradient: {missing:?}"
    );
    let mut vars: Vec<(String, Var)> = named_vars(varmap)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !testing::is_buffer(n))
        .collect();
    assert!(!vars.is_empty() || varmap.all_vars().is_empty());
    vars.push(("input".to_string(), x.clone()));
    let bad = check_gradients(&vars, loss, &FiniteDifference::default()).unwrap();
    assert!(bad.is_empty(), "gradient mismatches: {bad:#?}");
}

#[test]
fn conv2d_variants() {
    for (i, (k, cfg)) in [
        (3, Conv2dConfig::padded(1)),
        (
            3,
            Conv2dConfig {
                padding: 0,
                stride: 2,
                ..Default::default()
            },
        ),
        (
            3,
            Conv2dConfig {
                padding: 2,
                dilation: 2,
                groups: 2,
                ..Default::default()
            },
        ),
        (
            1,
            Conv2dConfig {
                bias: false,
                ..Default::default()
            },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let varmap = VarMap::new();
        let conv = conv2d(4, 6, k, cfg, vb(&varmap, i as u64)).unwrap();
        check_block(&varmap, &[2, 4, 7, 6], |x| conv.forward(x));
    }
}

#[test]
fn linear_and_group_norm() {
    let varmap = VarMap::new();
    let l = linear(5, 3, vb(&varmap, 1).pp("l")).unwrap();
    check_block(&varmap, &[2, 4, 5], |x| l.forward(x));
    let varmap = VarMap::new();
    // Non-trivial affine parameters so their gradients are tested away from (1, 0).
    let v = vb(&varmap, 2);
    let gn = group_norm(2, 6, 1e-5, v.clone()).unwrap();
    varmap.data().lock().unwrap()["weight"]
        .set(&randn(&[6], 3))
        .unwrap();
    varmap.data().lock().unwrap()["bias"]
        .set(&randn(&[6], 4))
        .unwrap();
    check_block(&varmap, &[2, 6, 3, 4], |x| gn.forward(x));
}

#[test]
fn batch_norm_train_and_eval() {
    for train in [true, false] {
        let varmap = VarMap::new();
        let bn =
            batch_norm2d_with_init(3, 1e-5, 0.1, BatchNormInit::draem(), vb(&varmap, 5)).unwrap();
        varmap.data().lock().unwrap()["running_mean"]
            .set(&randn(&[3], 8))
            .unwrap();
        check_block(&varmap, &[4, 3, 3, 2], |x| bn.forward_t(x, train));
    }
}

#[test]
fn attention_multi_head() {
    let varmap = VarMap::new();
    let cfg = AttentionConfig {
        norm_groups: Some(2),
        rescale_output_factor: 1.5,
        ..AttentionConfig::new(8, 4)
    };
    let attn = attention(cfg, vb(&varmap, 6)).unwrap();
    check_block(&varmap, &[2, 8, 3, 2], |x| attn.forward(x));
}

#[test]
fn resnet_block_with_time_embedding() {
    for (i, norm) in [TimeEmbeddingNorm::Default, TimeEmbeddingNorm::ScaleShift]
        .into_iter()
        .enumerate()
    {
        let varmap = VarMap::new();
        let cfg = ResnetBlock2DConfig {
            temb_channels: Some(5),
            groups: 2,
            groups_out: Some(3),
            output_scale_factor: 2.0,
            time_embedding_norm: norm,
            ..ResnetBlock2DConfig::new(4, 6)
        };
        let block = resnet_block2d(cfg, vb(&varmap, 10 + i as u64)).unwrap();
        let temb = randn(&[2, 5], 11);
        check_block(&varmap, &[2, 4, 4, 3], |x| {
            block.forward(x, Some(&temb), false)
        });
    }
}

#[test]
fn resnet_block_identity_shortcut_without_temb() {
    let varmap = VarMap::new();
    let cfg = ResnetBlock2DConfig {
        groups: 2,
        ..ResnetBlock2DConfig::new(4, 4)
    };
    let block = resnet_block2d(cfg, vb(&varmap, 12)).unwrap();
    check_block(&varmap, &[1, 4, 4, 4], |x| block.forward(x, None, false));
}

#[test]
fn time_embedding_gradient_reaches_temb() {
    // The gradient with respect to the time embedding itself (it is the output of the
    // TimestepEmbedding MLP in a UNet).
    let varmap = VarMap::new();
    let cfg = ResnetBlock2DConfig {
        temb_channels: Some(5),
        groups: 2,
        ..ResnetBlock2DConfig::new(4, 4)
    };
    let block = resnet_block2d(cfg, vb(&varmap, 13)).unwrap();
    let x = randn(&[2, 4, 3, 3], 14);
    check_block(&VarMap::new(), &[2, 5], |t| {
        block.forward(&x, Some(t), false)
    });
}

#[test]
fn down_and_upsampling() {
    for (i, (use_conv, padding)) in [(true, 0), (true, 1), (false, 1)].into_iter().enumerate() {
        let varmap = VarMap::new();
        let out = if use_conv { 5 } else { 4 };
        let down = downsample2d(4, out, use_conv, padding, vb(&varmap, 20 + i as u64)).unwrap();
        check_block(&varmap, &[2, 4, 6, 5], |x| down.forward(x));
    }
    let varmap = VarMap::new();
    let up = upsample2d(4, 3, true, vb(&varmap, 23)).unwrap();
    check_block(&varmap, &[2, 4, 3, 2], |x| up.forward(x));
}

#[test]
fn timestep_embedding_mlp() {
    let varmap = VarMap::new();
    let emb = timestep_embedding(6, 8, vb(&varmap, 30)).unwrap();
    let ts = Timesteps::new(6, true, 0.0);
    let e = ts
        .forward(&Tensor::new(&[3f64, 500.0], &Device::Cpu).unwrap())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    assert_eq!(e.dims(), &[2, 6]);
    check_block(&varmap, &[2, 6], |x| emb.forward(x));
}

#[test]
fn mid_block_with_and_without_attention() {
    for (i, add_attention) in [true, false].into_iter().enumerate() {
        let varmap = VarMap::new();
        let cfg = UNetMidBlock2DConfig {
            temb_channels: Some(3),
            groups: 2,
            attention_head_dim: Some(2),
            add_attention,
            ..UNetMidBlock2DConfig::new(4)
        };
        let block = unet_mid_block2d(cfg, vb(&varmap, 40 + i as u64)).unwrap();
        let temb = randn(&[2, 3], 41);
        check_block(&varmap, &[2, 4, 3, 3], |x| {
            block.forward(x, Some(&temb), false)
        });
    }
}

#[test]
fn upsampled_input_that_also_feeds_a_skip_connection() {
    // y = conv(cat(upsample(x), upsample(x) * 2)) + upsample(x): the input of the
    // upsampling is used by several consumers, and x feeds a skip through `x_skip`.
    let varmap = VarMap::new();
    let conv = conv2d(4, 2, 3, Conv2dConfig::padded(1), vb(&varmap, 50)).unwrap();
    let f = |x: &Tensor| -> diffad_nn::Result<Tensor> {
        let up = upsample_nearest2x(x)?;
        let skip = x.sum_keepdim(1)?; // x used directly as well
        let h = conv.forward(&Tensor::cat(&[&up, &(&up * 2.0)?], 1)?)?;
        let h = (h + up.narrow(1, 0, 2)?)?;
        Ok(h.broadcast_add(&upsample_nearest2x(&skip)?)?)
    };
    check_block(&varmap, &[2, 2, 3, 4], f);
}

#[test]
fn bilinear_and_pooling() {
    let none = VarMap::new();
    check_block(&none, &[2, 3, 3, 4], |x| upsample_bilinear2d(x, 7, 5));
    check_block(&none, &[2, 3, 4, 4], |x| {
        let up = upsample_bilinear2d(x, 8, 8)?;
        Ok((up.clone() + upsample_nearest2x(x)?)?)
    });
    check_block(&none, &[2, 3, 6, 5], |x| max_pool2d(x, 2));
    check_block(&none, &[2, 3, 6, 6], |x| avg_pool2d(x, 3));
}
