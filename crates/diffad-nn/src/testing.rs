//! Gradient checks for tests, usable from any crate's tests.
//!
//! * [`params_without_gradient`]: back-propagates a loss and lists the trainable variables
//!   of a `VarMap` whose gradient is missing or identically zero (the symptom of a Candle
//!   op without a backward, or of a parameter that is built but never used).
//! * [`check_gradients`]: compares the gradients of a scalar loss with central finite
//!   differences, `(L(θ + ε) - L(θ - ε)) / 2ε`, element by element. Use `f64` variables.
//!
//! * [`test_device`] and [`device_tolerance`]: the device the reference tests run on
//!   (`DIFFAD_TEST_DEVICE`, default the CPU) and the looser tolerance they use off the CPU.
//! * [`relative_max_error`]: how far a half-precision output is from the `f32` one.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use diffad_nn::testing::{check_gradients, params_without_gradient, FiniteDifference};
//! let varmap = VarMap::new();
//! let vb = diffad_nn::init::seeded_var_builder(&varmap, 0, DType::F64, &Device::Cpu);
//! let layer = diffad_nn::linear(3, 2, vb)?;
//! let x = Tensor::new(&[[0.5f64, -1.0, 2.0]], &Device::Cpu)?;
//! let loss = || -> diffad_nn::Result<Tensor> { Ok(layer.forward(&x)?.sqr()?.sum_all()?) };
//! assert!(params_without_gradient(&varmap, &loss()?)?.is_empty());
//! let vars = diffad_nn::testing::named_vars(&varmap)?;
//! assert!(check_gradients(&vars, loss, &FiniteDifference::default())?.is_empty());
//! # Ok::<(), diffad_nn::Error>(())
//! ```

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// The environment variable that chooses the device of the reference tests: unset, empty
/// or `cpu` for the CPU, `cuda` for the first CUDA device, `cuda:N` for the `N`-th.
pub const TEST_DEVICE_VAR: &str = "DIFFAD_TEST_DEVICE";

/// How much looser than on the CPU a reference tolerance is on another device
/// ([`device_tolerance`]).
///
/// The same function is computed in another order there: cuBLAS and Candle's CUDA kernels
/// split sums into blocks and reduce them as trees, Candle's CUDA convolution runs its own
/// im2col and its backward a transposed convolution, and the device's `exp`/`sqrt` are not
/// the CPU's. Those orders change an `f32` result by a few ulp per reduction of `n` terms
/// (about `sqrt(n)·2⁻²⁴` relative), which a deep block accumulates; two orders of magnitude
/// on top of the CPU tolerance leave room for that and still catch a wrong function (an
/// error of a wrong weight, padding or sign is of the order of the values themselves).
pub const DEVICE_TOLERANCE_FACTOR: f64 = 100.0;

/// The device named by [`TEST_DEVICE_VAR`] (the CPU when it is unset).
///
/// `cuda` on a build without the `cuda` feature (or without a GPU) is an error that says
/// so, never a silent fallback to the CPU.
pub fn test_device() -> Result<Device> {
    let value = std::env::var(TEST_DEVICE_VAR).unwrap_or_default();
    let name = value.trim().to_ascii_lowercase();
    let ordinal = match name.as_str() {
        "" | "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(Error::config(
                    "testing",
                    format!("{TEST_DEVICE_VAR}={value}: expected `cpu`, `cuda` or `cuda:N`"),
                ))
            }
        },
    };
    Device::new_cuda(ordinal).map_err(|e| {
        Error::config(
            "testing",
            format!(
                "{TEST_DEVICE_VAR}={value}: no CUDA device {ordinal} ({e}); build the tests \
                 with `--features cuda` on a machine with a GPU"
            ),
        )
    })
}

/// The tolerance of a reference comparison on `device`: `cpu_tolerance` on the CPU (the
/// tests' figures are unchanged there), `cpu_tolerance ·` [`DEVICE_TOLERANCE_FACTOR`]
/// elsewhere.
pub fn device_tolerance(device: &Device, cpu_tolerance: f64) -> f64 {
    if device.is_cpu() {
        cpu_tolerance
    } else {
        cpu_tolerance * DEVICE_TOLERANCE_FACTOR
    }
}

/// `max |a - b|` over all elements, in `f64` (for tolerance checks in tests).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

/// Names of non-trainable buffers that live in a `VarMap` (BatchNorm running statistics)
/// and are never expected to receive a gradient.
pub const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Whether `name` is a buffer (see [`BUFFER_SUFFIXES`]) rather than a trainable parameter.
pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The variables of `varmap`, sorted by name, buffers included.
pub fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::config("testing", "VarMap lock poisoned"))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Back-propagates `loss` and returns, sorted, the names of the trainable variables of
/// `varmap` (buffers excluded) whose gradient is missing or all zeros.
pub fn params_without_gradient(varmap: &VarMap, loss: &Tensor) -> Result<Vec<String>> {
    let grads = loss.backward()?;
    let mut missing = Vec::new();
    for (name, var) in named_vars(varmap)? {
        if is_buffer(&name) {
            continue;
        }
        let nonzero = match grads.get(var.as_tensor()) {
            Some(g) => {
                g.abs()?
                    .to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?
                    > 0.0
            }
            None => false,
        };
        if !nonzero {
            missing.push(name);
        }
    }
    Ok(missing)
}

/// Settings of [`check_gradients`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FiniteDifference {
    /// Step `ε` of the central difference.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of the numeric gradient's magnitude).
    pub rtol: f64,
    /// At most this many elements are checked per variable (evenly spaced).
    pub max_elements_per_var: usize,
}

impl Default for FiniteDifference {
    /// `ε = 1e-6`, `atol = 1e-6`, `rtol = 1e-5`, 64 elements per variable: tight for `f64`.
    fn default() -> Self {
        Self {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            max_elements_per_var: 64,
        }
    }
}

/// One element whose analytic and numeric gradients disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientMismatch {
    /// Variable name.
    pub name: String,
    /// Flat index of the element.
    pub index: usize,
    /// Gradient from `backward`.
    pub analytic: f64,
    /// Central finite difference.
    pub numeric: f64,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// Compares `d loss / d var` from `backward` with central finite differences for each of
/// `vars` (the loss is summed to a scalar if it is not one) and returns every element
/// outside `atol + rtol·|numeric|`. `loss_fn` must be deterministic (no dropout); the
/// variables are restored afterwards.
pub fn check_gradients<F>(
    vars: &[(String, Var)],
    loss_fn: F,
    opts: &FiniteDifference,
) -> Result<Vec<GradientMismatch>>
where
    F: Fn() -> Result<Tensor>,
{
    let loss = loss_fn()?;
    let loss = if loss.rank() == 0 {
        loss
    } else {
        loss.sum_all()?
    };
    let grads = loss.backward()?;
    let mut mismatches = Vec::new();
    for (name, var) in vars {
        let n = var.elem_count();
        let analytic: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
            None => vec![0.0; n],
        };
        let original = var.as_tensor().detach().copy()?;
        let base: Vec<f64> = original.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let count = n.min(opts.max_elements_per_var.max(1));
        let set_value = |values: &[f64]| -> Result<()> {
            let t = Tensor::from_vec(values.to_vec(), var.shape(), var.device())?
                .to_dtype(var.dtype())?;
            var.set(&t)?;
            Ok(())
        };
        let mut values = base.clone();
        for j in 0..count {
            let index = j * n / count;
            values[index] = base[index] + opts.eps;
            set_value(&values)?;
            let plus = scalar(&loss_fn()?)?;
            values[index] = base[index] - opts.eps;
            set_value(&values)?;
            let minus = scalar(&loss_fn()?)?;
            values[index] = base[index];
            let numeric = (plus - minus) / (2.0 * opts.eps);
            let a = analytic[index];
            let within = (a - numeric).abs() <= opts.atol + opts.rtol * numeric.abs();
            // NaN on either side is a mismatch too.
            if !within || a.is_nan() || numeric.is_nan() {
                mismatches.push(GradientMismatch {
                    name: name.clone(),
                    index,
                    analytic: a,
                    numeric,
                });
            }
        }
        var.set(&original)?;
    }
    Ok(mismatches)
}

/// `max |a − b| / max |a|` over all elements, in `f64`: the error of `b` relative to the
/// scale of the reference `a` (the measure the half-precision tests bound). `a` and `b`
/// may have any float dtypes; their shapes must agree.
pub fn relative_max_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        return Err(Error::shape(
            "relative_max_error",
            format!("{:?}", a.dims()),
            b.dims(),
        ));
    }
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = a.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(if scale > 0.0 { diff / scale } else { diff })
}
