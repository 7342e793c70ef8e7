//! Helpers shared by the integration tests (and `benches/predict.rs`): the
//! micro configuration that trains in seconds, and a run directory with seeded
//! random weights for any configuration.

#![allow(dead_code)]

use std::path::Path;

use candle_core::Device;
use diffad::{Config, RunDir};

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
/// `config`, as a trained run would be loaded ([`diffad::speed::random_run`]).
pub fn random_run(root: &Path, config: &Config) -> RunDir {
    diffad::speed::random_run(root, config, &Device::Cpu).expect("random run")
}
