//! # diffad-nn: the layers the DiffAD networks share, with gradients that flow
//!
//! diffusers' `AutoencoderKL` and `UNet2DModel` are built from the same blocks, and DRAEM's
//! discriminative U-Net (DiffAD's segmenter, paper §3.3) shares their convolutions and
//! resampling. This crate writes them once on Candle, with diffusers/PyTorch parameter
//! names (so diffusers `safetensors` files load without renaming) and with backward passes
//! that exist and are correct:
//!
//! * [`Conv2d`] (all convolutions go through it), [`Linear`], [`GroupNorm`],
//!   [`BatchNorm2d`] (optionally with a fused ReLU), [`silu`];
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
//! Candle's CUDA backend). On the CPU (`f32`/`f64`), the layers call the crate's private
//! `kernels` module: convolutions (im2col + gemm or Winograd, with a gemm/col2im backward
//! instead of Candle's naive transposed convolution), `GroupNorm` and `BatchNorm2d` (fused,
//! affine included), SiLU and the attention softmax; elsewhere they use Candle's ops, with
//! the same values and gradients. [`runtime::set_generic_ops`] (or `DIFFAD_GENERIC_OPS=1`)
//! makes the CPU take Candle's ops too, so the path CUDA runs is tested without a GPU.
//! Layers use kernels, never the reverse; the module map is in the README.
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
pub mod checkpoint;
pub mod conv;
pub mod dropout;
pub mod embeddings;
pub mod error;
pub mod init;
mod kernels;
pub mod latent;
pub mod linear;
pub mod mid_block;
pub mod norm;
pub mod optim;
pub mod progress;
pub mod resample;
pub mod resnet;
pub mod runtime;
pub mod sampling;
pub mod seed;
pub mod testing;

pub use attention::{attention, Attention, AttentionConfig};
pub use conv::{conv2d, Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embeddings::{timestep_embedding, TimestepEmbedding, Timesteps};
pub use error::{Error, Result, WeightsMismatch};
pub use latent::{DiagonalGaussian, LatentCodec};
pub use linear::{linear, linear_with_config, Linear, LinearConfig};
pub use mid_block::{unet_mid_block2d, UNetMidBlock2D, UNetMidBlock2DConfig};
pub use norm::{
    batch_norm2d, batch_norm2d_with_init, group_norm, silu, BatchNorm2d, BatchNormInit, GroupNorm,
};
pub use progress::{Progress, Silent};
pub use resample::{avg_pool2d, max_pool2d, upsample_bilinear2d, upsample_nearest2x};
pub use resnet::{resnet_block2d, ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm};
pub use runtime::tune_allocator;
pub use sampling::{downsample2d, upsample2d, Downsample2D, Upsample2D};
pub use seed::mix_seed;

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
