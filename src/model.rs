//! A trained DiffAD model for inference (paper Sec. 3, Fig. 2): the
//! reconstructor (`c = E(x)`, `z_r` by DDIM with `inference.ddim_steps`,
//! `x_r = D(z_r)`, `x_inter`), then the segmenter, whose softmax channel 1 is
//! the anomaly map and `max(avg_pool(map, k))` the image score
//! (`docs/reference.md` §5).

use std::fmt;

use candle_core::{Device, Tensor};
use diffad_diffusion::ReconstructOptions;
use diffad_seg::{anomaly_map, DiscriminativeUNet};

use crate::config::{Config, Precision};
use crate::data::{images_to_tensor, tensor_to_images, RgbImage};
use crate::error::{Error, Result};
use crate::reconstructor::{reconstruct_options, Reconstructed, Reconstructor};
use crate::report::AnomalyMap;
use crate::run_dir::RunDir;
use crate::seeds;
use crate::stage::Stage;

/// One prediction: the anomaly map and the image score.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Per-pixel probability of "anomalous", `image_size x image_size`.
    pub map: AnomalyMap,
    /// `max(avg_pool(map, inference.score_kernel))`.
    pub score: f32,
}

/// A prediction with the images it was made from, to see which stage failed:
/// the reconstruction `x_r = D(z_r)` and the segmenter's middle input
/// (`x_inter`, or `D(c)`; none for `reconstruction-only`).
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// The anomaly map and image score.
    pub prediction: Prediction,
    /// The reconstruction `x_r`.
    pub reconstruction: RgbImage,
    /// The segmenter's middle input, if its variant has one.
    pub middle: Option<RgbImage>,
}

/// A trained DiffAD model, ready for inference.
pub struct DiffAd {
    config: Config,
    device: Device,
    reconstructor: Reconstructor,
    segmenter: DiscriminativeUNet,
}

impl fmt::Debug for DiffAd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiffAd")
            .field("image_size", &self.config.data.image_size)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl DiffAd {
    /// Loads the final weights of every stage of a run, in the run's
    /// `inference.dtype`.
    pub fn load(run: &RunDir, device: &Device) -> Result<Self> {
        Self::load_with_precision(run, device, run.config().inference.dtype)
    }

    /// [`load`](Self::load) with the networks in `precision` instead of the
    /// run's `inference.dtype` (the weights are converted once, here; images,
    /// latents, the sampler and the maps stay `f32`).
    pub fn load_with_precision(
        run: &RunDir,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let mut config = run.config().clone();
        config.inference.dtype = precision;
        let dtype = precision.dtype();
        let reconstructor = Reconstructor::load(run, device, dtype, config.inference.ddim_steps)?;
        let seg_path = run.require(Stage::Segmenter)?;
        let segmenter = DiscriminativeUNet::load_with_dtype(
            config.segmenter_architecture(),
            &seg_path,
            dtype,
            device,
        )?;
        Ok(Self {
            config,
            device: device.clone(),
            reconstructor,
            segmenter,
        })
    }

    /// The model with `inference.map_sigma` = `sigma` instead of the run's
    /// (an inference setting: the networks are unchanged), e.g. `0` to score
    /// the raw segmentation output. Errors on a negative or non-finite sigma.
    pub fn with_map_sigma(mut self, sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(Error::Config {
                path: "inference.map_sigma".into(),
                message: format!("must be finite and at least 0, got {sigma}"),
            });
        }
        self.config.inference.map_sigma = sigma;
        Ok(self)
    }

    /// The configuration of the run it was trained in.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Anomaly map and image score of one image (`image_size` square, RGB in
    /// `[0, 1]`; load it with [`crate::data::load_image`]).
    pub fn predict(&self, image: &RgbImage) -> Result<(AnomalyMap, f32)> {
        let mut out = self.predict_batch(std::slice::from_ref(image))?;
        let p = out
            .pop()
            .ok_or_else(|| Error::Shape("empty prediction".into()))?;
        Ok((p.map, p.score))
    }

    /// Predictions for several images, `inference.batch_size` at a time. The
    /// reverse process draws its noise per image from the seed, so a result
    /// does not depend on the batch it was computed in.
    pub fn predict_batch(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        Ok(self
            .analyse_batch(images)?
            .into_iter()
            .map(|a| a.prediction)
            .collect())
    }

    /// [`predict_batch`](Self::predict_batch) with the reconstruction and the
    /// segmenter's middle input of every image.
    pub fn analyse_batch(&self, images: &[RgbImage]) -> Result<Vec<Analysis>> {
        let size = self.config.data.image_size;
        self.check_size(images)?;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.config.inference.batch_size) {
            let x = images_to_tensor(chunk, &self.device)?;
            let (maps, rec) = self.run(&x)?;
            let values = maps.flatten_all()?.to_vec1::<f32>()?;
            let reconstructions = tensor_to_images(&rec.x_r)?;
            let middles = match &rec.middle {
                Some(m) => tensor_to_images(m)?.into_iter().map(Some).collect(),
                None => vec![None; chunk.len()],
            };
            for ((v, reconstruction), middle) in values
                .chunks_exact(size * size)
                .zip(reconstructions)
                .zip(middles)
            {
                let map = self.smooth(AnomalyMap::finite(size, size, v.to_vec())?)?;
                let score = diffad_metrics::image_score_view(
                    map.view(),
                    self.config.inference.score_kernel,
                )?;
                out.push(Analysis {
                    prediction: Prediction { map, score },
                    reconstruction,
                    middle,
                });
            }
        }
        Ok(out)
    }

    /// The VAE round trip `D(E(x))` of every image (posterior mode, no
    /// diffusion), `inference.batch_size` at a time: what the first stage
    /// alone loses (paper Sec. 3.2).
    pub fn vae_round_trip(&self, images: &[RgbImage]) -> Result<Vec<RgbImage>> {
        self.check_size(images)?;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.config.inference.batch_size) {
            let x = images_to_tensor(chunk, &self.device)?;
            out.extend(tensor_to_images(&self.reconstructor.vae_round_trip(&x)?)?);
        }
        Ok(out)
    }

    /// The map smoothed by `inference.map_sigma` (unchanged at 0).
    fn smooth(&self, map: AnomalyMap) -> Result<AnomalyMap> {
        let sigma = self.config.inference.map_sigma;
        if sigma == 0.0 {
            return Ok(map);
        }
        let smooth = diffad_metrics::gaussian_smooth(map.view(), sigma)?;
        let (h, w) = smooth.dim();
        Ok(AnomalyMap::finite(
            h,
            w,
            smooth.into_raw_vec_and_offset().0,
        )?)
    }

    /// [`Error::Shape`] unless every image is `data.image_size` square.
    fn check_size(&self, images: &[RgbImage]) -> Result<()> {
        let size = self.config.data.image_size;
        match images
            .iter()
            .find(|i| (i.height(), i.width()) != (size, size))
        {
            Some(bad) => Err(Error::Shape(format!(
                "the model takes {size}x{size} images, got {}x{}",
                bad.height(),
                bad.width()
            ))),
            None => Ok(()),
        }
    }

    /// Anomaly maps `(B, 1, H, W)` of a batch `(B, 3, H, W)` in `[0, 1]`.
    ///
    /// The reverse process of every image starts from the same seeded noise
    /// (stream 0 of [`seeds::RECONSTRUCTION`], `ReconstructOptions::shared_stream`)
    /// and the whole batch goes through the VAE, every DDIM step of the UNet
    /// (which embeds the shared timestep once) and the segmenter, so an image's
    /// map is bit-identical to the one it gets alone, whatever batch it is in.
    pub fn anomaly_maps(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.run(x)?.0)
    }

    /// The anomaly maps of a batch and the reconstruction they came from.
    fn run(&self, x: &Tensor) -> Result<(Tensor, Reconstructed)> {
        let opts = ReconstructOptions {
            shared_stream: true,
            ..reconstruct_options(
                &self.config,
                self.config.inference.ddim_steps,
                seeds::mix(self.config.seed, seeds::RECONSTRUCTION),
                0,
            )
        };
        let rec = self.reconstructor.reconstruct(x, &opts)?;
        let input = self
            .reconstructor
            .input()
            .assemble(&rec.x_r, rec.middle.as_ref(), x)?;
        let logits = self.segmenter.forward_t(&input, false)?;
        Ok((anomaly_map(&logits)?, rec))
    }
}
