//! One TOML configuration for every stage, with the paper's defaults
//! ([`Config::paper`], the repository's `diffad.toml`) and a `tiny` preset
//! that trains on a CPU in minutes ([`Config::tiny`]).
//!
//! The ablation variants of the paper's Table 1 are the two enums
//! [`Reconstruction`] (how the LDM is conditioned) and [`SegmenterInput`]
//! (what the discriminative network sees):
//!
//! | Table 1 row | `ldm.reconstruction` | `segmenter.input` |
//! |---|---|---|
//! | DiffAD_f&r (SDEdit) | `forward-reverse` | `interpolated` |
//! | DiffAD_c (clean condition) | `clean-condition` | `interpolated` |
//! | DiffAD_no-inter | `noisy-condition` | `reconstruction-only` |
//! | DiffAD_x~a-inter (lambda = 1) | `noisy-condition` | `vae-reconstruction` |
//! | DiffAD | `noisy-condition` | `interpolated` |
//!
//! ```
//! let paper = diffad::Config::paper();
//! assert_eq!(paper.data.image_size, 256);
//! let text = paper.to_toml_string().unwrap();
//! let back = diffad::Config::from_toml_str(&text, "inline").unwrap();
//! assert_eq!(back, paper);
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the LDM reconstructs an image (paper Table 1, group (i)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconstruction {
    /// Unconditional LDM; at test time the input latent is noised to
    /// `t = strength * T` and denoised (SDEdit, Meng et al. 2021): `DiffAD_f&r`.
    ForwardReverse,
    /// The condition `c = E(x_a)` is concatenated clean while training: `DiffAD_c`.
    CleanCondition,
    /// The condition is noised to an independent `t_c ~ U{0..T-1}` while
    /// training, `c_noisy = sqrt(abar_tc) c + sqrt(1 - abar_tc) eps'` (Sec. 3.3): DiffAD.
    NoisyCondition,
}

/// What the segmenter sees besides `x_a` and `x_r` (paper Table 1, group (ii)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmenterInput {
    /// `(x_r, x_a)`, 6 channels: `DiffAD_no-inter`.
    ReconstructionOnly,
    /// `(x_r, D(c), x_a)`, i.e. lambda = 1: `DiffAD_x~a-inter`.
    VaeReconstruction,
    /// `(x_r, x_inter, x_a)` with `x_inter = D(lambda c + (1 - lambda) z_r)` (Sec. 3.4): DiffAD.
    Interpolated,
}

/// Image data settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Images are resized to `image_size x image_size` (paper: 256).
    pub image_size: usize,
}

/// DRAEM anomaly synthesis (REFERENCE section 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthesisConfig {
    /// Folder of texture images (DTD: `*/*.jpg`); `None` = built-in procedural textures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_dir: Option<PathBuf>,
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

/// KL autoencoder (REFERENCE section 2, released `kl.yaml`).
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
    /// AdamW learning rate (4.5e-6 x 8 x 2 x 2 = 7.2e-5).
    pub learning_rate: f64,
    /// Batch size (8).
    pub batch_size: usize,
    /// Training epochs over the good images.
    pub epochs: usize,
}

/// Conditional latent diffusion model (REFERENCE section 3, `mvtec.yaml`).
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
}

/// Discriminative sub-network (REFERENCE section 4).
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

/// Test-time settings (REFERENCE sections 3 and 5).
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
    /// Images per forward pass.
    pub batch_size: usize,
}

/// The whole DiffAD configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of every random draw (synthesis, noise, initialisation, shuffling).
    pub seed: u64,
    /// Image data.
    pub data: DataConfig,
    /// Anomaly synthesis.
    pub synthesis: SynthesisConfig,
    /// Autoencoder.
    pub vae: VaeConfig,
    /// Latent diffusion model.
    pub ldm: LdmConfig,
    /// Segmentation network.
    pub segmenter: SegmenterConfig,
    /// Test time.
    pub inference: InferenceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self::paper()
    }
}

impl Config {
    /// The paper's configuration (256x256 images, released `kl.yaml` and
    /// `mvtec.yaml`, DRAEM's segmenter); identical to `diffad.toml`.
    pub fn paper() -> Self {
        Self {
            seed: 0,
            data: DataConfig { image_size: 256 },
            synthesis: SynthesisConfig {
                texture_dir: None,
                anomaly_probability: 0.5,
                beta_max: 0.8,
                perlin_max_exponent: 5,
                threshold: 0.5,
                normal_rotation_probability: 0.3,
            },
            vae: VaeConfig {
                pretrained: None,
                base_channels: 128,
                channel_mult: vec![1, 2, 4, 4],
                layers_per_block: 2,
                latent_channels: 4,
                norm_groups: 32,
                kl_weight: 1e-6,
                learning_rate: 7.2e-5,
                batch_size: 8,
                epochs: 200,
            },
            ldm: LdmConfig {
                reconstruction: Reconstruction::NoisyCondition,
                timesteps: 1000,
                beta_start: 0.0015,
                beta_end: 0.02,
                model_channels: 256,
                channel_mult: vec![1, 2, 4],
                layers_per_block: 2,
                attention_levels: vec![true, true, true],
                head_channels: 32,
                norm_groups: 32,
                learning_rate: 6.4e-5,
                batch_size: 32,
                epochs: 4000,
                ema_decay: 0.9999,
            },
            segmenter: SegmenterConfig {
                input: SegmenterInput::Interpolated,
                lambda: 0.5,
                base_channels: 64,
                learning_rate: 1e-3,
                batch_size: 32,
                epochs: 700,
                lr_milestones: vec![0.8, 0.9],
                lr_gamma: 0.2,
                focal_gamma: 2.0,
                reconstruction_ddim_steps: 50,
            },
            inference: InferenceConfig {
                ddim_steps: 10,
                condition_noise_step: None,
                sdedit_strength: 0.5,
                score_kernel: 21,
                batch_size: 8,
            },
        }
    }

    /// A CPU preset: 64x64 images, narrow networks, short training. Same
    /// method and variants as the paper, only smaller; `diffad demo` uses it.
    pub fn tiny() -> Self {
        let mut c = Self::paper();
        c.data.image_size = 64;
        c.vae.base_channels = 16;
        c.vae.channel_mult = vec![1, 2, 2];
        c.vae.layers_per_block = 1;
        c.vae.norm_groups = 8;
        c.vae.learning_rate = 2e-3;
        c.vae.batch_size = 8;
        c.vae.epochs = 10;
        c.ldm.model_channels = 32;
        c.ldm.channel_mult = vec![1, 2];
        c.ldm.layers_per_block = 1;
        c.ldm.attention_levels = vec![false, true];
        c.ldm.head_channels = 32;
        c.ldm.norm_groups = 8;
        c.ldm.learning_rate = 1e-3;
        c.ldm.batch_size = 8;
        c.ldm.epochs = 25;
        c.ldm.ema_decay = 0.0;
        c.segmenter.base_channels = 8;
        c.segmenter.learning_rate = 1e-3;
        c.segmenter.batch_size = 8;
        c.segmenter.epochs = 20;
        c.segmenter.reconstruction_ddim_steps = 5;
        c.inference.ddim_steps = 5;
        c.inference.score_kernel = 7;
        c.inference.batch_size = 8;
        c
    }

    /// A preset by name: `paper` or `tiny`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }

    /// Parses TOML text and validates it; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: origin.to_path_buf(),
            message: e.message().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// A preset name (`paper`, `tiny`) or a TOML file path.
    pub fn load(preset_or_path: &str) -> Result<Self> {
        match Self::preset(preset_or_path) {
            Some(c) => Ok(c),
            None => Self::from_file(Path::new(preset_or_path)),
        }
    }

    /// Serialises to TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            path: PathBuf::from("<serialise>"),
            message: e.to_string(),
        })
    }

    /// VAE downsampling factor `f = 2^(len(channel_mult) - 1)`.
    pub fn vae_downsample_factor(&self) -> usize {
        1 << self.vae.channel_mult.len().saturating_sub(1)
    }

    /// Side of the latent `image_size / f`.
    pub fn latent_size(&self) -> usize {
        self.data.image_size / self.vae_downsample_factor()
    }

    /// Checks every value; `origin` names the file in the error.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Config {
                path: origin.to_path_buf(),
                message,
            })
        };
        let probability = |name: &str, v: f64| -> Result<()> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                fail(format!("{name} = {v} must lie in [0, 1]"))
            }
        };
        let positive = |name: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                fail(format!("{name} = {v} must be positive"))
            }
        };
        let nonzero = |name: &str, v: usize| -> Result<()> {
            if v > 0 {
                Ok(())
            } else {
                fail(format!("{name} must be at least 1"))
            }
        };
        let size = self.data.image_size;
        // The segmenter pools five times (DRAEM), the VAE len(ch_mult)-1 times.
        if size < 32 || size % 32 != 0 {
            return fail(format!(
                "data.image_size = {size} must be a positive multiple of 32 (the segmenter pools 5 times)"
            ));
        }
        let s = &self.synthesis;
        probability("synthesis.anomaly_probability", s.anomaly_probability)?;
        probability("synthesis.beta_max", s.beta_max)?;
        probability("synthesis.threshold", s.threshold)?;
        probability(
            "synthesis.normal_rotation_probability",
            s.normal_rotation_probability,
        )?;
        if (1usize << s.perlin_max_exponent.min(30)) > size {
            return fail(format!(
                "synthesis.perlin_max_exponent = {} gives Perlin scales above image_size {size}",
                s.perlin_max_exponent
            ));
        }
        let v = &self.vae;
        if v.channel_mult.is_empty() || v.channel_mult.contains(&0) {
            return fail("vae.channel_mult must be non-empty with non-zero entries".into());
        }
        nonzero("vae.base_channels", v.base_channels)?;
        nonzero("vae.layers_per_block", v.layers_per_block)?;
        nonzero("vae.latent_channels", v.latent_channels)?;
        nonzero("vae.norm_groups", v.norm_groups)?;
        nonzero("vae.batch_size", v.batch_size)?;
        for m in &v.channel_mult {
            if (v.base_channels * m) % v.norm_groups != 0 {
                return fail(format!(
                    "vae.norm_groups = {} must divide every block width (vae.base_channels x {m})",
                    v.norm_groups
                ));
            }
        }
        if !(v.kl_weight.is_finite() && v.kl_weight >= 0.0) {
            return fail(format!("vae.kl_weight = {} must be >= 0", v.kl_weight));
        }
        positive("vae.learning_rate", v.learning_rate)?;
        let f = self.vae_downsample_factor();
        if size % f != 0 {
            return fail(format!(
                "data.image_size = {size} must be divisible by the VAE factor {f}"
            ));
        }
        let l = &self.ldm;
        if l.channel_mult.is_empty() || l.channel_mult.contains(&0) {
            return fail("ldm.channel_mult must be non-empty with non-zero entries".into());
        }
        if l.attention_levels.len() != l.channel_mult.len() {
            return fail(format!(
                "ldm.attention_levels has {} entries but ldm.channel_mult has {}",
                l.attention_levels.len(),
                l.channel_mult.len()
            ));
        }
        nonzero("ldm.model_channels", l.model_channels)?;
        nonzero("ldm.layers_per_block", l.layers_per_block)?;
        nonzero("ldm.head_channels", l.head_channels)?;
        nonzero("ldm.norm_groups", l.norm_groups)?;
        nonzero("ldm.batch_size", l.batch_size)?;
        for m in &l.channel_mult {
            let width = l.model_channels * m;
            if width % l.norm_groups != 0 || width % l.head_channels != 0 {
                return fail(format!(
                    "ldm.norm_groups = {} and ldm.head_channels = {} must divide every width (ldm.model_channels x {m} = {width})",
                    l.norm_groups, l.head_channels
                ));
            }
        }
        let latent = self.latent_size();
        let ldm_f = 1usize << (l.channel_mult.len() - 1);
        if latent % ldm_f != 0 {
            return fail(format!(
                "latent size {latent} must be divisible by the UNet factor {ldm_f}"
            ));
        }
        if l.timesteps < 2 {
            return fail("ldm.timesteps must be at least 2".into());
        }
        if !(l.beta_start > 0.0 && l.beta_start < l.beta_end && l.beta_end < 1.0) {
            return fail(format!(
                "need 0 < ldm.beta_start ({}) < ldm.beta_end ({}) < 1",
                l.beta_start, l.beta_end
            ));
        }
        positive("ldm.learning_rate", l.learning_rate)?;
        if !(0.0..1.0).contains(&l.ema_decay) {
            return fail(format!(
                "ldm.ema_decay = {} must lie in [0, 1)",
                l.ema_decay
            ));
        }
        let g = &self.segmenter;
        probability("segmenter.lambda", g.lambda)?;
        nonzero("segmenter.base_channels", g.base_channels)?;
        nonzero("segmenter.batch_size", g.batch_size)?;
        positive("segmenter.learning_rate", g.learning_rate)?;
        probability("segmenter.lr_gamma", g.lr_gamma)?;
        for &m in &g.lr_milestones {
            probability("segmenter.lr_milestones", m)?;
        }
        if !(g.focal_gamma.is_finite() && g.focal_gamma >= 0.0) {
            return fail(format!(
                "segmenter.focal_gamma = {} must be >= 0",
                g.focal_gamma
            ));
        }
        let steps = |name: &str, n: usize| -> Result<()> {
            if n == 0 || n > l.timesteps {
                fail(format!("{name} = {n} must lie in 1..={}", l.timesteps))
            } else {
                Ok(())
            }
        };
        steps(
            "segmenter.reconstruction_ddim_steps",
            g.reconstruction_ddim_steps,
        )?;
        let i = &self.inference;
        steps("inference.ddim_steps", i.ddim_steps)?;
        if let Some(t) = i.condition_noise_step {
            if t >= l.timesteps {
                return fail(format!(
                    "inference.condition_noise_step = {t} must be below ldm.timesteps = {}",
                    l.timesteps
                ));
            }
        }
        if !(i.sdedit_strength > 0.0 && i.sdedit_strength <= 1.0) {
            return fail(format!(
                "inference.sdedit_strength = {} must lie in (0, 1]",
                i.sdedit_strength
            ));
        }
        if i.score_kernel % 2 == 0 || i.score_kernel > size {
            return fail(format!(
                "inference.score_kernel = {} must be odd and at most image_size",
                i.score_kernel
            ));
        }
        nonzero("inference.batch_size", i.batch_size)?;
        Ok(())
    }

    /// Dotted name of the first setting that differs from `other`, if any
    /// (`None` when the two configurations are equal).
    pub fn first_difference(&self, other: &Self) -> Option<String> {
        let a = toml::Value::try_from(self).ok()?;
        let b = toml::Value::try_from(other).ok()?;
        first_difference(&a, &b, String::new())
    }
}

fn first_difference(a: &toml::Value, b: &toml::Value, prefix: String) -> Option<String> {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (ta.get(k), tb.get(k)) {
                    (Some(x), Some(y)) => first_difference(x, y, name),
                    _ => Some(name),
                }
            })
        }
        _ if a == b => None,
        _ => Some(if prefix.is_empty() {
            "<root>".into()
        } else {
            prefix
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for c in [Config::paper(), Config::tiny()] {
            c.validate(Path::new("preset")).unwrap();
            let text = c.to_toml_string().unwrap();
            assert_eq!(Config::from_toml_str(&text, "x").unwrap(), c);
        }
        assert_eq!(Config::paper().latent_size(), 32);
        assert_eq!(Config::paper().vae_downsample_factor(), 8);
        assert_eq!(Config::tiny().latent_size(), 16);
    }

    #[test]
    fn repository_diffad_toml_is_the_paper_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("diffad.toml");
        assert_eq!(Config::from_file(&path).unwrap(), Config::paper());
    }

    #[test]
    fn table1_variants_parse_by_kebab_name() {
        let mut text = Config::paper().to_toml_string().unwrap();
        text = text.replace("\"noisy-condition\"", "\"forward-reverse\"");
        text = text.replace("\"interpolated\"", "\"vae-reconstruction\"");
        let c = Config::from_toml_str(&text, "x").unwrap();
        assert_eq!(c.ldm.reconstruction, Reconstruction::ForwardReverse);
        assert_eq!(c.segmenter.input, SegmenterInput::VaeReconstruction);
    }

    #[test]
    fn invalid_values_and_unknown_keys_name_the_file_and_field() {
        let mut c = Config::tiny();
        c.synthesis.beta_max = 1.5;
        let err = c.validate(Path::new("my.toml")).unwrap_err().to_string();
        assert!(
            err.contains("my.toml") && err.contains("synthesis.beta_max"),
            "{err}"
        );

        let mut c = Config::tiny();
        c.data.image_size = 48;
        assert!(c.validate(Path::new("x")).is_err());
        let mut c = Config::tiny();
        c.ldm.attention_levels.push(true);
        assert!(c.validate(Path::new("x")).is_err());

        let text = Config::tiny().to_toml_string().unwrap() + "\n[extra]\nkey = 1\n";
        let err = Config::from_toml_str(&text, "cfg.toml").unwrap_err();
        assert!(err.to_string().contains("cfg.toml"), "{err}");
        assert!(Config::from_toml_str("seed = \"x\"", "bad.toml").is_err());
        assert!(matches!(
            Config::load("/nonexistent/diffad.toml"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn first_difference_names_the_setting() {
        let a = Config::tiny();
        let mut b = a.clone();
        assert_eq!(a.first_difference(&b), None);
        b.ldm.epochs += 1;
        assert_eq!(a.first_difference(&b).as_deref(), Some("ldm.epochs"));
        b = a.clone();
        b.vae.pretrained = Some("vae.safetensors".into());
        assert_eq!(a.first_difference(&b).as_deref(), Some("vae.pretrained"));
    }
}
