//! The built-in configurations: the paper's (`diffad.toml`), the `tiny`
//! preset (tests and the demo) and the `cpu` preset (real photographs on a
//! CPU, `docs/quality.md`).

use super::sections::{
    AnomalyTexture, DataConfig, InferenceConfig, LdmConfig, Precision, SegmenterConfig,
    SynthesisConfig, VaeConfig,
};
use super::variants::{Reconstruction, SegmenterInput};
use super::Config;

impl Config {
    /// The paper's configuration (256x256 images, released `kl.yaml` and
    /// `mvtec.yaml`, DRAEM's segmenter); identical to `diffad.toml`.
    pub fn paper() -> Self {
        Self {
            seed: 0,
            data: DataConfig {
                image_size: 256,
                validation_fraction: 0.1,
            },
            synthesis: SynthesisConfig {
                texture_dir: None,
                texture: AnomalyTexture::Procedural,
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
                dropout: 0.5,
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
                grad_clip: 0.0,
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
                map_sigma: 0.0,
                batch_size: 8,
                dtype: Precision::F32,
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
        // Departures from the paper for a few hundred steps: no VAE dropout (it
        // slows convergence), and the gradient norm clipped at 1 (the tiny
        // LDM's learning rate is 15x the paper's).
        c.vae.dropout = 0.0;
        c.ldm.grad_clip = 1.0;
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

    /// The CPU preset that is measured on real photographs (`--config cpu`,
    /// `docs/quality.md`): the `tiny` networks at 64x64 with the segmenter
    /// twice as wide, trained about seven times longer, so that one class
    /// trains in under 15 minutes on 2 cores.
    ///
    /// Where it departs from the paper (`paper`), and why (the evidence is in
    /// `docs/quality.md`):
    ///
    /// * 64x64 images and narrow networks (VAE 16-32-32 channels, f = 4;
    ///   UNet 32-64, attention at the inner level; segmenter base width 16):
    ///   what trains in minutes on a CPU.
    /// * Short schedules: VAE 40 epochs, LDM 300, segmenter 60 (of 36
    ///   training images, batch 8). With the `tiny` preset's 25 LDM epochs
    ///   the denoiser has not yet learned to use its condition: `x_r` is a
    ///   generic texture unrelated to the input (loss 0.35), and only
    ///   differently coloured patches are found. At 300 epochs (loss 0.02)
    ///   `x_r` reproduces the input and repairs holes and scratches.
    /// * The segmenter at base width 16 (the paper's is 64; `tiny` has 8):
    ///   at width 8 it marks only the rims of large defects.
    /// * Learning rates raised for the short schedules (VAE 2e-3, LDM 1e-3,
    ///   as `tiny`), the LDM's gradient norm clipped at 1, no EMA, no VAE
    ///   dropout, DDIM 5 steps at inference and a 7x7 image-score window
    ///   (21x21 is a third of a 64x64 image).
    /// * One extension of the method (`inference.map_sigma` = 1): the anomaly
    ///   map is smoothed by a Gaussian of 1 pixel, the scale of the sigma 4 at
    ///   256x256 that PatchCore and anomalib use. The segmenter's response
    ///   inside a real defect is speckled; smoothed, pixel AP and AU-PRO rise
    ///   on most classes of the photo benchmark (the ablation in
    ///   `docs/quality.md`).
    pub fn cpu() -> Self {
        let mut c = Self::tiny();
        c.vae.epochs = 40;
        c.ldm.epochs = 300;
        c.segmenter.base_channels = 16;
        c.segmenter.epochs = 60;
        c.inference.map_sigma = 1.0;
        c
    }

    /// A preset by name: `paper`, `tiny` or `cpu`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper()),
            "tiny" => Some(Self::tiny()),
            "cpu" => Some(Self::cpu()),
            _ => None,
        }
    }
}
