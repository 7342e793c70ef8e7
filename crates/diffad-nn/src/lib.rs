//! # diffad-nn: the layers the DiffAD networks share, with gradients that flow
//!
//! diffusers' `AutoencoderKL` and `UNet2DModel` are built from the same blocks, and DRAEM's
//! discriminative U-Net (DiffAD's segmenter, paper §3.3) shares their convolutions and
//! resampling. This crate writes them once on Candle, with diffusers/PyTorch parameter
//! names (so diffusers `safetensors` files load without renaming) and with backward passes
//! that exist and are correct:
//!
//! * [`Conv2d`] (all convolutions go through it), [`Linear`], [`GroupNorm`] and
//!   [`BatchNorm2d`] from plain tensor ops, [`silu`];
//! * [`Attention`] over `(B, C, H, W)` maps, [`ResnetBlock2D`], [`Downsample2D`],
//!   [`Upsample2D`], [`Timesteps`], [`TimestepEmbedding`], [`UNetMidBlock2D`];
//! * [`upsample_nearest2x`] (gradient accumulates), [`upsample_bilinear2d`]
//!   (`align_corners = True`, as two matmuls), [`max_pool2d`], [`avg_pool2d`];
//! * [`init`]: PyTorch's and DRAEM's initialisations and a seeded `VarBuilder`;
//! * [`optim`]: AdamW/Adam with checkpointable state, gradient clipping, EMA, LR schedules;
//! * [`checkpoint`]: strict, atomic safetensors/JSON I/O (missing/unexpected/misshapen tensors);
//! * [`testing`]: "every parameter gets a gradient" and finite-difference checks.
//!
//! Every layer takes a `VarBuilder` and runs on any `Device` (the `cuda` feature enables
//! Candle's CUDA backend). On the CPU, convolutions (im2col + gemm, with a gemm/col2im
//! backward instead of Candle's naive transposed convolution), GroupNorm's normalisation
//! and the attention softmax run fused kernels; elsewhere Candle's ops, with the same
//! values and gradients.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use diffad_nn::{resnet_block2d, ResnetBlock2DConfig};
//!
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = diffad_nn::init::seeded_var_builder(&varmap, 42, DType::F32, &dev);
//! let block = resnet_block2d(ResnetBlock2DConfig::new(32, 64), vb.pp("resnets.0"))?;
//! let x = Tensor::zeros((2, 32, 8, 8), DType::F32, &dev)?;
//! let y = block.forward(&x, None, false)?;
//! assert_eq!(y.dims(), &[2, 64, 8, 8]);
//! assert!(varmap.data().lock().unwrap().contains_key("resnets.0.conv_shortcut.weight"));
//! # Ok::<(), diffad_nn::Error>(())
//! ```

pub mod attention;
mod batch_norm_kernel;
pub mod checkpoint;
pub mod conv;
mod conv_kernel;
pub mod dropout;
mod elementwise_kernel;
pub mod embeddings;
pub mod error;
mod group_norm_kernel;
pub mod init;
mod kernel_util;
pub mod linear;
pub mod mid_block;
pub mod norm;
pub mod optim;
pub mod resample;
pub mod resnet;
pub mod runtime;
pub mod sampling;
mod softmax_kernel;
pub mod testing;
mod winograd;

pub use attention::{attention, Attention, AttentionConfig};
pub use conv::{conv2d, Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embeddings::{timestep_embedding, TimestepEmbedding, Timesteps};
pub use error::{Error, Result};
pub use linear::{linear, linear_with_config, Linear, LinearConfig};
pub use mid_block::{unet_mid_block2d, UNetMidBlock2D, UNetMidBlock2DConfig};
pub use norm::{
    batch_norm2d, batch_norm2d_with_init, group_norm, silu, BatchNorm2d, BatchNormInit, GroupNorm,
};
pub use resample::{avg_pool2d, max_pool2d, upsample_bilinear2d, upsample_nearest2x};
pub use resnet::{resnet_block2d, ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm};
pub use runtime::tune_allocator;
pub use sampling::{downsample2d, upsample2d, Downsample2D, Upsample2D};

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
