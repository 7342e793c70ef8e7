//! The builders of the stage crates' configurations from the TOML sections:
//! the one place that maps `diffad.toml` onto `diffad-vae`,
//! `diffad-diffusion`, `diffad-seg` and `diffad-synth` types.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffad_diffusion::{BetaSchedule, ConditionMode, Ddim, DdimConfig, LdmTrainConfig, UNetConfig};
use diffad_seg::{DiscriminativeUNetConfig, SegInput, SegTrainConfig};
use diffad_synth::{
    AnomalySynthesizer, FolderOptions, FolderTextures, ProceduralTextures, SelfAugmentation,
    SynthConfig, TextureSource,
};
use diffad_vae::{AutoencoderKlConfig, VaeTrainConfig};

use super::sections::{AnomalyTexture, Check};
use super::variants::{Reconstruction, SegmenterInput};
use super::Config;
use crate::error::{Error, Result};
use crate::seeds;

impl Config {
    /// The diffusers `AutoencoderKL` architecture of `[vae]`.
    pub fn vae_architecture(&self) -> AutoencoderKlConfig {
        let v = &self.vae;
        AutoencoderKlConfig {
            block_out_channels: v.channel_mult.iter().map(|m| m * v.base_channels).collect(),
            layers_per_block: v.layers_per_block,
            latent_channels: v.latent_channels,
            norm_num_groups: v.norm_groups,
            dropout: v.dropout,
            ..AutoencoderKlConfig::diffad()
        }
    }

    /// The conditioning of `[ldm] reconstruction` as the diffusion crate's mode.
    pub fn condition_mode(&self) -> ConditionMode {
        match self.ldm.reconstruction {
            Reconstruction::NoisyCondition => ConditionMode::NoisyCondition,
            Reconstruction::CleanCondition => ConditionMode::CleanCondition,
            Reconstruction::ForwardReverse => {
                let t = (self.inference.sdedit_strength * self.ldm.timesteps as f64) as usize;
                ConditionMode::ForwardReverse {
                    t_start: t.min(self.ldm.timesteps - 1),
                }
            }
        }
    }

    /// The denoiser architecture of `[ldm]` (latent + condition channels in).
    pub fn unet_architecture(&self) -> UNetConfig {
        let l = &self.ldm;
        let latent = self.vae.latent_channels;
        let config = UNetConfig {
            in_channels: 2 * latent,
            out_channels: latent,
            block_out_channels: l
                .channel_mult
                .iter()
                .map(|m| m * l.model_channels)
                .collect(),
            attention: l.attention_levels.clone(),
            layers_per_block: l.layers_per_block,
            attention_head_dim: l.head_channels,
            norm_num_groups: l.norm_groups,
            ..UNetConfig::diffad()
        };
        if self.condition_mode().is_conditional() {
            config
        } else {
            config.unconditional()
        }
    }

    /// The segmenter's input variant.
    pub fn seg_input(&self) -> SegInput {
        match self.segmenter.input {
            SegmenterInput::Interpolated => SegInput::Interpolated {
                lambda: self.segmenter.lambda,
            },
            SegmenterInput::VaeReconstruction => SegInput::VaeReconstruction,
            SegmenterInput::ReconstructionOnly => SegInput::ReconstructionOnly,
        }
    }

    /// The segmenter architecture.
    pub fn segmenter_architecture(&self) -> DiscriminativeUNetConfig {
        DiscriminativeUNetConfig::new(
            self.seg_input().in_channels(3),
            self.segmenter.base_channels,
        )
    }

    /// The DDIM sampler (CompVis spacing, eta 0) with `steps` steps.
    pub fn ddim(&self, steps: usize) -> Result<Ddim> {
        Ddim::new(DdimConfig {
            num_train_timesteps: self.ldm.timesteps,
            beta_schedule: self.beta_schedule(),
            num_inference_steps: steps,
            ..DdimConfig::diffad()
        })
        .map_err(|e| Error::Config {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })
    }

    /// The sqrt-linear (`scaled_linear`) beta schedule of `[ldm]`.
    pub(crate) fn beta_schedule(&self) -> BetaSchedule {
        BetaSchedule::ScaledLinear {
            beta_start: self.ldm.beta_start,
            beta_end: self.ldm.beta_end,
        }
    }

    /// DRAEM synthesis settings of `[synthesis]`.
    pub fn synth_config(&self) -> SynthConfig {
        let s = &self.synthesis;
        let mut config = SynthConfig {
            anomaly_probability: s.anomaly_probability as f32,
            beta_max: s.beta_max as f32,
            rotate_normal_probability: s.normal_rotation_probability as f32,
            ..SynthConfig::default()
        };
        config.mask.max_scale_exponent = s.perlin_max_exponent;
        config.mask.threshold = s.threshold as f32;
        config
    }

    /// The texture source `T` of `[synthesis]`: a folder (DTD), the procedural
    /// textures or self-augmentation.
    pub(crate) fn texture_source(&self) -> Result<Arc<dyn TextureSource>> {
        Ok(match &self.synthesis.texture_dir {
            Some(dir) => {
                let size = self.data.image_size;
                Arc::new(FolderTextures::open(
                    dir,
                    FolderOptions {
                        preload: Some((size, size)),
                        ..FolderOptions::default()
                    },
                )?)
            }
            None => match self.synthesis.texture {
                AnomalyTexture::Procedural => Arc::new(ProceduralTextures::default()),
                AnomalyTexture::SelfAugmentation => Arc::new(SelfAugmentation::default()),
            },
        })
    }

    /// The DRAEM synthesizer of `[synthesis]` that makes the LDM stage's
    /// anomalous conditions, on the stream [`seeds::SYNTH`].
    pub fn ldm_synthesizer(&self) -> Result<AnomalySynthesizer> {
        self.synthesizer(seeds::SYNTH)
    }

    /// The DRAEM synthesizer of `[synthesis]` that makes the segmenter's
    /// training anomalies, on its own stream [`seeds::SEG_SYNTH`] (not the
    /// anomalies the LDM was fitted to).
    pub fn seg_synthesizer(&self) -> Result<AnomalySynthesizer> {
        self.synthesizer(seeds::SEG_SYNTH)
    }

    /// The DRAEM synthesizer of the threshold calibration: every sample
    /// anomalous (empty masks redrawn), on the stream [`seeds::VALIDATION`].
    pub fn validation_synthesizer(&self) -> Result<AnomalySynthesizer> {
        let config = SynthConfig {
            anomaly_probability: 1.0,
            rotate_normal_probability: 0.0,
            empty_mask: diffad_synth::EmptyMaskPolicy::Retry { max_retries: 16 },
            ..self.synth_config()
        };
        Ok(AnomalySynthesizer::new(
            config,
            self.texture_source()?,
            seeds::mix(self.seed, seeds::VALIDATION),
        )?)
    }

    fn synthesizer(&self, salt: u64) -> Result<AnomalySynthesizer> {
        Ok(AnomalySynthesizer::new(
            self.synth_config(),
            self.texture_source()?,
            seeds::mix(self.seed, salt),
        )?)
    }

    /// The VAE trainer's settings for `total_steps` steps, checkpointing four
    /// times into `checkpoint_dir`, on the stream [`seeds::VAE`].
    pub fn vae_train_config(&self, total_steps: u64, checkpoint_dir: PathBuf) -> VaeTrainConfig {
        let v = &self.vae;
        let defaults = VaeTrainConfig::default();
        // The PatchGAN starts at step 50001 (kl.yaml): only build it when reached.
        let discriminator = defaults
            .discriminator
            .clone()
            .filter(|d| d.start_step < total_steps);
        VaeTrainConfig {
            steps: total_steps,
            batch_size: v.batch_size,
            optimizer: diffad_vae::AdamWConfig {
                lr: v.learning_rate,
                ..defaults.optimizer
            },
            kl_weight: v.kl_weight,
            discriminator,
            checkpoint_every: (total_steps / 4).max(1),
            checkpoint_dir: Some(checkpoint_dir),
            seed: seeds::mix(self.seed, seeds::VAE),
            ..defaults
        }
    }

    /// The LDM trainer's settings ([`Config::condition_mode`], the beta
    /// schedule, AdamW, EMA) on the stream [`seeds::LDM`].
    pub fn ldm_train_config(&self) -> LdmTrainConfig {
        let l = &self.ldm;
        LdmTrainConfig {
            mode: self.condition_mode(),
            beta_schedule: self.beta_schedule(),
            num_train_timesteps: l.timesteps,
            optimizer: diffad_diffusion::AdamWConfig {
                lr: l.learning_rate,
                ..diffad_diffusion::AdamWConfig::default()
            },
            ema_decay: (l.ema_decay > 0.0).then_some(l.ema_decay),
            grad_clip: (l.grad_clip > 0.0).then_some(l.grad_clip),
            seed: seeds::mix(self.seed, seeds::LDM),
            ..LdmTrainConfig::default()
        }
    }

    /// The segmenter trainer's settings (focal loss, Adam, MultiStepLR),
    /// checkpointing ten times into `checkpoint`, on the stream [`seeds::SEG`].
    pub fn seg_train_config(&self, checkpoint: &Path) -> SegTrainConfig {
        let g = &self.segmenter;
        SegTrainConfig {
            epochs: g.epochs,
            batch_size: g.batch_size,
            lr: g.learning_rate,
            lr_milestones: g.lr_milestones.clone(),
            lr_gamma: g.lr_gamma,
            focal: diffad_seg::FocalLossConfig {
                gamma: g.focal_gamma,
                ..diffad_seg::FocalLossConfig::default()
            },
            input: self.seg_input(),
            seed: seeds::mix(self.seed, seeds::SEG),
            shuffle: true,
            checkpoint: Some(checkpoint.to_path_buf()),
            checkpoint_every: (g.epochs / 10).max(1),
        }
    }

    /// The stage crates' own checks of the configurations built from this
    /// one (architectures, synthesis, segmenter input).
    pub(crate) fn validate_stages(&self, check: &Check) -> Result<()> {
        let stage =
            |name: &str, e: &dyn std::fmt::Display| check.fail::<()>(format!("{name}: {e}"));
        if let Err(e) = self.vae_architecture().validate() {
            return stage("vae", &e);
        }
        if let Err(e) = self.unet_architecture().validate() {
            return stage("ldm", &e);
        }
        if let Err(e) = self.synth_config().validate() {
            return stage("synthesis", &e);
        }
        if let Err(e) = self.seg_input().validate() {
            return stage("segmenter", &e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segmenter_draws_other_anomalies_than_the_ldm() {
        let config = Config::tiny();
        let size = config.data.image_size;
        let values = (0..size * size * 3).map(|i| (i % 7) as f32 / 7.0).collect();
        let image = diffad_synth::RgbImage::from_hwc(size, size, values).unwrap();
        let (ldm, seg) = (
            config.ldm_synthesizer().unwrap(),
            config.seg_synthesizer().unwrap(),
        );
        let differs = (0..8u64).any(|i| {
            let a = ldm.synthesize_indexed(&image, None, 0, i).unwrap();
            let b = seg.synthesize_indexed(&image, None, 0, i).unwrap();
            a.mask != b.mask || a.augmented != b.augmented
        });
        assert!(
            differs,
            "epoch 0 images 0..8: the same anomalies in both stages"
        );
    }

    #[test]
    fn the_texture_setting_picks_the_source() {
        // Procedural textures get DRAEM's augmenters from the synthesizer;
        // self-augmentation augments the image itself and shuffles its tiles.
        let mut config = Config::tiny();
        assert!(config.texture_source().unwrap().needs_augmentation());
        config.synthesis.texture = AnomalyTexture::SelfAugmentation;
        let source = config.texture_source().unwrap();
        assert!(!source.needs_augmentation());
        let normal = diffad_synth::RgbImage::filled(16, 16, [0.2, 0.4, 0.6]).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let texture = source.draw(&normal, &mut rng).unwrap();
        assert_eq!(texture.dimensions(), (16, 16));
    }

    #[test]
    fn paper_vae_trains_with_dropout_and_the_ldm_without_clipping() {
        // Released kl.yaml: dropout 0.5; CompVis does not clip gradients.
        let paper = Config::paper();
        assert_eq!(paper.vae_architecture().dropout, 0.5);
        assert_eq!(paper.ldm_train_config().grad_clip, None);
        let tiny = Config::tiny();
        assert_eq!(tiny.vae_architecture().dropout, 0.0);
        assert_eq!(tiny.ldm_train_config().grad_clip, Some(1.0));
    }
}
