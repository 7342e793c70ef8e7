//! Parameter initialisation: PyTorch's defaults, DRAEM's, and a seeded `VarBuilder`.
//!
//! A layer built from a `VarMap`-backed [`VarBuilder`] receives its initial values from
//! the [`Init`] hint it passes to `vb.get_with_hints`, so every layer here takes its init
//! from its config (`None` meaning PyTorch's default).
//!
//! * PyTorch default for `nn.Conv2d` / `nn.Linear`: `kaiming_uniform_(a = sqrt(5))`, which
//!   is `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for the weight, and the same bound for the bias
//!   ([`pytorch_default`]).
//! * DRAEM's `weights_init`: conv weights `N(0, 0.02)` ([`DRAEM_CONV_WEIGHT`]), BatchNorm
//!   weight `N(1, 0.02)` ([`DRAEM_BN_WEIGHT`]) and bias 0 (`weights_init`
//!   in DRAEM's `train_DRAEM.py`; `docs/reference.md` §4).
//!
//! Candle's own `VarMap` draws initial values with the device RNG, which cannot be seeded
//! on the CPU. [`seeded_var_builder`] returns a `VarBuilder` over the same `VarMap` that
//! draws every new variable on the CPU from a ChaCha8 stream seeded by `(seed, name)`, so a
//! model's initial weights depend only on the seed and the parameter names: not on the
//! thread count, the device, or the order in which layers are built.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// DRAEM's convolution weight init, `N(0, 0.02)`.
pub const DRAEM_CONV_WEIGHT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// DRAEM's BatchNorm weight init, `N(1, 0.02)` (the bias starts at 0).
pub const DRAEM_BN_WEIGHT: Init = Init::Randn {
    mean: 1.0,
    stdev: 0.02,
};

/// PyTorch's default init of `nn.Conv2d` / `nn.Linear` weights and biases:
/// `U(-b, b)` with `b = 1 / sqrt(fan_in)` (kaiming-uniform with `a = sqrt(5)` reduces to
/// this bound for the weight; the bias uses the same bound).
///
/// `fan_in` is `in_channels / groups * k_h * k_w` for a convolution, `in_features` for a
/// linear layer. A zero `fan_in` gives the zero init.
pub fn pytorch_default(fan_in: usize) -> Init {
    if fan_in == 0 {
        return Init::Const(0.0);
    }
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 64-bit FNV-1a hash of a parameter name, mixed with the seed.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Draws the initial values of a variable named `name` with the given `init`, on the CPU,
/// from a ChaCha8 stream seeded by `(seed, name)`.
pub fn draw_init(init: &Init, shape: &Shape, name: &str, seed: u64) -> candle_core::Result<Tensor> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, name));
    let values: Vec<f64> = match *init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..=up)).collect(),
        Init::Randn { mean, stdev } => {
            let normal = Normal::new(mean, stdev)
                .map_err(|e| candle_core::Error::Msg(format!("init of {name}: {e}")))?;
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        }
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan: usize = match fan {
                FanInOut::FanIn | FanInOut::FanOut => fan.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
                }
                NormalOrUniform::Normal => {
                    let normal = Normal::new(0.0, std)
                        .map_err(|e| candle_core::Error::Msg(format!("init of {name}: {e}")))?;
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                }
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)
}

/// A `VarBuilder` backend over a [`VarMap`] that initialises new variables from a seeded
/// CPU stream (see the module doc).
struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let init = draw_init(&h, &s, name, self.seed)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&init)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("cannot find tensor {name} in the VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A `VarBuilder` over `varmap` whose new variables are drawn reproducibly from `seed`
/// (per parameter name, on the CPU) and then moved to `device` in `dtype`.
///
/// Variables already in the map (e.g. loaded from a checkpoint) are returned as they are.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::VarMap;
/// let (a, b) = (VarMap::new(), VarMap::new());
/// let la = diffad_nn::linear(4, 3, diffad_nn::init::seeded_var_builder(&a, 7, DType::F32, &Device::Cpu))?;
/// let lb = diffad_nn::linear(4, 3, diffad_nn::init::seeded_var_builder(&b, 7, DType::F32, &Device::Cpu))?;
/// let diff = (la.weight() - lb.weight())?.abs()?.sum_all()?.to_scalar::<f32>()?;
/// assert_eq!(diff, 0.0);
/// # Ok::<(), diffad_nn::Error>(())
/// ```
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap {
            varmap: varmap.clone(),
            seed,
        }),
        dtype,
        device.clone(),
    )
}
