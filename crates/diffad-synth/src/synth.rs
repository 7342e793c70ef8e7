//! The anomaly synthesizer: DRAEM's training-sample procedure (Zavrtanik et
//! al. 2021, section 3.3), reused unchanged by DiffAD (`docs/reference.md`
//! §1), with the later additions (foreground masks, self-augmentation) as
//! options.
//!
//! Per sample, from its own random stream:
//! 1. with probability `rotate_normal_probability` (DRAEM 0.3) the normal
//!    image `x` is rotated by `U[-90, 90]` degrees (it stays the target);
//! 2. with probability `1 - anomaly_probability` (DRAEM 0.5) the sample is
//!    normal: `x_a = x`, `M = 0`, label 0;
//! 3. otherwise a Perlin mask `M` is drawn ([`crate::mask`]), multiplied by
//!    the foreground mask if any; an empty `M` is redrawn or kept as a normal
//!    sample ([`EmptyMaskPolicy`]);
//! 4. a texture is drawn from the [`TextureSource`] and passed through 3 of the
//!    10 augmenters chosen without replacement, giving `T`;
//! 5. `beta ~ U[0, 0.8)` and `x_a = x (1 - M) + (1 - beta) T M + beta x M`,
//!    label 1.
//!
//! DRAEM draws the texture and the mask before deciding that a sample is
//! normal; drawing the decision first gives the same distribution and skips
//! useless work.

use std::sync::Arc;

use ::image::RgbImage as Rgb8Image;
use candle_core::{Device, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{random_augment, AugmenterKind};
use crate::error::{check_probability, Error, Result};
use crate::image::{stack_chw, stack_planes, Mask, Plane, RgbImage};
use crate::mask::{anomaly_mask, auto_foreground, AutoForeground, EmptyMaskPolicy, MaskConfig};
use crate::texture::TextureSource;

/// Where the foreground mask multiplied into `M` comes from when the caller
/// passes none.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ForegroundMode {
    /// No foreground restriction (DRAEM, and texture classes).
    #[default]
    None,
    /// [`auto_foreground`] on each normal image (objects on plain backgrounds).
    Auto(AutoForeground),
}

/// All settings of the synthesizer. `Default` is DRAEM's (and DiffAD's)
/// procedure.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Probability that a sample gets an anomaly (DRAEM: 0.5).
    pub anomaly_probability: f32,
    /// Perlin mask settings.
    pub mask: MaskConfig,
    /// Handling of empty masks (DRAEM: [`EmptyMaskPolicy::KeepAsNormal`]).
    pub empty_mask: EmptyMaskPolicy,
    /// Opacity parameter: `beta ~ U[0, beta_max)` (DRAEM: 0.8). `beta` weights
    /// the original image inside the mask.
    pub beta_max: f32,
    /// Augmenters drawn from (DRAEM: all ten).
    pub augmenters: Vec<AugmenterKind>,
    /// How many are applied to each texture, without replacement (DRAEM: 3).
    pub augmenters_per_sample: usize,
    /// Probability of rotating the normal image first (DRAEM: 0.3).
    pub rotate_normal_probability: f32,
    /// The normal image is rotated by `U[-d, d]` degrees (DRAEM: 90).
    pub rotate_normal_degrees: f32,
    /// Foreground mask used when the caller gives none.
    pub foreground: ForegroundMode,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            anomaly_probability: 0.5,
            mask: MaskConfig::default(),
            empty_mask: EmptyMaskPolicy::KeepAsNormal,
            beta_max: 0.8,
            augmenters: AugmenterKind::ALL.to_vec(),
            augmenters_per_sample: 3,
            rotate_normal_probability: 0.3,
            rotate_normal_degrees: 90.0,
            foreground: ForegroundMode::None,
        }
    }
}

impl SynthConfig {
    /// Checks every setting; errors with [`Error::InvalidConfig`] naming it.
    pub fn validate(&self) -> Result<()> {
        check_probability("anomaly_probability", self.anomaly_probability)?;
        check_probability("rotate_normal_probability", self.rotate_normal_probability)?;
        check_probability("beta_max", self.beta_max)?;
        self.mask.validate()?;
        if !(self.rotate_normal_degrees.is_finite() && self.rotate_normal_degrees >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "rotate_normal_degrees",
                reason: format!("{} is not a finite angle >= 0", self.rotate_normal_degrees),
            });
        }
        if self.augmenters_per_sample > self.augmenters.len() {
            return Err(Error::InvalidConfig {
                field: "augmenters_per_sample",
                reason: format!(
                    "cannot choose {} of {} augmenters without replacement",
                    self.augmenters_per_sample,
                    self.augmenters.len()
                ),
            });
        }
        if let ForegroundMode::Auto(a) = &self.foreground {
            if !(a.distance.is_finite() && a.distance >= 0.0) {
                return Err(Error::InvalidConfig {
                    field: "foreground.distance",
                    reason: format!("{} is not a finite distance >= 0", a.distance),
                });
            }
            check_probability("foreground.min_coverage", a.min_coverage)?;
        }
        Ok(())
    }
}

/// One synthesized training sample (plain buffers, no Candle).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `x_a`, the image with the simulated anomaly, values in `[0, 1]`.
    pub augmented: RgbImage,
    /// `M`, 1 inside the anomaly, 0 elsewhere.
    pub mask: Mask,
    /// 1.0 if `M` is non-empty, else 0.0.
    pub label: f32,
    /// `x`, the normal image (rotated if the normal rotation was drawn).
    pub normal: RgbImage,
    /// The augmented texture `T` (8-bit) for anomalous samples.
    pub texture: Option<Rgb8Image>,
    /// The opacity `beta` for anomalous samples.
    pub beta: Option<f32>,
    /// The augmenters applied to `T`, in order.
    pub augmenters: Vec<AugmenterKind>,
}

/// A batch as Candle tensors, all `f32` on the requested device.
#[derive(Clone, Debug)]
pub struct SyntheticBatch {
    /// `x_a`: `(B, 3, H, W)` in `[0, 1]`.
    pub augmented: Tensor,
    /// `M`: `(B, 1, H, W)`, 0 or 1.
    pub mask: Tensor,
    /// Labels: `(B,)`, 0 or 1.
    pub label: Tensor,
    /// `x`: `(B, 3, H, W)` in `[0, 1]`.
    pub normal: Tensor,
}

impl SyntheticBatch {
    /// Stacks samples of one size into tensors on `device`.
    pub fn from_samples(samples: &[Sample], device: &Device) -> Result<Self> {
        let first = samples.first().ok_or(Error::EmptyBatch)?;
        let (h, w) = (first.normal.height(), first.normal.width());
        for (index, s) in samples.iter().enumerate() {
            for (fh, fw) in [
                (s.normal.height(), s.normal.width()),
                (s.augmented.height(), s.augmented.width()),
                (s.mask.height(), s.mask.width()),
            ] {
                if (fh, fw) != (h, w) {
                    return Err(size_mismatch(index, (h, w), (fh, fw)));
                }
            }
        }
        let b = samples.len();
        let augmented = stack_chw(b, h, w, |i| &samples[i].augmented);
        let normal = stack_chw(b, h, w, |i| &samples[i].normal);
        let mask = stack_planes(b, h, w, |i| &samples[i].mask);
        let label: Vec<f32> = samples.iter().map(|s| s.label).collect();
        Ok(Self {
            augmented: Tensor::from_vec(augmented, (b, 3, h, w), device)?,
            mask: Tensor::from_vec(mask, (b, 1, h, w), device)?,
            label: Tensor::from_vec(label, b, device)?,
            normal: Tensor::from_vec(normal, (b, 3, h, w), device)?,
        })
    }
}

fn size_mismatch(index: usize, expected: (usize, usize), found: (usize, usize)) -> Error {
    Error::SizeMismatch {
        index,
        expected_height: expected.0,
        expected_width: expected.1,
        found_height: found.0,
        found_width: found.1,
    }
}

/// `x_a = x (1 - M) + (1 - beta) T M + beta x M` (DRAEM eq. for the simulated
/// anomaly; `beta` weights the original image inside the mask), computed
/// per element in `f32` in exactly this form.
pub fn blend(normal: &RgbImage, texture: &RgbImage, mask: &Mask, beta: f32) -> Result<RgbImage> {
    let (h, w) = (normal.height(), normal.width());
    if (texture.height(), texture.width()) != (h, w) {
        return Err(size_mismatch(
            1,
            (h, w),
            (texture.height(), texture.width()),
        ));
    }
    if (mask.height(), mask.width()) != (h, w) {
        return Err(size_mismatch(2, (h, w), (mask.height(), mask.width())));
    }
    let mut out = normal.as_hwc().to_vec();
    for ((o, t), &m) in out
        .chunks_exact_mut(3)
        .zip(texture.as_hwc().chunks_exact(3))
        .zip(mask.as_slice())
    {
        for c in 0..3 {
            let x = o[c];
            o[c] = x * (1.0 - m) + (1.0 - beta) * t[c] * m + beta * x * m;
        }
    }
    RgbImage::from_hwc(h, w, out)
}

/// Turns normal images into DRAEM-style training samples, reproducibly.
///
/// Every sample draws from its own ChaCha8 stream keyed by
/// `(seed, epoch, index)` ([`AnomalySynthesizer::sample_rng`]), so batches are
/// bit-identical whatever the number of rayon threads.
#[derive(Clone)]
pub struct AnomalySynthesizer {
    config: SynthConfig,
    source: Arc<dyn TextureSource>,
    seed: u64,
}

impl std::fmt::Debug for AnomalySynthesizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnomalySynthesizer")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl AnomalySynthesizer {
    /// Validates `config` and builds the synthesizer.
    pub fn new(config: SynthConfig, source: Arc<dyn TextureSource>, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            source,
            seed,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// The base seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The texture source.
    pub fn source(&self) -> &Arc<dyn TextureSource> {
        &self.source
    }

    /// The random stream of sample `index` in `epoch`: a ChaCha8 generator
    /// whose 32-byte key is `seed || epoch || index || "diffadsy"` (little
    /// endian), so distinct triples give independent streams.
    pub fn sample_rng(&self, epoch: u64, index: u64) -> ChaCha8Rng {
        sample_rng(self.seed, epoch, index)
    }

    /// Synthesizes one sample from `normal` (values in `[0, 1]`) with `rng`.
    /// `foreground`, if given, overrides [`SynthConfig::foreground`].
    pub fn synthesize_one<R: RngCore>(
        &self,
        normal: &RgbImage,
        foreground: Option<&Mask>,
        rng: &mut R,
    ) -> Result<Sample> {
        normal.check_finite()?;
        let (h, w) = (normal.height(), normal.width());
        if let Some(fg) = foreground {
            if (fg.height(), fg.width()) != (h, w) {
                return Err(size_mismatch(0, (h, w), (fg.height(), fg.width())));
            }
        }
        let cfg = &self.config;

        // 1. Optional rotation of the normal image (and of its foreground).
        let rotation = if rng.random::<f32>() < cfg.rotate_normal_probability {
            let d = cfg.rotate_normal_degrees;
            Some(if d > 0.0 {
                rng.random_range(-d..=d)
            } else {
                0.0
            })
        } else {
            None
        };
        let foreground = match (foreground, &cfg.foreground) {
            (Some(fg), _) => Some(fg.clone()),
            (None, ForegroundMode::Auto(a)) => Some(auto_foreground(normal, a)?),
            (None, ForegroundMode::None) => None,
        };
        let (normal, foreground) = match rotation {
            Some(a) => (
                normal.rotated(a),
                foreground.map(|fg| binarize(fg.rotated(a))),
            ),
            None => (normal.clone(), foreground),
        };

        // 2. Normal sample?
        if rng.random::<f32>() >= cfg.anomaly_probability {
            return normal_sample(normal);
        }

        // 3. Mask, with the empty-mask policy.
        let tries = match cfg.empty_mask {
            EmptyMaskPolicy::KeepAsNormal => 1,
            EmptyMaskPolicy::Retry { max_retries } => max_retries.saturating_add(1),
        };
        let mut mask = None;
        for _ in 0..tries {
            let mut m = anomaly_mask(h, w, &cfg.mask, rng)?;
            if let Some(fg) = &foreground {
                for (v, f) in m.as_mut_slice().iter_mut().zip(fg.as_slice()) {
                    *v *= f;
                }
            }
            if m.as_slice().iter().any(|&v| v > 0.0) {
                mask = Some(m);
                break;
            }
        }
        let Some(mask) = mask else {
            return normal_sample(normal);
        };

        // 4. Texture T.
        let mut texture = self.source.draw(&normal, rng)?;
        if (texture.height() as usize, texture.width() as usize) != (h, w) {
            return Err(size_mismatch(
                0,
                (h, w),
                (texture.height() as usize, texture.width() as usize),
            ));
        }
        let augmenters = if self.source.needs_augmentation() {
            random_augment(
                &mut texture,
                &cfg.augmenters,
                cfg.augmenters_per_sample,
                rng,
            )
        } else {
            Vec::new()
        };

        // 5. Blend.
        let beta = if cfg.beta_max > 0.0 {
            rng.random_range(0.0..cfg.beta_max)
        } else {
            0.0
        };
        let mut augmented = normal.as_hwc().to_vec();
        for ((o, t), &m) in augmented
            .chunks_exact_mut(3)
            .zip(texture.as_raw().chunks_exact(3))
            .zip(mask.as_slice())
        {
            for c in 0..3 {
                let x = o[c];
                let tc = f32::from(t[c]) / 255.0;
                o[c] = x * (1.0 - m) + (1.0 - beta) * tc * m + beta * x * m;
            }
        }
        Ok(Sample {
            augmented: RgbImage::from_hwc(h, w, augmented)?,
            mask,
            label: 1.0,
            normal,
            texture: Some(texture),
            beta: Some(beta),
            augmenters,
        })
    }

    /// [`AnomalySynthesizer::synthesize_one`] with the stream of
    /// `(epoch, index)`.
    pub fn synthesize_indexed(
        &self,
        normal: &RgbImage,
        foreground: Option<&Mask>,
        epoch: u64,
        index: u64,
    ) -> Result<Sample> {
        self.synthesize_one(normal, foreground, &mut self.sample_rng(epoch, index))
    }

    /// Synthesizes `normals[i]` with stream `(epoch, first_index + i)`, in
    /// parallel on the current rayon pool. All images must share one size;
    /// `foregrounds`, if given, has one mask per image.
    pub fn synthesize_samples(
        &self,
        normals: &[RgbImage],
        foregrounds: Option<&[Mask]>,
        epoch: u64,
        first_index: u64,
    ) -> Result<Vec<Sample>> {
        let first = normals.first().ok_or(Error::EmptyBatch)?;
        let size = (first.height(), first.width());
        for (index, img) in normals.iter().enumerate() {
            if (img.height(), img.width()) != size {
                return Err(size_mismatch(index, size, (img.height(), img.width())));
            }
        }
        if let Some(fgs) = foregrounds {
            if fgs.len() != normals.len() {
                return Err(Error::InvalidConfig {
                    field: "foregrounds",
                    reason: format!("{} masks for {} images", fgs.len(), normals.len()),
                });
            }
            for (index, fg) in fgs.iter().enumerate() {
                if (fg.height(), fg.width()) != size {
                    return Err(size_mismatch(index, size, (fg.height(), fg.width())));
                }
            }
        }
        normals
            .par_iter()
            .enumerate()
            .map(|(i, img)| {
                let fg = foregrounds.map(|f| &f[i]);
                self.synthesize_indexed(img, fg, epoch, first_index + i as u64)
            })
            .collect()
    }

    /// [`AnomalySynthesizer::synthesize_samples`] stacked into a
    /// [`SyntheticBatch`] on `device`.
    pub fn synthesize_batch(
        &self,
        normals: &[RgbImage],
        foregrounds: Option<&[Mask]>,
        epoch: u64,
        first_index: u64,
        device: &Device,
    ) -> Result<SyntheticBatch> {
        let samples = self.synthesize_samples(normals, foregrounds, epoch, first_index)?;
        SyntheticBatch::from_samples(&samples, device)
    }
}

/// The per-sample stream of [`AnomalySynthesizer::sample_rng`].
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"diffadsy");
    ChaCha8Rng::from_seed(key)
}

fn binarize(mut p: Plane) -> Plane {
    for v in p.as_mut_slice() {
        *v = if *v > 0.5 { 1.0 } else { 0.0 };
    }
    p
}

fn normal_sample(normal: RgbImage) -> Result<Sample> {
    Ok(Sample {
        augmented: normal.clone(),
        mask: Plane::filled(normal.height(), normal.width(), 0.0)?,
        label: 0.0,
        normal,
        texture: None,
        beta: None,
        augmenters: Vec::new(),
    })
}
