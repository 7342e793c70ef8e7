//! The sections of the TOML configuration, one struct each, each checking
//! its own values (errors name the file and the dotted setting).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::variants::{Reconstruction, SegmenterInput};
use crate::error::{Error, Result};

/// Image data settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Images are resized to `image_size x image_size` (paper: 256).
    pub image_size: usize,
    /// Share of the good images held out (seeded) to set the decision
    /// thresholds on, with synthetic anomalies on copies of them: at least 2
    /// images when not 0; 0 trains on every image and stores no thresholds.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
}

fn default_validation_fraction() -> f64 {
    0.1
}

/// DRAEM anomaly synthesis (`docs/reference.md` §1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesisConfig {
    /// Folder of texture images (DTD: `*/*.jpg`); `None` = the built-in source
    /// chosen by `texture`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_dir: Option<PathBuf>,
    /// The built-in anomaly source `T` when `texture_dir` is unset.
    #[serde(default, skip_serializing_if = "AnomalyTexture::is_procedural")]
    pub texture: AnomalyTexture,
    /// Probability that a sample is made anomalous (DRAEM: 0.5).
    pub anomaly_probability: f64,
    /// Upper bound of the blend factor `beta ~ U[0, beta_max)` (DRAEM: 0.8).
    pub beta_max: f64,
    /// Largest Perlin scale exponent `k` of `2^k` (DRAEM: 5, k uniform in 0..=5).
    pub perlin_max_exponent: u32,
    /// Perlin noise threshold of the mask `M = noise > threshold` (DRAEM: 0.5).
    pub threshold: f64,
    /// Probability of rotating a normal sample by [-90, 90] degrees (DRAEM: 0.3).
    pub normal_rotation_probability: f64,
}

/// The built-in source of the anomaly texture `T` (`[synthesis] texture`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyTexture {
    /// Procedural patterns (fractal noise, stripes, checks, cells), the
    /// stand-in for DTD when no texture folder is given (DRAEM's source).
    #[default]
    Procedural,
    /// The normal image itself, through three of DRAEM's augmenters and cut
    /// into an 8x8 grid of shuffled tiles (the self-augmentation of
    /// DiffusionAD and MemSeg): anomalies made of the object's own texture,
    /// displaced and re-coloured, blended with DRAEM's `beta`. No preset uses
    /// it: on the photograph benchmark (`diffad quality`, `cpu` preset) it
    /// taught the segmenter low-contrast stains (retina: stain AU-PRO 13 to
    /// 32 %) but cost foreign-material and hole detection (wood: pixel AP
    /// 29.8 to 25.9 %).
    SelfAugmentation,
}

impl AnomalyTexture {
    /// The default (serialised configs omit it).
    pub fn is_procedural(&self) -> bool {
        *self == AnomalyTexture::Procedural
    }
}

/// KL autoencoder (`docs/reference.md` §2, released `kl.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// diffusers `AutoencoderKL` safetensors to load instead of training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Width of the first block (`ch`, 128).
    pub base_channels: usize,
    /// Width multipliers per level (`ch_mult`, [1, 2, 4, 4]; f = 2^(len-1)).
    pub channel_mult: Vec<usize>,
    /// Res blocks per level (2).
    pub layers_per_block: usize,
    /// Latent channels (`embed_dim`, 4).
    pub latent_channels: usize,
    /// GroupNorm groups (32).
    pub norm_groups: usize,
    /// Weight of the KL term (1e-6).
    pub kl_weight: f64,
    /// Dropout in the res blocks while training (released `kl.yaml`: 0.5);
    /// inactive at inference.
    #[serde(default)]
    pub dropout: f64,
    /// AdamW learning rate (4.5e-6 x 8 x 2 x 2 = 7.2e-5).
    pub learning_rate: f64,
    /// Batch size (8).
    pub batch_size: usize,
    /// Training epochs over the good images.
    pub epochs: usize,
}

/// Conditional latent diffusion model (`docs/reference.md` §3, released `mvtec.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdmConfig {
    /// Conditioning variant (Table 1).
    pub reconstruction: Reconstruction,
    /// Diffusion steps `T` (1000).
    pub timesteps: usize,
    /// First beta of the sqrt-linear schedule (0.0015).
    pub beta_start: f64,
    /// Last beta of the sqrt-linear schedule (0.02).
    pub beta_end: f64,
    /// UNet base width (`model_channels`, 256).
    pub model_channels: usize,
    /// UNet width multipliers (`channel_mult`, [1, 2, 4]).
    pub channel_mult: Vec<usize>,
    /// Res blocks per level (2).
    pub layers_per_block: usize,
    /// Self-attention per level (all three levels: 32, 16 and 8).
    pub attention_levels: Vec<bool>,
    /// Channels per attention head (32).
    pub head_channels: usize,
    /// GroupNorm groups (32).
    pub norm_groups: usize,
    /// AdamW learning rate (2e-6 x 32 = 6.4e-5).
    pub learning_rate: f64,
    /// Batch size (32).
    pub batch_size: usize,
    /// Training epochs (paper: 4000).
    pub epochs: usize,
    /// EMA decay of the weights used for sampling (0.9999); 0 disables EMA.
    pub ema_decay: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping
    /// (CompVis, and so the paper, does not clip).
    #[serde(default)]
    pub grad_clip: f64,
}

/// Discriminative sub-network (`docs/reference.md` §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmenterConfig {
    /// Input channels variant (Table 1).
    pub input: SegmenterInput,
    /// Interpolation weight `lambda` of `z_inter = lambda c + (1 - lambda) z_r` (0.5).
    pub lambda: f64,
    /// U-Net base width (64: 64/128/256/512/512/512).
    pub base_channels: usize,
    /// Adam learning rate (1e-3).
    pub learning_rate: f64,
    /// Batch size (32).
    pub batch_size: usize,
    /// Training epochs (700).
    pub epochs: usize,
    /// Learning-rate drops at these fractions of the epochs (0.8, 0.9).
    pub lr_milestones: Vec<f64>,
    /// Multiplicative learning-rate drop (0.2).
    pub lr_gamma: f64,
    /// Focal loss exponent (2).
    pub focal_gamma: f64,
    /// DDIM steps for the reconstructions `x_r` it trains on (50).
    pub reconstruction_ddim_steps: usize,
}

/// Test-time settings (`docs/reference.md` §3 and §5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// DDIM steps at test time (10), eta = 0.
    pub ddim_steps: usize,
    /// Noise the test condition to this timestep (the authors' advice for
    /// severe structural defects: 400..500); `None` = clean condition (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_noise_step: Option<usize>,
    /// SDEdit strength for `forward-reverse`: start denoising at `strength * T`.
    pub sdedit_strength: f64,
    /// Side of the average-pooling window of the image score (21).
    pub score_kernel: usize,
    /// Standard deviation, in pixels, of the Gaussian that smooths the
    /// anomaly map before it is reported, thresholded and scored
    /// (`diffad_metrics::gaussian_smooth`; the image score is then taken from
    /// the smoothed map). `0` = no smoothing: the paper (and DRAEM) score the
    /// raw segmentation output. An extension, off in the `paper` preset: the
    /// usual last step of other detectors (sigma 4 at 224-256 pixels in
    /// PatchCore and anomalib), which fills the segmenter's speckled response
    /// inside a defect (`docs/quality.md`, ablation).
    #[serde(default)]
    pub map_sigma: f64,
    /// Images per forward pass.
    pub batch_size: usize,
    /// The floating-point type the VAE, the denoiser and the segmenter run in at
    /// inference (`"f32"`, default; `"bf16"` or `"f16"` for half precision: the
    /// weights are converted once at load, the sampler's arithmetic stays in
    /// `f32`/`f64`). Training is always `f32`.
    #[serde(default)]
    pub dtype: Precision,
}

/// The floating-point type of the networks at inference (`inference.dtype`).
///
/// Half precision halves the memory traffic of every layer and, on a GPU with
/// tensor cores, multiplies the matrix throughput; on the CPU it only widens to
/// `f32` inside each matrix product (Candle's CPU kernels), so it is there for
/// testing the half-precision path, not for speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit IEEE floats (the trained weights' type).
    #[default]
    F32,
    /// bfloat16: f32's range, 8 bits of mantissa.
    Bf16,
    /// IEEE half: 11 bits of mantissa, range up to 65504.
    F16,
}

impl Precision {
    /// The Candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }

    /// The setting's spelling (`f32`, `bf16`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => Err(format!("`{other}` is not a precision (f32, bf16 or f16)")),
        }
    }
}

/// Checks of single values; every failure is an [`Error::Config`] naming the
/// configuration file and the setting.
pub(crate) struct Check<'a> {
    origin: &'a Path,
}

impl<'a> Check<'a> {
    /// Checks of the configuration read from `origin`.
    pub(crate) fn new(origin: &'a Path) -> Self {
        Self { origin }
    }

    /// The error for `message`.
    pub(crate) fn fail<T>(&self, message: String) -> Result<T> {
        Err(Error::Config {
            path: self.origin.to_path_buf(),
            message,
        })
    }

    fn probability(&self, name: &str, v: f64) -> Result<()> {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            self.fail(format!("{name} = {v} must lie in [0, 1]"))
        }
    }

    fn positive(&self, name: &str, v: f64) -> Result<()> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            self.fail(format!("{name} = {v} must be positive"))
        }
    }

    fn nonzero(&self, name: &str, v: usize) -> Result<()> {
        if v > 0 {
            Ok(())
        } else {
            self.fail(format!("{name} must be at least 1"))
        }
    }

    /// A number of DDIM steps for a chain of `timesteps`.
    pub(crate) fn steps(&self, name: &str, n: usize, timesteps: usize) -> Result<()> {
        if n == 0 || n > timesteps {
            self.fail(format!("{name} = {n} must lie in 1..={timesteps}"))
        } else {
            Ok(())
        }
    }
}

impl DataConfig {
    /// The segmenter pools five times (DRAEM), so the side is a multiple of 32.
    pub(crate) fn validate(&self, check: &Check) -> Result<()> {
        let size = self.image_size;
        if size < 32 || !size.is_multiple_of(32) {
            return check.fail(format!(
                "data.image_size = {size} must be a positive multiple of 32 (the segmenter pools 5 times)"
            ));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return check.fail(format!(
                "data.validation_fraction = {} must lie in [0, 1)",
                self.validation_fraction
            ));
        }
        Ok(())
    }
}

impl SynthesisConfig {
    /// Probabilities in `[0, 1]`; Perlin scales `2^k` up to `image_size`.
    pub(crate) fn validate(&self, check: &Check, image_size: usize) -> Result<()> {
        check.probability("synthesis.anomaly_probability", self.anomaly_probability)?;
        check.probability("synthesis.beta_max", self.beta_max)?;
        check.probability("synthesis.threshold", self.threshold)?;
        check.probability(
            "synthesis.normal_rotation_probability",
            self.normal_rotation_probability,
        )?;
        if self.texture_dir.is_some() && !self.texture.is_procedural() {
            return check.fail(
                "synthesis.texture must be \"procedural\" (the default) when synthesis.texture_dir is set: a folder is its own texture source".into(),
            );
        }
        if (1usize << self.perlin_max_exponent.min(30)) > image_size {
            return check.fail(format!(
                "synthesis.perlin_max_exponent = {} gives Perlin scales above image_size {image_size}",
                self.perlin_max_exponent
            ));
        }
        Ok(())
    }
}

impl VaeConfig {
    /// VAE downsampling factor `f = 2^(len(channel_mult) - 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self.channel_mult.len().saturating_sub(1)
    }

    /// Widths divisible by the group count, `image_size` by the factor `f`.
    pub(crate) fn validate(&self, check: &Check, image_size: usize) -> Result<()> {
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return check.fail("vae.channel_mult must be non-empty with non-zero entries".into());
        }
        check.nonzero("vae.base_channels", self.base_channels)?;
        check.nonzero("vae.layers_per_block", self.layers_per_block)?;
        check.nonzero("vae.latent_channels", self.latent_channels)?;
        check.nonzero("vae.norm_groups", self.norm_groups)?;
        check.nonzero("vae.batch_size", self.batch_size)?;
        for m in &self.channel_mult {
            if !(self.base_channels * m).is_multiple_of(self.norm_groups) {
                return check.fail(format!(
                    "vae.norm_groups = {} must divide every block width (vae.base_channels x {m})",
                    self.norm_groups
                ));
            }
        }
        if !(self.kl_weight.is_finite() && self.kl_weight >= 0.0) {
            return check.fail(format!("vae.kl_weight = {} must be >= 0", self.kl_weight));
        }
        check.positive("vae.learning_rate", self.learning_rate)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return check.fail(format!("vae.dropout = {} must lie in [0, 1)", self.dropout));
        }
        let f = self.downsample_factor();
        if !image_size.is_multiple_of(f) {
            return check.fail(format!(
                "data.image_size = {image_size} must be divisible by the VAE factor {f}"
            ));
        }
        Ok(())
    }
}

impl LdmConfig {
    /// Widths divisible by the group count and the head width, the latent
    /// side by the UNet factor, a valid beta range.
    pub(crate) fn validate(&self, check: &Check, latent_size: usize) -> Result<()> {
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return check.fail("ldm.channel_mult must be non-empty with non-zero entries".into());
        }
        if self.attention_levels.len() != self.channel_mult.len() {
            return check.fail(format!(
                "ldm.attention_levels has {} entries but ldm.channel_mult has {}",
                self.attention_levels.len(),
                self.channel_mult.len()
            ));
        }
        check.nonzero("ldm.model_channels", self.model_channels)?;
        check.nonzero("ldm.layers_per_block", self.layers_per_block)?;
        check.nonzero("ldm.head_channels", self.head_channels)?;
        check.nonzero("ldm.norm_groups", self.norm_groups)?;
        check.nonzero("ldm.batch_size", self.batch_size)?;
        for m in &self.channel_mult {
            let width = self.model_channels * m;
            if !width.is_multiple_of(self.norm_groups) || !width.is_multiple_of(self.head_channels)
            {
                return check.fail(format!(
                    "ldm.norm_groups = {} and ldm.head_channels = {} must divide every width (ldm.model_channels x {m} = {width})",
                    self.norm_groups, self.head_channels
                ));
            }
        }
        let ldm_f = 1usize << (self.channel_mult.len() - 1);
        if !latent_size.is_multiple_of(ldm_f) {
            return check.fail(format!(
                "latent size {latent_size} must be divisible by the UNet factor {ldm_f}"
            ));
        }
        if self.timesteps < 2 {
            return check.fail("ldm.timesteps must be at least 2".into());
        }
        if !(self.beta_start > 0.0 && self.beta_start < self.beta_end && self.beta_end < 1.0) {
            return check.fail(format!(
                "need 0 < ldm.beta_start ({}) < ldm.beta_end ({}) < 1",
                self.beta_start, self.beta_end
            ));
        }
        check.positive("ldm.learning_rate", self.learning_rate)?;
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return check.fail(format!(
                "ldm.grad_clip = {} must be >= 0 (0 disables clipping)",
                self.grad_clip
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return check.fail(format!(
                "ldm.ema_decay = {} must lie in [0, 1)",
                self.ema_decay
            ));
        }
        Ok(())
    }
}

impl SegmenterConfig {
    /// `lambda`, `lr_gamma` and milestones in `[0, 1]`; DDIM steps within `T`.
    pub(crate) fn validate(&self, check: &Check, timesteps: usize) -> Result<()> {
        check.probability("segmenter.lambda", self.lambda)?;
        check.nonzero("segmenter.base_channels", self.base_channels)?;
        check.nonzero("segmenter.batch_size", self.batch_size)?;
        check.positive("segmenter.learning_rate", self.learning_rate)?;
        check.probability("segmenter.lr_gamma", self.lr_gamma)?;
        for &m in &self.lr_milestones {
            check.probability("segmenter.lr_milestones", m)?;
        }
        if !(self.focal_gamma.is_finite() && self.focal_gamma >= 0.0) {
            return check.fail(format!(
                "segmenter.focal_gamma = {} must be >= 0",
                self.focal_gamma
            ));
        }
        check.steps(
            "segmenter.reconstruction_ddim_steps",
            self.reconstruction_ddim_steps,
            timesteps,
        )
    }
}

impl InferenceConfig {
    /// DDIM steps and the condition's noise step within `T`; an odd score
    /// window no wider than the image.
    pub(crate) fn validate(
        &self,
        check: &Check,
        timesteps: usize,
        image_size: usize,
    ) -> Result<()> {
        check.steps("inference.ddim_steps", self.ddim_steps, timesteps)?;
        if let Some(t) = self.condition_noise_step {
            if t >= timesteps {
                return check.fail(format!(
                    "inference.condition_noise_step = {t} must be below ldm.timesteps = {timesteps}"
                ));
            }
        }
        if !(self.sdedit_strength > 0.0 && self.sdedit_strength <= 1.0) {
            return check.fail(format!(
                "inference.sdedit_strength = {} must lie in (0, 1]",
                self.sdedit_strength
            ));
        }
        if !(self.map_sigma.is_finite() && self.map_sigma >= 0.0) {
            return check.fail(format!(
                "inference.map_sigma = {} must be finite and at least 0",
                self.map_sigma
            ));
        }
        if self.score_kernel.is_multiple_of(2) || self.score_kernel > image_size {
            return check.fail(format!(
                "inference.score_kernel = {} must be odd and at most image_size",
                self.score_kernel
            ));
        }
        check.nonzero("inference.batch_size", self.batch_size)
    }
}
