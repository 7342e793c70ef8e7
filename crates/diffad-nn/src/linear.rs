//! Fully connected layer, `y = x W^T + b` (PyTorch `nn.Linear`; parameters `weight`
//! `(out, in)` and `bias` `(out)`).

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Hyper-parameters of a [`Linear`] layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearConfig {
    /// Whether the layer has no bias (`false`, the default, means it has one).
    pub no_bias: bool,
    /// Weight init for a fresh `VarMap`; `None` is PyTorch's default.
    pub init: Option<Init>,
    /// Bias init; `None` is PyTorch's default (`U(±1/sqrt(in))`).
    pub bias_init: Option<Init>,
}

/// A fully connected layer applied to the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Builds a layer from `weight` `(out, in)` and an optional `bias` `(out)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, _) = weight
            .dims2()
            .map_err(|_| Error::shape("Linear", "weight (out, in)", weight.dims()))?;
        if let Some(b) = &bias {
            if b.dims() != [out] {
                return Err(Error::shape("Linear", format!("bias ({out})"), b.dims()));
            }
        }
        Ok(Self { weight, bias })
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer to `x` `(..., in)`, giving `(..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_f = self.in_features();
        if x.dims().last() != Some(&in_f) {
            return Err(Error::shape("Linear", format!("(..., {in_f})"), x.dims()));
        }
        let dims = x.dims();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, in_f))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = self.out_features();
        }
        Ok(y.reshape(out_dims)?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Linear::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds a [`Linear`] layer with a bias and PyTorch's default init.
pub fn linear(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Linear> {
    linear_with_config(in_features, out_features, LinearConfig::default(), vb)
}

/// Builds a [`Linear`] layer with the given config.
pub fn linear_with_config(
    in_features: usize,
    out_features: usize,
    config: LinearConfig,
    vb: VarBuilder,
) -> Result<Linear> {
    let weight = vb.get_with_hints(
        (out_features, in_features),
        "weight",
        config
            .init
            .unwrap_or_else(|| crate::init::pytorch_default(in_features)),
    )?;
    let bias = if config.no_bias {
        None
    } else {
        Some(
            vb.get_with_hints(
                out_features,
                "bias",
                config
                    .bias_init
                    .unwrap_or_else(|| crate::init::pytorch_default(in_features)),
            )?,
        )
    };
    Linear::new(weight, bias)
}
