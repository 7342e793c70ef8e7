//! # diffad-seg: DiffAD's discriminative sub-network
//!
//! The second stage of DiffAD (Zhang et al., ICCV 2023, Sec. 3.4): a U-Net
//! that looks at the input `x_a`, its reconstruction `x_r` and the
//! *interpolated channels* `x_inter = D(lambda c + (1 - lambda) z_r)` and
//! outputs a pixel-level anomaly map.
//!
//! * [`DiscriminativeUNet`] and its [`DiscriminativeUNetConfig`]: DRAEM's
//!   discriminative sub-network (Conv3x3-BN-ReLU U-Net, base width 64,
//!   28,375,874 parameters at 9 input channels), with DRAEM's state-dict names
//!   and init, built from the shared layers of `diffad-nn`;
//! * [`focal_loss`]: DRAEM's focal loss on softmax probabilities;
//! * [`interpolated_latent`], [`SegInput`] and [`LatentDecoder`]: the
//!   segmenter's input for the rows of the paper's Table 1;
//! * [`SegTrainer`]: Adam + MultiStepLR training from a
//!   [`ReconstructionSource`], with atomic checkpoints and resume; progress
//!   goes to a [`Progress`] callback (the crate never prints);
//! * [`anomaly_map`] and [`image_scores`]: softmax channel 1 and DRAEM's
//!   21x21 mean-filter maximum.
//!
//! This crate does not depend on the VAE or the diffusion model: the
//! pipeline plugs them in through [`LatentDecoder`] and
//! [`ReconstructionSource`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use diffad_seg::{anomaly_map, DiscriminativeUNet, DiscriminativeUNetConfig, SegInput};
//!
//! # fn main() -> diffad_seg::Result<()> {
//! let dev = Device::Cpu;
//! let input = SegInput::default(); // (x_r, x_inter, x_a), lambda = 0.5
//! let config = DiscriminativeUNetConfig::new(input.in_channels(3), 4); // a narrow network
//! let varmap = VarMap::new();
//! let net = DiscriminativeUNet::init(config, &varmap, 0, &dev)?;
//!
//! let x_a = Tensor::zeros((1, 3, 32, 32), DType::F32, &dev)?;
//! let x_r = x_a.clone();
//! let x_inter = x_a.clone();
//! let x = input.assemble(&x_r, Some(&x_inter), &x_a)?; // (1, 9, 32, 32)
//! let logits = net.forward_t(&x, false)?;
//! let map = anomaly_map(&logits)?;
//! assert_eq!(map.dims(), &[1, 1, 32, 32]);
//! # Ok(()) }
//! ```

mod error;
mod input;
mod loss;
mod map;
mod train;
mod unet;

/// The progress callback of [`SegTrainer::train`] (shared with the other crates).
pub use diffad_nn::progress::{Progress, Silent};
pub use error::{Error, Result};
pub use input::{interpolated_latent, LatentDecoder, SegInput};
pub use loss::{focal_loss, focal_loss_with, FocalLossConfig};
pub use map::{anomaly_map, image_scores};
pub use train::{
    epoch_shuffle_seed, ReconstructionSource, SegBatch, SegSample, SegTrainConfig, SegTrainer,
    TrainReport,
};
pub use unet::{DiscriminativeUNet, DiscriminativeUNetConfig};
