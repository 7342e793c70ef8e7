//! DiffAD end to end through the library API: a procedural MVTec-style
//! dataset, all three stages trained with a shortened `tiny` config on the
//! CPU, one prediction, and an MVTec-protocol evaluation.
//!
//! `cargo run --release --example quickstart` (1-2 minutes on 2 cores).

use candle_core::Device;
use diffad::data::{load_image, load_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::{Config, DiffAd, RunDir, TrainOptions};

fn main() -> diffad::Result<()> {
    // Reuse freed activations instead of page-faulting them in again.
    diffad::nn::tune_allocator();
    let work = std::env::temp_dir().join("diffad-quickstart");
    let device = Device::Cpu;

    // 1. An MVTec AD class folder: train/good, test/<defect>, ground_truth/<defect>.
    let class_dir = work.join("data").join("demo_wood");
    if !class_dir.is_dir() {
        write_demo_dataset(&work.join("data"), &DemoDataOptions::default())?;
    }
    let class = MvtecClass::open_for_eval(&class_dir)?;

    // 2. The tiny CPU preset (64x64 images), with fewer epochs.
    let mut config = Config::tiny();
    config.vae.epochs = 6;
    config.ldm.epochs = 10;
    config.segmenter.epochs = 10;
    let size = config.data.image_size;

    // 3. Train VAE -> conditional LDM -> segmenter into a run directory
    //    (rerunning resumes or skips finished stages).
    let run = RunDir::create(&work.join("run"), config)?;
    let good = load_images(&class.train, size)?;
    for report in diffad::train(
        &run,
        &good,
        &device,
        &TrainOptions::default(),
        &mut diffad::train::silent,
    )? {
        println!("{report}");
    }

    // 4. Predict one defective image: a per-pixel map and an image score.
    let model = DiffAd::load(&run, &device)?;
    for sample in class.test.iter().filter(|s| s.is_anomalous()).take(1) {
        let (map, score) = model.predict(&load_image(&sample.image, size)?)?;
        let peak = map.max();
        println!(
            "{}: score {score:.3}, max pixel {peak:.3}",
            sample.image.display()
        );
    }

    // 5. Evaluate on the whole test split (metrics.json, scores.csv, TIFF maps, overlays).
    let result = evaluate(
        &model,
        &class,
        &work.join("eval"),
        &EvalOptions::default(),
        &mut diffad::nn::progress::Silent,
    )?;
    println!("{}", result.metrics);
    println!("outputs in {}", work.join("eval").display());
    Ok(())
}
