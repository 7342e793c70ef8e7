//! The paper's full configuration builds and predicts (randomly initialised
//! weights in a run directory). Ignored by default: paper-size networks take
//! about a minute per 256x256 image on 2 CPU cores.
//!
//! `cargo test --release -p diffad --test paper_config -- --ignored --nocapture`

mod common;

use std::time::Instant;

use candle_core::Device;
use diffad::demo_data::good_image;
use diffad::{Config, DiffAd};

#[test]
#[ignore = "paper-size networks: about a minute per image on 2 CPU cores"]
fn paper_config_predicts_a_256_image() {
    let device = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::paper();
    let run = common::random_run(&dir.path().join("run"), &config);

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
