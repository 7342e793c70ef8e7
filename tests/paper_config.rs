//! The paper's full configuration builds and predicts (randomly initialised
//! weights in a run directory). Ignored by default: paper-size networks take
//! about a minute per 256x256 image on 2 CPU cores.
//!
//! `cargo test --release -p diffad --test paper_config -- --ignored --nocapture`

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use diffad::demo_data::good_image;
use diffad::diffusion::UNet;
use diffad::seg::DiscriminativeUNet;
use diffad::vae::AutoencoderKl;
use diffad::{Config, DiffAd, RunDir, Stage};

#[test]
#[ignore = "paper-size networks: about a minute per image on 2 CPU cores"]
fn paper_config_predicts_a_256_image() {
    let device = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::paper();
    let run = RunDir::create(&dir.path().join("run"), config.clone()).unwrap();
    for stage in Stage::ALL {
        std::fs::create_dir_all(run.weights(stage).parent().unwrap()).unwrap();
    }
    AutoencoderKl::new(config.vae_architecture(), 0, &device)
        .unwrap()
        .save(run.weights(Stage::Vae))
        .unwrap();
    let unet_vars = VarMap::new();
    let vb = diffad::nn::init::seeded_var_builder(&unet_vars, 0, DType::F32, &device);
    UNet::new(config.unet_architecture(), vb).unwrap();
    unet_vars.save(run.weights(Stage::Ldm)).unwrap();
    let seg_vars = VarMap::new();
    DiscriminativeUNet::init(config.segmenter_architecture(), &seg_vars, 0, &device).unwrap();
    DiscriminativeUNet::save(&seg_vars, run.weights(Stage::Segmenter)).unwrap();

    let model = DiffAd::load(&run, &device).unwrap();
    let image = good_image(256, 0, 0, 0).unwrap();
    let start = Instant::now();
    let (map, score) = model.predict(&image).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    println!("paper config: predict of one 256x256 image took {seconds:.2} s");
    assert_eq!((map.height(), map.width()), (256, 256));
    assert!(map.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
    assert!((0.0..=1.0).contains(&score));
}
