//! The CPU kernels against the device-generic path (the plain Candle ops CUDA runs), forced
//! on the CPU with `runtime::force_generic_ops`: for every op with a custom kernel, the
//! value and every gradient (input, weight, bias, gamma/beta) agree, to `1e-12` in `f64`
//! and `1e-5` in `f32`, both relative to `max(1, max |generic|)` (the magnitude of the
//! compared tensor, so that the weight gradient of a 256-channel convolution, a sum over
//! every output position, is held to the same relative precision as a single value).
//! Measured: every comparison is within `1e-14` in `f64` and `3e-6` in `f32` (the kernels
//! sum in another order, Winograd transforms the tiles, and the `f32` SiLU and softmax
//! use a vectorised `exp` within 2 ulp).
//!
//! The sizes are those of the kernels' unit tests: odd heights and widths, strides,
//! dilations, paddings wider than the kernel's reach, 1x1 and 2x2 kernels, one-row maps,
//! Winograd-eligible 3x3 convolutions (>= 128 channels and >= 64 tiles, so that forward
//! and input gradient go through Winograd), convolutions large enough to be split into
//! several bands of output rows (and of Winograd tiles) at the library's real budgets
//! (the unit tests force one-row bands with a test-only budget), group norm on 3-D and 4-D
//! maps, batch norm in training and evaluation with and without the fused ReLU.
//!
//! The switch is global, so every test holds [`LOCK`] while it runs, and this file is a
//! test binary of its own: no test of another file runs in this process.

use std::sync::{Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use diffad_nn::runtime::force_generic_ops;
use diffad_nn::testing::max_abs_diff;
use diffad_nn::*;

/// Serialises the tests of this binary, since each toggles the process-wide switch.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the others still run.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tolerance relative to the compared tensor's magnitude (see the module doc).
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        _ => 1e-5,
    }
}

const DTYPES: [DType; 2] = [DType::F64, DType::F32];

/// Uniform values in `[-1, 1)` from a 64-bit LCG (deterministic, dependency-free).
fn uniform(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn var(shape: &[usize], seed: u64, scale: f64, dtype: DType) -> Var {
    Var::from_tensor(&(uniform(shape, seed, dtype) * scale).unwrap()).unwrap()
}

/// `f` evaluated on the CPU kernels and on the forced generic path, each followed by the
/// backward pass of `sum(f · r)` for a fixed random `r`; returns the two outputs and the
/// gradients of `wrt` in each.
fn both_paths<F>(f: F, wrt: &[&Var], seed: u64) -> [(Tensor, Vec<Tensor>); 2]
where
    F: Fn() -> Tensor,
{
    [false, true].map(|generic| {
        let _guard = force_generic_ops(generic);
        assert_eq!(runtime::generic_ops(), generic);
        let y = f();
        let r = uniform(y.dims(), seed, y.dtype());
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = wrt
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient on the generic={generic} path"))
                    .clone()
            })
            .collect();
        (y, g)
    })
}

/// Asserts that `fast` and `generic` agree to [`tolerance`] relative to the magnitude of
/// `generic`. (Some gradients are exactly zero on both paths: the key bias of attention,
/// which the softmax cancels, or the input of a strided 1x1 convolution that only reads
/// padding.)
fn assert_agree(fast: &Tensor, generic: &Tensor, what: &str) {
    assert_eq!(fast.dims(), generic.dims(), "{what}: shape");
    let scale = generic
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let diff = max_abs_diff(fast, generic).unwrap();
    let tol = tolerance(generic.dtype()) * scale.max(1.0);
    assert!(
        diff <= tol,
        "{what}: fast and generic paths differ by {diff:e} > {tol:e}"
    );
}

/// Compares the value and every gradient of the two paths of `f`.
fn compare<F>(f: F, wrt: &[(&str, &Var)], what: &str)
where
    F: Fn() -> Tensor,
{
    let vars: Vec<&Var> = wrt.iter().map(|(_, v)| *v).collect();
    let [(yf, gf), (yg, gg)] = both_paths(f, &vars, 1234);
    assert_agree(&yf, &yg, &format!("{what}: value"));
    for ((name, _), (a, b)) in wrt.iter().zip(gf.iter().zip(&gg)) {
        assert_agree(a, b, &format!("{what}: d/d{name}"));
    }
}

/// One convolution through the public layer, with and without a bias.
fn compare_conv(
    x_shape: [usize; 4],
    c_out: usize,
    k: usize,
    (padding, stride, dilation): (usize, usize, usize),
    dtype: DType,
    seed: u64,
) {
    let c = x_shape[1];
    let fan_in = (c * k * k) as f64;
    let x = var(&x_shape, seed, 1.0, dtype);
    let w = var(&[c_out, c, k, k], seed + 1, 1.0 / fan_in.sqrt(), dtype);
    let b = var(&[c_out], seed + 2, 1.0, dtype);
    let config = Conv2dConfig {
        padding,
        stride,
        dilation,
        ..Default::default()
    };
    let what =
        format!("conv {x_shape:?} -> {c_out} k{k} p{padding} s{stride} d{dilation} {dtype:?}");
    let with_bias =
        Conv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), config).unwrap();
    compare(
        || with_bias.forward(&x).unwrap(),
        &[("x", &x), ("weight", &w), ("bias", &b)],
        &what,
    );
    let config = Conv2dConfig {
        bias: false,
        ..config
    };
    let without = Conv2d::new(w.as_tensor().clone(), None, config).unwrap();
    compare(
        || without.forward(&x).unwrap(),
        &[("x", &x), ("weight", &w)],
        &format!("{what} without bias"),
    );
}

/// The geometry grid of the im2col kernel's unit test: odd sizes, one-row maps, strides,
/// dilations, paddings wider than the kernel's reach, 1x1 and 2x2 kernels.
#[test]
fn conv2d_im2col_geometries() {
    let _lock = lock();
    let mut seed = 0;
    for dtype in DTYPES {
        for (h, w) in [(7, 6), (5, 5), (1, 3), (9, 4)] {
            for (k, p, s, d) in [
                (3, 1, 1, 1),
                (3, 0, 1, 1),
                (3, 1, 2, 1),
                (3, 2, 2, 2),
                (1, 0, 1, 1),
                (1, 1, 3, 1),
                (2, 0, 2, 1),
                (3, 3, 1, 1),
            ] {
                let span = d * (k - 1) + 1;
                if h + 2 * p < span || w + 2 * p < span {
                    continue;
                }
                seed += 10;
                compare_conv([2, 3, h, w], 4, k, (p, s, d), dtype, seed);
            }
        }
    }
}

/// 3x3 stride-1, padding-1 `f32` convolutions on the direct kernels (on CPUs with
/// AVX-512F): rows of 16 columns or more (row by row), and narrower planes of 64 positions
/// or more (the rows run together: 8x8 maps, a 4-column one, channel counts that leave a
/// partial block of output channels). Forward and input gradient run the direct kernel.
#[test]
fn conv2d_direct() {
    let _lock = lock();
    for (i, (x_shape, c_out)) in [
        ([2, 8, 5, 16], 7),
        ([2, 16, 8, 8], 24),
        ([2, 64, 8, 8], 64),
        ([1, 5, 16, 4], 3),
        ([2, 6, 9, 10], 17),
    ]
    .into_iter()
    .enumerate()
    {
        compare_conv(
            x_shape,
            c_out,
            3,
            (1, 1, 1),
            DType::F32,
            800 + 10 * i as u64,
        );
    }
}

/// A convolution whose unfolded columns exceed the kernel's cache budget (2 Mi values), so
/// the forward and the weight gradient run over several bands of output rows; and a
/// strided one of the same size (input gradient through gemm + col2im).
#[test]
fn conv2d_several_bands() {
    let _lock = lock();
    // 32·9 values per output position, 91·89 positions: 2.33 Mi values, two bands.
    compare_conv([1, 32, 91, 89], 16, 3, (1, 1, 1), DType::F32, 500);
    compare_conv([1, 32, 91, 89], 16, 3, (1, 2, 1), DType::F64, 510);
}

/// 3x3 stride-1 convolutions with >= 128 channels and >= 64 tiles: Winograd forward and
/// input gradient (the unit test's 256 channels on 16x15, and an odd-sized batch of two).
#[test]
fn conv2d_winograd() {
    let _lock = lock();
    for dtype in DTYPES {
        compare_conv([1, 256, 16, 15], 256, 3, (1, 1, 1), dtype, 700);
        compare_conv([2, 128, 17, 15], 128, 3, (1, 1, 1), dtype, 710);
    }
}

/// Winograd over several bands of tiles at the library's budget (4 Mi transformed values:
/// 16 · 128 channels · 2 208 tiles is 4.5 Mi).
#[test]
fn conv2d_winograd_several_bands() {
    let _lock = lock();
    compare_conv([1, 128, 96, 92], 128, 3, (1, 1, 1), DType::F32, 720);
}

/// Group norm on 4-D and 3-D maps, one and several channels per group.
#[test]
fn group_norm_value_and_gradients() {
    let _lock = lock();
    for dtype in DTYPES {
        for (shape, groups) in [
            (vec![2, 6, 5, 3], 3),
            (vec![2, 64, 9, 7], 32),
            (vec![3, 8, 10], 8),
            (vec![1, 4, 1, 1], 1),
        ] {
            let c = shape[1];
            let x =
                Var::from_tensor(&uniform(&shape, 40, dtype).affine(2.0, 0.5).unwrap()).unwrap();
            let gamma =
                Var::from_tensor(&uniform(&[c], 41, dtype).affine(1.0, 1.0).unwrap()).unwrap();
            let beta = var(&[c], 42, 1.0, dtype);
            let gn = GroupNorm::new(
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                groups,
                1e-5,
            )
            .unwrap();
            compare(
                || gn.forward(&x).unwrap(),
                &[("x", &x), ("gamma", &gamma), ("beta", &beta)],
                &format!("group norm {shape:?} G{groups} {dtype:?}"),
            );
        }
    }
}

/// Batch norm in training and evaluation, with and without the fused ReLU; in training the
/// running statistics of the two paths agree too.
#[test]
fn batch_norm_value_gradients_and_running_stats() {
    let _lock = lock();
    for dtype in DTYPES {
        for shape in [[3, 4, 5, 2], [2, 16, 7, 9], [2, 3, 1, 1]] {
            let c = shape[1];
            let x =
                Var::from_tensor(&uniform(&shape, 60, dtype).affine(2.0, 0.3).unwrap()).unwrap();
            let gamma = Var::from_tensor(&(uniform(&[c], 61, dtype) * 1.5).unwrap()).unwrap();
            let beta = var(&[c], 62, 0.5, dtype);
            let make = || {
                BatchNorm2d::new(
                    gamma.as_tensor().clone(),
                    beta.as_tensor().clone(),
                    (uniform(&[c], 63, dtype) * 0.5).unwrap(),
                    uniform(&[c], 64, dtype).affine(0.5, 1.0).unwrap(),
                    1e-5,
                    0.1,
                )
                .unwrap()
            };
            for (train, relu) in [(true, false), (false, false), (true, true), (false, true)] {
                let what = format!("batch norm {shape:?} train {train} relu {relu} {dtype:?}");
                // One layer per path, so that each path updates its own running statistics.
                let layers = [make(), make()];
                let forward = |bn: &BatchNorm2d| {
                    if relu {
                        bn.forward_t_relu(&x, train).unwrap()
                    } else {
                        bn.forward_t(&x, train).unwrap()
                    }
                };
                let which = std::cell::Cell::new(0);
                let f = || {
                    let y = forward(&layers[which.get()]);
                    which.set(which.get() + 1);
                    y
                };
                compare(f, &[("x", &x), ("gamma", &gamma), ("beta", &beta)], &what);
                for (name, get) in [
                    (
                        "running mean",
                        BatchNorm2d::running_mean as fn(&BatchNorm2d) -> &Tensor,
                    ),
                    ("running var", BatchNorm2d::running_var),
                ] {
                    let (a, b) = (get(&layers[0]), get(&layers[1]));
                    let diff = max_abs_diff(a, b).unwrap();
                    assert!(
                        diff <= tolerance(dtype),
                        "{what}: {name} differs by {diff:e}"
                    );
                }
            }
        }
    }
}

/// SiLU over `[-18.5, 18.5]` (both tails of the sigmoid).
#[test]
fn silu_value_and_gradient() {
    let _lock = lock();
    for dtype in DTYPES {
        let v: Vec<f64> = (0..1000).map(|i| (i as f64 - 500.0) * 0.037).collect();
        let x = Var::from_tensor(
            &Tensor::from_vec(v, (10, 100), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        compare(
            || silu(&x).unwrap(),
            &[("x", &x)],
            &format!("silu {dtype:?}"),
        );
    }
}

/// The attention softmax, through the block (with its group norm): one head as wide as the
/// channels (the VAE's) and several heads (the UNet's), on an odd number of positions.
#[test]
fn attention_softmax_value_and_gradients() {
    let _lock = lock();
    for dtype in DTYPES {
        for (c, head_dim, hw) in [(64, 64, (5, 3)), (64, 16, (4, 4))] {
            let varmap = candle_nn::VarMap::new();
            let vb: VarBuilder = init::seeded_var_builder(&varmap, 3, dtype, &Device::Cpu);
            let block = attention(AttentionConfig::new(c, head_dim), vb).unwrap();
            let x = var(&[2, c, hw.0, hw.1], 80, 2.0, dtype);
            let mut wrt: Vec<(String, Var)> = testing::named_vars(&varmap).unwrap();
            wrt.push(("x".to_string(), x.clone()));
            let wrt: Vec<(&str, &Var)> = wrt.iter().map(|(n, v)| (n.as_str(), v)).collect();
            compare(
                || block.forward(&x).unwrap(),
                &wrt,
                &format!("attention c{c} head {head_dim} {hw:?} {dtype:?}"),
            );
        }
    }
}

/// A whole block that chains every kernel (group norm, SiLU, convolutions, attention):
/// diffusers' `UNetMidBlock2D` with a time embedding, every parameter's gradient compared.
#[test]
fn mid_block_end_to_end() {
    let _lock = lock();
    for dtype in DTYPES {
        let varmap = candle_nn::VarMap::new();
        let vb = init::seeded_var_builder(&varmap, 5, dtype, &Device::Cpu);
        let mut config = UNetMidBlock2DConfig::new(64);
        config.temb_channels = Some(32);
        config.attention_head_dim = Some(16);
        let block = unet_mid_block2d(config, vb).unwrap();
        let x = var(&[2, 64, 7, 5], 90, 1.0, dtype);
        let temb = uniform(&[2, 32], 91, dtype);
        let mut wrt = testing::named_vars(&varmap).unwrap();
        wrt.push(("x".to_string(), x.clone()));
        let wrt: Vec<(&str, &Var)> = wrt.iter().map(|(n, v)| (n.as_str(), v)).collect();
        compare(
            || block.forward(&x, Some(&temb), false).unwrap(),
            &wrt,
            &format!("mid block {dtype:?}"),
        );
    }
}

/// The setting is restored by the guard, and the environment variable's name is stable.
#[test]
fn guard_restores_the_previous_setting() {
    let _lock = lock();
    let before = runtime::generic_ops();
    // Every test restores the setting it found, so between tests it is the environment's.
    let from_env = std::env::var(runtime::GENERIC_OPS_VAR).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    });
    assert_eq!(before, from_env);
    {
        let _outer = force_generic_ops(!before);
        assert_eq!(runtime::generic_ops(), !before);
        {
            let _inner = force_generic_ops(before);
            assert_eq!(runtime::generic_ops(), before);
        }
        assert_eq!(runtime::generic_ops(), !before);
    }
    assert_eq!(runtime::generic_ops(), before);
    assert_eq!(runtime::GENERIC_OPS_VAR, "DIFFAD_GENERIC_OPS");
}

/// The switch really selects the other path: forced, `silu` and `Conv2d` are bit for bit
/// Candle's `silu` and `conv2d` + bias; released, the `f32` SiLU is the vectorised kernel,
/// whose `exp` rounds differently from the standard library's somewhere on the grid.
#[test]
fn switch_selects_candle_ops() {
    let _lock = lock();
    let x = uniform(&[2, 3, 7, 6], 100, DType::F32)
        .affine(8.0, 0.0)
        .unwrap();
    let w = uniform(&[4, 3, 3, 3], 101, DType::F32);
    let b = uniform(&[4], 102, DType::F32);
    let conv = Conv2d::new(w.clone(), Some(b.clone()), Conv2dConfig::padded(1)).unwrap();
    let candle_conv = x
        .conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
        .unwrap();
    {
        let _guard = force_generic_ops(true);
        assert_eq!(
            max_abs_diff(&silu(&x).unwrap(), &x.silu().unwrap()).unwrap(),
            0.0
        );
        assert_eq!(
            max_abs_diff(&conv.forward(&x).unwrap(), &candle_conv).unwrap(),
            0.0
        );
    }
    let _guard = force_generic_ops(false);
    assert!(max_abs_diff(&silu(&x).unwrap(), &x.silu().unwrap()).unwrap() > 0.0);
}
