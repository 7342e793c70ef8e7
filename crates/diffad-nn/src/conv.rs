//! 2-D convolution, the one type every network in the workspace convolves through.
//!
//! `y[b, o, i, j] = bias[o] + sum_{c, u, v} weight[o, c, u, v] * x[b, g(o)·C/G + c, s·i + d·u - p, s·j + d·v - p]`
//! (PyTorch `nn.Conv2d` semantics: zero padding `p`, stride `s`, dilation `d`, `G` groups).
//! The parameters are named `weight` `(C_out, C_in/G, k, k)` and `bias` `(C_out)`, as in a
//! PyTorch/diffusers state dict.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};

/// Hyper-parameters of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct Conv2dConfig {
    /// Zero padding on every side.
    pub padding: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Dilation in both directions.
    pub dilation: usize,
    /// Number of groups (`in` and `out` must be divisible by it).
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Weight init for a fresh `VarMap`; `None` is PyTorch's default
    /// ([`crate::init::pytorch_default`]).
    pub init: Option<Init>,
    /// Bias init; `None` is PyTorch's default (`U(±1/sqrt(fan_in))`).
    pub bias_init: Option<Init>,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: true,
            init: None,
            bias_init: None,
        }
    }
}

impl Conv2dConfig {
    /// The default config with the given zero padding (`padded(1)` with a 3x3 kernel keeps
    /// the spatial size).
    pub fn padded(padding: usize) -> Self {
        Self {
            padding,
            ..Self::default()
        }
    }
}

/// A 2-D convolution layer (PyTorch `nn.Conv2d`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    in_channels: usize,
}

impl Conv2d {
    /// Builds a layer from existing tensors: `weight` `(C_out, C_in/groups, k_h, k_w)`,
    /// optional `bias` `(C_out)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Result<Self> {
        let (c_out, c_in_g, _, _) = weight
            .dims4()
            .map_err(|_| Error::shape("Conv2d", "weight (C_out, C_in/G, kh, kw)", weight.dims()))?;
        if config.groups == 0 || c_out % config.groups != 0 {
            return Err(Error::config(
                "Conv2d",
                format!(
                    "{c_out} output channels not divisible by {} groups",
                    config.groups
                ),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [c_out] {
                return Err(Error::shape("Conv2d", format!("bias ({c_out})"), b.dims()));
            }
        }
        Ok(Self {
            weight,
            bias,
            config,
            in_channels: c_in_g * config.groups,
        })
    }

    /// The weight `(C_out, C_in/groups, k_h, k_w)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(C_out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The layer's hyper-parameters.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// Number of input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the convolution to `x` `(B, C_in, H, W)`, giving `(B, C_out, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = crate::error::expect_nchw("Conv2d", x, self.in_channels)?;
        let (_, _, kh, kw) = self.weight.dims4()?;
        let c = &self.config;
        let span_h = c.dilation * (kh - 1) + 1;
        let span_w = c.dilation * (kw - 1) + 1;
        if h + 2 * c.padding < span_h || w + 2 * c.padding < span_w {
            return Err(Error::shape(
                "Conv2d",
                format!("a padded input of at least {span_h}x{span_w}"),
                x.dims(),
            ));
        }
        Ok(crate::kernels::conv::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            c.padding,
            c.stride,
            c.dilation,
            c.groups,
        )?)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Conv2d::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds a [`Conv2d`] with a square `kernel` from `vb` (`weight`, and `bias` when
/// `config.bias`).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if config.groups == 0
        || !in_channels.is_multiple_of(config.groups)
        || !out_channels.is_multiple_of(config.groups)
    {
        return Err(Error::config(
            "Conv2d",
            format!(
                "{in_channels} -> {out_channels} channels not divisible by {} groups",
                config.groups
            ),
        ));
    }
    if kernel == 0 || config.stride == 0 || config.dilation == 0 {
        return Err(Error::config(
            "Conv2d",
            "kernel, stride and dilation must be positive",
        ));
    }
    let fan_in = in_channels / config.groups * kernel * kernel;
    let weight = vb.get_with_hints(
        (out_channels, in_channels / config.groups, kernel, kernel),
        "weight",
        config
            .init
            .unwrap_or_else(|| crate::init::pytorch_default(fan_in)),
    )?;
    let bias = if config.bias {
        Some(
            vb.get_with_hints(
                out_channels,
                "bias",
                config
                    .bias_init
                    .unwrap_or_else(|| crate::init::pytorch_default(fan_in)),
            )?,
        )
    } else {
        None
    };
    Conv2d::new(weight, bias, config)
}
