//! Normalisation layers ([`GroupNorm`], [`BatchNorm2d`]) and the [`silu`] non-linearity,
//! with backward passes that exist.
//!
//! Candle's fused `layer_norm`/`rms_norm` kernels have no backward. On the CPU, for
//! `f32`/`f64` inputs and parameters, these layers run fused kernels of this crate (one
//! pass forward, one or two backward, the parameter gradients included; see
//! `kernels/group_norm.rs`, `kernels/batch_norm.rs` and `kernels/elementwise.rs`).
//! Elsewhere (CUDA, half precision, or the CPU with [`crate::runtime::set_generic_ops`])
//! they are built from plain tensor ops (`mean`, `sub`, `sqr`, `sqrt`, `div`, which all
//! differentiate), with the same values and gradients: the unit tests below and
//! `tests/generic_path.rs` check the two paths against each other.

use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Group normalisation (Wu & He 2018; PyTorch `nn.GroupNorm`, affine):
/// the channels of each sample are split into `G` groups and
/// `y = (x - mean_g) / sqrt(var_g + eps) * weight[c] + bias[c]`, with the biased variance
/// over each group's channels and positions. Parameters `weight` (init 1) and `bias`
/// (init 0), each `(C)`.
///
/// Half-precision inputs are normalised in `f32` (as diffusers upcasts its norms).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Builds the layer from `weight` and `bias` `(C)`.
    pub fn new(weight: Tensor, bias: Tensor, num_groups: usize, eps: f64) -> Result<Self> {
        let c = weight
            .dims1()
            .map_err(|_| Error::shape("GroupNorm", "weight (C)", weight.dims()))?;
        if bias.dims() != [c] {
            return Err(Error::shape(
                "GroupNorm",
                format!("bias ({c})"),
                bias.dims(),
            ));
        }
        if num_groups == 0 || c % num_groups != 0 {
            return Err(Error::config(
                "GroupNorm",
                format!("{c} channels not divisible by {num_groups} groups"),
            ));
        }
        Ok(Self {
            weight,
            bias,
            num_groups,
            eps,
        })
    }

    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Number of groups `G`.
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// The scale `(C)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift `(C)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Normalises `x` `(B, C, *)` (any number of trailing dims, at least one).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        if self.fused_applies(x) {
            return self.forward_fused(x, false);
        }
        self.forward_plain(x)
    }

    /// `silu(self.forward(x))`, the pair that opens diffusers' res blocks, as one fused
    /// kernel on the CPU (one pass and one tensor fewer, forward and backward).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        if self.fused_applies(x) {
            return self.forward_fused(x, true);
        }
        silu(&self.forward_plain(x)?)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let c = self.channels();
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != c {
            return Err(Error::shape("GroupNorm", format!("(B, {c}, ...)"), dims));
        }
        Ok(())
    }

    /// Whether the fused CPU kernel runs for `x`.
    fn fused_applies(&self, x: &Tensor) -> bool {
        crate::runtime::cpu_kernels(x.device())
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == x.dtype()
            && self.bias.dtype() == x.dtype()
    }

    /// The plain-ops version (any device and dtype).
    fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.channels();
        let dims = x.dims();
        let xn = self.normalize_plain(x)?;
        let mut pshape = vec![1usize; dims.len()];
        pshape[1] = c;
        let w = self.weight.reshape(pshape.as_slice())?;
        let bias = self.bias.reshape(pshape.as_slice())?;
        Ok(xn.broadcast_mul(&w)?.broadcast_add(&bias)?)
    }
}

impl GroupNorm {
    /// The fused CPU kernel ([`crate::kernels::group_norm`]) on `f32`/`f64` tensors,
    /// followed by SiLU when `silu`.
    fn forward_fused(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            crate::kernels::group_norm::GroupNormAffine::new(self.num_groups, self.eps, silu),
        )?)
    }

    /// The normalisation `x̂` from plain tensor ops (any device and dtype; half precision
    /// is normalised in `f32`, as diffusers upcasts its norms).
    fn normalize_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let dtype = x.dtype();
        let xf = match dtype {
            DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
            _ => x.clone(),
        };
        let xg = xf.reshape((dims[0], self.num_groups, ()))?;
        let mean = xg.mean_keepdim(2)?;
        let xc = xg.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xn.reshape(dims)?.to_dtype(dtype)?)
    }
}

impl candle_core::Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        GroupNorm::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds a [`GroupNorm`] from `vb` (`weight` init 1, `bias` init 0).
pub fn group_norm(
    num_groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<GroupNorm> {
    if num_groups == 0 || !channels.is_multiple_of(num_groups) {
        return Err(Error::config(
            "GroupNorm",
            format!("{channels} channels not divisible by {num_groups} groups"),
        ));
    }
    let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
    GroupNorm::new(weight, bias, num_groups, eps)
}

/// Batch normalisation over `(B, C, H, W)` maps (PyTorch `nn.BatchNorm2d`, affine, with
/// running statistics).
///
/// * Training (`forward_t(x, true)`): normalises with the batch mean and biased variance
///   over `(B, H, W)`, and updates the running statistics in place:
///   `running = (1 - momentum) * running + momentum * batch`, the variance term being the
///   unbiased one (`n / (n - 1)` times the biased), as PyTorch does.
/// * Evaluation (`forward_t(x, false)`): `y = (x - running_mean) / sqrt(running_var + eps)
///   * weight + bias`.
///
/// Parameters `weight`, `bias`, `running_mean` and `running_var` (all `(C)`). With a
/// `VarMap`-backed `VarBuilder` the running statistics are variables of the map, so they
/// are saved with a checkpoint; they never receive gradients (they are detached).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// Builds the layer from its four `(C)` tensors. When `running_mean`/`running_var` are
    /// `Var`s (e.g. from a `VarMap`) the running statistics are updated in place.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let c = weight
            .dims1()
            .map_err(|_| Error::shape("BatchNorm2d", "weight (C)", weight.dims()))?;
        for (name, t) in [
            ("bias", &bias),
            ("running_mean", &running_mean),
            ("running_var", &running_var),
        ] {
            if t.dims() != [c] {
                return Err(Error::shape(
                    "BatchNorm2d",
                    format!("{name} ({c})"),
                    t.dims(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::config(
                "BatchNorm2d",
                format!("momentum {momentum} not in [0, 1]"),
            ));
        }
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps,
            momentum,
        })
    }

    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The scale `(C)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift `(C)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The running mean `(C)`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance `(C)`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Normalises `x` `(B, C, H, W)` with batch statistics (`train`) or running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, false)
    }

    /// `relu(self.forward_t(x, train))`, fused into one pass on the CPU (the
    /// `Conv-BN-ReLU` blocks of DRAEM's networks).
    pub fn forward_t_relu(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, true)
    }

    fn forward_act(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let c = self.channels();
        let (b, _, h, w) = crate::error::expect_nchw("BatchNorm2d", x, c)?;
        let n = b * h * w;
        if train && n < 2 {
            return Err(Error::shape(
                "BatchNorm2d",
                "more than one value per channel in training mode",
                x.dims(),
            ));
        }
        if crate::runtime::cpu_kernels(x.device())
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == x.dtype()
            && self.bias.dtype() == x.dtype()
        {
            return self.forward_fused(&x.contiguous()?, train, relu);
        }
        let y = self.forward_plain(x, train)?;
        Ok(if relu { y.relu()? } else { y })
    }

    /// The plain-ops version of [`BatchNorm2d::forward_t`] (any device and dtype).
    fn forward_plain(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.channels();
        let (b, _, h, w) = x.dims4()?;
        let (shape, n) = ((1, c, 1, 1), b * h * w);
        let (mean, var) = if train {
            let mean = x.mean_keepdim(3)?.mean_keepdim(2)?.mean_keepdim(0)?;
            let var = x
                .broadcast_sub(&mean)?
                .sqr()?
                .mean_keepdim(3)?
                .mean_keepdim(2)?
                .mean_keepdim(0)?;
            self.update_running(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                n,
            )?;
            (mean, var)
        } else {
            let mean = self
                .running_mean
                .as_tensor()
                .detach()
                .to_dtype(x.dtype())?
                .reshape(shape)?;
            let var = self
                .running_var
                .as_tensor()
                .detach()
                .to_dtype(x.dtype())?
                .reshape(shape)?;
            (mean, var)
        };
        let xn = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xn
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)?)
    }

    /// `running = (1 - momentum) running + momentum batch`, from the batch mean and biased
    /// variance `(C)` over `n` values per channel (the variance term made unbiased).
    fn update_running(&self, batch_mean: &Tensor, batch_var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let batch_mean = batch_mean.to_dtype(self.running_mean.dtype())?;
        let batch_var =
            (batch_var * (n as f64 / (n as f64 - 1.0)))?.to_dtype(self.running_var.dtype())?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (batch_mean * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (batch_var * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }

    /// The fused CPU kernel ([`crate::kernels::batch_norm`]) on a contiguous `x`.
    fn forward_fused(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        use crate::kernels::batch_norm::{channel_stats, BatchNormOp, Stats};
        let (mean, var) = if train {
            let st = channel_stats(x)?;
            let (mean, var) = (st.get(0)?, st.get(1)?);
            let n = x.elem_count() / self.channels();
            self.update_running(&mean, &var, n)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        };
        let to_f64 = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1()?) };
        let op = BatchNormOp {
            stats: Stats::new(to_f64(&mean)?, &to_f64(&var)?, self.eps),
            train,
            relu_beta: if relu {
                Some(to_f64(&self.bias)?)
            } else {
                None
            },
        };
        Ok(x.apply_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, op)?)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        BatchNorm2d::forward_t(self, x, train).map_err(candle_core::Error::wrap)
    }
}

/// Initial values of a [`BatchNorm2d`]'s affine parameters.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormInit {
    /// Init of `weight` (PyTorch: 1; DRAEM: `N(1, 0.02)`).
    pub weight: Init,
    /// Init of `bias` (0 for both).
    pub bias: Init,
}

impl Default for BatchNormInit {
    /// PyTorch's default: weight 1, bias 0.
    fn default() -> Self {
        Self {
            weight: Init::Const(1.0),
            bias: Init::Const(0.0),
        }
    }
}

impl BatchNormInit {
    /// DRAEM's `weights_init`: weight `N(1, 0.02)`, bias 0.
    pub fn draem() -> Self {
        Self {
            weight: crate::init::DRAEM_BN_WEIGHT,
            bias: Init::Const(0.0),
        }
    }
}

/// Builds a [`BatchNorm2d`] with PyTorch's default init (weight 1, bias 0, running mean 0,
/// running variance 1). PyTorch's defaults are `eps = 1e-5`, `momentum = 0.1`.
pub fn batch_norm2d(
    channels: usize,
    eps: f64,
    momentum: f64,
    vb: VarBuilder,
) -> Result<BatchNorm2d> {
    batch_norm2d_with_init(channels, eps, momentum, BatchNormInit::default(), vb)
}

/// Builds a [`BatchNorm2d`] with the given init of its affine parameters.
pub fn batch_norm2d_with_init(
    channels: usize,
    eps: f64,
    momentum: f64,
    init: BatchNormInit,
    vb: VarBuilder,
) -> Result<BatchNorm2d> {
    let weight = vb.get_with_hints(channels, "weight", init.weight)?;
    let bias = vb.get_with_hints(channels, "bias", init.bias)?;
    let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
    BatchNorm2d::new(weight, bias, running_mean, running_var, eps, momentum)
}

/// SiLU (swish), `x * sigmoid(x)`, the non-linearity of diffusers' blocks (a vectorised
/// kernel with its backward on the CPU, Candle's `silu` elsewhere).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(crate::kernels::elementwise::silu(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused BatchNorm kernel and the plain-ops version agree in value, gradients and
    /// running statistics, in training and evaluation modes.
    #[test]
    fn fused_batch_norm_matches_plain_ops() {
        let dev = Device::Cpu;
        let (b, c, h, w) = (3, 4, 5, 2);
        let n = b * c * h * w;
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3 + 2.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (b, c, h, w), &dev).unwrap()).unwrap();
        let r: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64) - 3.0).collect();
        let r = Tensor::from_vec(r, (b, c, h, w), &dev).unwrap();
        let make = || {
            BatchNorm2d::new(
                Var::new(&[1.0f64, 2.0, -1.0, 0.5], &dev)
                    .unwrap()
                    .as_tensor()
                    .clone(),
                Var::new(&[0.1f64, 0.2, 0.3, -0.4], &dev)
                    .unwrap()
                    .as_tensor()
                    .clone(),
                Tensor::new(&[0.5f64, -0.2, 0.0, 1.0], &dev).unwrap(),
                Tensor::new(&[1.5f64, 0.7, 2.0, 1.0], &dev).unwrap(),
                1e-5,
                0.1,
            )
            .unwrap()
        };
        let max = |t: Tensor| -> f64 { t.abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
        for (train, relu) in [(true, false), (false, false), (true, true), (false, true)] {
            let (fused_bn, plain_bn) = (make(), make());
            let (fused, plain) = if relu {
                (
                    fused_bn.forward_fused(&x, train, true).unwrap(),
                    plain_bn.forward_plain(&x, train).unwrap().relu().unwrap(),
                )
            } else {
                (
                    fused_bn.forward_fused(&x, train, false).unwrap(),
                    plain_bn.forward_plain(&x, train).unwrap(),
                )
            };
            assert!(
                max((&fused - &plain).unwrap()) < 1e-12,
                "value, train {train}"
            );
            let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let pairs = [
                (x.as_tensor(), x.as_tensor()),
                (fused_bn.weight(), plain_bn.weight()),
                (fused_bn.bias(), plain_bn.bias()),
            ];
            for (k, (a, b)) in pairs.into_iter().enumerate() {
                let (ga, gb) = (gf.get(a).unwrap(), gp.get(b).unwrap());
                assert!(max(ga.clone()) > 1e-3, "gradient {k}, train {train}");
                assert!(
                    max((ga - gb).unwrap()) < 1e-10,
                    "gradient {k}, train {train}"
                );
            }
            let running =
                |bn: &BatchNorm2d| Tensor::cat(&[bn.running_mean(), bn.running_var()], 0).unwrap();
            assert!(max((running(&fused_bn) - running(&plain_bn)).unwrap()) < 1e-12);
        }
    }

    /// `forward_silu` (the fused kernel) equals SiLU after the plain-ops normalisation, in
    /// value and every gradient, in `f64` (tightly) and `f32` (through the vectorised path,
    /// with partial vectors: 17 positions per channel).
    #[test]
    fn fused_silu_matches_plain_ops() {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            let n = 2 * 6 * 17;
            let v: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3 + 2.0)
                .collect();
            let x = Tensor::from_vec(v, (2, 6, 17), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let weight = Var::from_tensor(
                &Tensor::new(&[1.0f64, 2.0, -1.0, 0.5, 3.0, 1.5], &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let bias = Var::from_tensor(
                &Tensor::new(&[0.1f64, 0.2, 0.3, -0.4, 0.0, 1.0], &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let gn = GroupNorm::new(
                weight.as_tensor().clone(),
                bias.as_tensor().clone(),
                3,
                1e-5,
            )
            .unwrap();
            let r: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64) - 3.0).collect();
            let r = Tensor::from_vec(r, (2, 6, 17), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fused = gn.forward_silu(&x).unwrap();
            let plain = silu(
                &gn.normalize_plain(&x)
                    .unwrap()
                    .broadcast_mul(&gn.weight.reshape((1, 6, 1)).unwrap())
                    .unwrap()
                    .broadcast_add(&gn.bias.reshape((1, 6, 1)).unwrap())
                    .unwrap(),
            )
            .unwrap();
            let max = |t: Tensor| -> f64 {
                t.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            };
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max((&fused - &plain).unwrap()) < tol, "{dtype:?} value");
            let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (plain * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (what, v) in [("x", &x), ("weight", &weight), ("bias", &bias)] {
                let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
                assert!(max(a.clone()) > 1e-3, "{what}");
                assert!(
                    max((a - b).unwrap()) < 100.0 * tol,
                    "{dtype:?} {what}: {}",
                    max((a - b).unwrap())
                );
            }
        }
    }

    /// The fused CPU kernel and the plain-ops version agree in value and gradient.
    #[test]
    fn fused_kernel_matches_plain_ops() {
        let dev = Device::Cpu;
        let n = 2 * 6 * 5 * 3;
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.3 + 2.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(v, (2, 6, 5, 3), &dev).unwrap()).unwrap();
        let weight = Var::new(&[1.0f64, 2.0, -1.0, 0.5, 3.0, 1.5], &dev).unwrap();
        let bias = Var::new(&[0.1f64, 0.2, 0.3, -0.4, 0.0, 1.0], &dev).unwrap();
        let gn = GroupNorm::new(
            weight.as_tensor().clone(),
            bias.as_tensor().clone(),
            3,
            1e-5,
        )
        .unwrap();
        let r: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64) - 3.0).collect();
        let r = Tensor::from_vec(r, (2, 6, 5, 3), &dev).unwrap();
        let fused = gn.forward_fused(&x, false).unwrap();
        let plain = gn
            .normalize_plain(&x)
            .unwrap()
            .broadcast_mul(&gn.weight.reshape((1, 6, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&gn.bias.reshape((1, 6, 1, 1)).unwrap())
            .unwrap();
        let max = |t: Tensor| -> f64 { t.abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
        assert!(max((&fused - &plain).unwrap()) < 1e-12);
        let gf = (fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (what, v) in [("x", &x), ("weight", &weight), ("bias", &bias)] {
            let (a, b) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(max(a.clone()) > 1e-3, "{what}");
            assert!(max((a - b).unwrap()) < 1e-12, "{what}");
        }
    }
}
