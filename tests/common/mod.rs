//! Helpers shared by the integration tests (and `benches/predict.rs`): the
//! micro configuration that trains in seconds, and a run directory with seeded
//! random weights for any configuration.

#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use diffad::diffusion::UNet;
use diffad::seg::DiscriminativeUNet;
use diffad::vae::AutoencoderKl;
use diffad::{Config, RunDir, Stage};

/// The tiny preset shrunk to 32x32 images and two epochs per stage, training
/// on every image (no validation split; set `data.validation_fraction` to
/// hold some out).
pub fn micro_config() -> Config {
    let mut c = Config::tiny();
    c.data.image_size = 32;
    c.vae.epochs = 2;
    c.vae.batch_size = 4;
    c.ldm.epochs = 2;
    c.ldm.batch_size = 4;
    c.segmenter.epochs = 2;
    c.segmenter.batch_size = 4;
    c.segmenter.reconstruction_ddim_steps = 2;
    c.inference.ddim_steps = 2;
    c.inference.batch_size = 4;
    c.data.validation_fraction = 0.0;
    c
}

/// A run directory at `root` with seeded random weights for every stage of
/// `config`, as a trained run would be loaded.
pub fn random_run(root: &Path, config: &Config) -> RunDir {
    let device = Device::Cpu;
    let run = RunDir::create(root, config.clone()).expect("run dir");
    for stage in Stage::ALL {
        std::fs::create_dir_all(run.weights(stage).parent().expect("parent")).expect("dir");
    }
    AutoencoderKl::new(config.vae_architecture(), 0, &device)
        .expect("vae")
        .save(run.weights(Stage::Vae))
        .expect("save vae");
    let unet_vars = VarMap::new();
    let vb = diffad::nn::init::seeded_var_builder(&unet_vars, 0, DType::F32, &device);
    UNet::new(config.unet_architecture(), vb).expect("unet");
    unet_vars.save(run.weights(Stage::Ldm)).expect("save unet");
    let seg_vars = VarMap::new();
    DiscriminativeUNet::init(config.segmenter_architecture(), &seg_vars, 0, &device)
        .expect("segmenter");
    DiscriminativeUNet::save(&seg_vars, run.weights(Stage::Segmenter)).expect("save seg");
    run
}
