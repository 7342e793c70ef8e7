//! The frozen first two stages as one reconstructor (paper Sec. 3.2-3.4):
//! `c = E(x_a)`, `z_r` by DDIM (eta 0, the clean condition `c`, or the
//! configured noisy test condition / SDEdit start), `x_r = D(z_r)`, and the
//! segmenter's middle input (`x_inter = D(lambda c + (1 - lambda) z_r)`,
//! `D(c)` or none, per `segmenter.input`). Both the segmenter's training data
//! and inference go through it.

use candle_core::{DType, Device, Tensor};
use diffad_diffusion::{reconstruct, Ddim, ReconstructOptions, UNet};
use diffad_seg::SegInput;
use diffad_vae::{AutoencoderKl, LatentCodec};

use crate::config::Config;
use crate::error::Result;
use crate::run_dir::RunDir;
use crate::stage::Stage;

/// Loads the run's final VAE in `dtype`, with its architecture
/// ([`RunDir::vae_architecture`]: a pretrained diffusers folder's `config.json`,
/// else `[vae]`).
pub(crate) fn load_vae(run: &RunDir, dtype: DType, device: &Device) -> Result<AutoencoderKl> {
    let path = run.require(Stage::Vae)?;
    Ok(AutoencoderKl::load_with_dtype(
        run.vae_architecture()?,
        &path,
        dtype,
        device,
    )?)
}

/// The reconstruction options of `config` with `steps` DDIM steps, drawing
/// the noise of sample `i` from the stream `(seed, offset + i)`.
pub(crate) fn reconstruct_options(
    config: &Config,
    steps: usize,
    seed: u64,
    offset: u64,
) -> ReconstructOptions {
    ReconstructOptions {
        steps,
        eta: 0.0,
        mode: config.condition_mode(),
        condition_t: config.inference.condition_noise_step,
        seed,
        sample_offset: offset,
        shared_stream: false,
    }
}

/// The frozen VAE `E`/`D` and denoiser with the DDIM sampler.
pub(crate) struct Reconstructor {
    vae: AutoencoderKl,
    unet: UNet,
    ddim: Ddim,
    input: SegInput,
}

/// A batch's reconstruction.
pub(crate) struct Reconstructed {
    /// `x_r = D(z_r)`, `(B, 3, H, W)`.
    pub x_r: Tensor,
    /// The segmenter's middle input (`x_inter`, `D(c)`), if the variant has one.
    pub middle: Option<Tensor>,
}

impl Reconstructor {
    /// Loads the run's VAE and denoiser with their weights in `dtype` (the
    /// networks take and return `f32`), sampling with `steps` DDIM steps.
    pub(crate) fn load(run: &RunDir, device: &Device, dtype: DType, steps: usize) -> Result<Self> {
        let vae = load_vae(run, dtype, device)?;
        let unet_path = run.require(Stage::Ldm)?;
        let unet =
            UNet::load_with_dtype(run.config().unet_architecture(), &unet_path, dtype, device)?;
        Ok(Self {
            vae,
            unet,
            ddim: run.config().ddim(steps)?,
            input: run.config().seg_input(),
        })
    }

    /// The segmenter's input variant.
    pub(crate) fn input(&self) -> &SegInput {
        &self.input
    }

    /// Reconstructs a batch `x_a` `(B, 3, H, W)`, sample `i` drawing from the
    /// stream `opts.sample_offset + i`.
    pub(crate) fn reconstruct(
        &self,
        x_a: &Tensor,
        opts: &ReconstructOptions,
    ) -> Result<Reconstructed> {
        let c = self.vae.encode(x_a)?;
        let z_r = reconstruct(&self.unet, &self.ddim, &c, opts)?;
        self.finish(&c, &z_r)
    }

    /// The VAE alone, `D(E(x))` of a batch `(B, 3, H, W)` (posterior mode, no
    /// diffusion): the first stage's share of the reconstruction error.
    pub(crate) fn vae_round_trip(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.vae.encode(x)?;
        Ok(self.vae.decode(&c)?)
    }

    /// `x_r = D(z_r)` and the middle piece (`x_inter`, `D(c)` or none).
    fn finish(&self, c: &Tensor, z_r: &Tensor) -> Result<Reconstructed> {
        let x_r = self.vae.decode(z_r)?;
        let decode = |z: &Tensor| self.vae.decode(z);
        let middle = self.input.middle_from_latents(c, z_r, &decode)?;
        Ok(Reconstructed { x_r, middle })
    }
}
