//! diffusers' `Downsample2D` and `Upsample2D` (parameter name `conv`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::error::{expect_nchw, Error, Result};
use crate::resample::{avg_pool2d, upsample_nearest2x};

/// Halves the resolution of a `(B, C, H, W)` map (diffusers `Downsample2D`):
///
/// * with a convolution: 3x3, stride 2, zero padding `padding`. With `padding = 0` the map
///   is first padded by one zero row at the bottom and one zero column on the right
///   (diffusers' asymmetric `(0, 1, 0, 1)` pad, used by the VAE encoder); UNet2DModel uses
///   `padding = 1`;
/// * without: 2x2 average pooling (channels unchanged).
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Option<Conv2d>,
    channels: usize,
    padding: usize,
}

impl Downsample2D {
    /// The convolution, if the layer has one.
    pub fn conv(&self) -> Option<&Conv2d> {
        self.conv.as_ref()
    }

    /// Downsamples `x` `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        expect_nchw("Downsample2D", x, self.channels)?;
        match &self.conv {
            Some(conv) => {
                if self.padding == 0 {
                    let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
                    conv.forward(&padded)
                } else {
                    conv.forward(x)
                }
            }
            None => avg_pool2d(x, 2),
        }
    }
}

impl candle_core::Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Downsample2D::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds a [`Downsample2D`]: `use_conv` selects the strided convolution (`conv`,
/// `channels -> out_channels`, padding `padding`) over average pooling (which needs
/// `out_channels == channels`).
pub fn downsample2d(
    channels: usize,
    out_channels: usize,
    use_conv: bool,
    padding: usize,
    vb: VarBuilder,
) -> Result<Downsample2D> {
    let conv = if use_conv {
        let cfg = Conv2dConfig {
            padding,
            stride: 2,
            ..Conv2dConfig::default()
        };
        Some(conv2d(channels, out_channels, 3, cfg, vb.pp("conv"))?)
    } else {
        if channels != out_channels {
            return Err(Error::config(
                "Downsample2D",
                format!("average pooling cannot map {channels} to {out_channels} channels"),
            ));
        }
        None
    };
    Ok(Downsample2D {
        conv,
        channels,
        padding,
    })
}

/// Doubles the resolution of a `(B, C, H, W)` map (diffusers `Upsample2D`): nearest x2
/// ([`upsample_nearest2x`], whose gradient accumulates), then, with `use_conv`, a 3x3
/// convolution with padding 1 named `conv`.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Option<Conv2d>,
    channels: usize,
}

impl Upsample2D {
    /// The convolution, if the layer has one.
    pub fn conv(&self) -> Option<&Conv2d> {
        self.conv.as_ref()
    }

    /// Upsamples `x` `(B, C, H, W)` to `(B, C_out, 2H, 2W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        expect_nchw("Upsample2D", x, self.channels)?;
        let up = upsample_nearest2x(x)?;
        match &self.conv {
            Some(conv) => conv.forward(&up),
            None => Ok(up),
        }
    }
}

impl candle_core::Module for Upsample2D {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Upsample2D::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Builds an [`Upsample2D`] (`conv`: `channels -> out_channels`, 3x3, padding 1, when
/// `use_conv`; otherwise `out_channels` must equal `channels`).
pub fn upsample2d(
    channels: usize,
    out_channels: usize,
    use_conv: bool,
    vb: VarBuilder,
) -> Result<Upsample2D> {
    let conv = if use_conv {
        Some(conv2d(
            channels,
            out_channels,
            3,
            Conv2dConfig::padded(1),
            vb.pp("conv"),
        )?)
    } else {
        if channels != out_channels {
            return Err(Error::config(
                "Upsample2D",
                format!("without a convolution cannot map {channels} to {out_channels} channels"),
            ));
        }
        None
    };
    Ok(Upsample2D { conv, channels })
}
