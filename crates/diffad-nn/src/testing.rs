//! Gradient checks for tests, usable from any crate's tests.
//!
//! * [`params_without_gradient`]: back-propagates a loss and lists the trainable variables
//!   of a `VarMap` whose gradient is missing or identically zero (the symptom of a Candle
//!   op without a backward, or of a parameter that is built but never used).
//! * [`check_gradients`]: compares the gradients of a scalar loss with central finite
//!   differences, `(L(θ + ε) - L(θ - ε)) / 2ε`, element by element. Use `f64` variables.
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

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

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
