//! # diffad-synth
//!
//! DRAEM-style anomaly simulation (Zavrtanik et al., ICCV 2021, section 3.3),
//! which DiffAD (Zhang et al., ICCV 2023) reuses unchanged to train its latent
//! diffusion model and its segmentation network (`docs/reference.md` §1):
//!
//! * [`image`]: the CPU-side image types on `ndarray`, [`RgbImage`] (HWC
//!   `f32`) and [`Plane`] / [`Mask`] (`H x W` `f32`), their conversions to
//!   and from Candle tensors and `image` buffers, and image file I/O;
//! * [`geometry`]: bilinear rotation about the centre and bilinear resizing;
//! * [`perlin`]: Perlin noise with the semantics of DRAEM's `rand_perlin_2d_np`,
//!   for any image size;
//! * [`mask`]: anomaly masks `M` (per-axis scale `2^k`, `k ~ U{0..5}`,
//!   rotation `U[-90, 90]` degrees, threshold 0.5) and foreground masks;
//! * [`texture`]: the [`TextureSource`] trait and three sources (a folder such
//!   as DTD, a built-in procedural generator, self-augmentation), plus a
//!   standalone seeded texture generator ([`procedural_texture`],
//!   [`PatternStyle`]);
//! * [`augment`]: DRAEM's ten imgaug augmenters, three per sample;
//! * [`synth`]: blending `x_a = x (1 - M) + (1 - beta) T M + beta x M` and the
//!   batch-level [`AnomalySynthesizer`], parallel and reproducible per
//!   `(seed, epoch, index)`.
//!
//! Modules import one way: `image` (types, conversions, I/O) and `error` at
//! the bottom; `geometry` and `perlin` on `image`; `augment` on `geometry`
//! (and the private `color`); `mask` on `geometry` and `perlin`; `texture` on
//! `image`, `geometry`, `augment` and `perlin`; `synth` on all of them.
//!
//! The library prints nothing: warnings (a skipped corrupt texture file) go
//! through the [`log`](https://docs.rs/log) facade.
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::Device;
//! use diffad_synth::{
//!     procedural_texture, AnomalySynthesizer, PatternKind, ProceduralTextures, RgbImage,
//!     SynthConfig,
//! };
//!
//! // Two 32x32 "normal" images made by the built-in generator.
//! let normals: Vec<RgbImage> = (0..2)
//!     .map(|seed| RgbImage::from_rgb8(&procedural_texture(PatternKind::Stripes, 32, 32, seed)?))
//!     .collect::<Result<_, _>>()?;
//! let config = SynthConfig { anomaly_probability: 1.0, ..SynthConfig::default() };
//! let synth = AnomalySynthesizer::new(config, Arc::new(ProceduralTextures::default()), 7)?;
//! let batch = synth.synthesize_batch(&normals, None, 0, 0, &Device::Cpu)?;
//! assert_eq!(batch.augmented.dims(), &[2, 3, 32, 32]);
//! assert_eq!(batch.mask.dims(), &[2, 1, 32, 32]);
//! assert_eq!(batch.label.dims(), &[2]);
//! # Ok::<(), diffad_synth::Error>(())
//! ```

pub mod augment;
mod color;
pub mod error;
pub mod geometry;
pub mod image;
pub mod mask;
pub mod perlin;
mod scratch;
pub mod synth;
pub mod texture;

pub use crate::augment::{random_augment, AugmenterKind};
pub use crate::error::{Error, Result};
pub use crate::geometry::resize_rgb8;
pub use crate::image::{
    images_to_tensor, load_rgb8, planes_to_tensor, tensor_to_images, tensor_to_planes, Mask, Plane,
    RgbImage,
};
pub use crate::mask::{anomaly_mask, auto_foreground, AutoForeground, EmptyMaskPolicy, MaskConfig};
pub use crate::perlin::{fade, fractal_perlin_2d, perlin_2d_from_angles, rand_perlin_2d};
pub use crate::synth::{
    blend, sample_rng, AnomalySynthesizer, ForegroundMode, Sample, SynthConfig, SyntheticBatch,
};
pub use crate::texture::{
    procedural_texture, shuffle_tiles, CorruptFilePolicy, FolderOptions, FolderTextures,
    InMemoryTextures, PatternKind, PatternStyle, ProceduralTextures, SelfAugmentation,
    TextureSource,
};
