//! `inference.dtype`: a tiny run trained in `f32` and evaluated with its networks in
//! `bf16` and `f16` gives maps within a stated distance of the `f32` maps, and metrics
//! that move by less than a stated amount.

mod common;

use candle_core::Device;
use diffad::config::Precision;
use diffad::data::{load_image, load_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::nn::progress::Silent;
use diffad::train::silent;
use diffad::{DiffAd, RunDir, TrainOptions};

/// The largest change of a map value (in `[0, 1]`) from the `f32` map.
const MAP_TOLERANCE: [(Precision, f32); 2] = [(Precision::Bf16, 0.02), (Precision::F16, 0.002)];
/// The largest change of image AUROC, pixel AUROC and pixel AP from `f32`: one
/// image or a few per cent of pixels trading ranks.
const METRIC_TOLERANCE: f64 = 0.05;

#[test]
fn bf16_and_f16_inference_move_maps_and_metrics_by_little() {
    let work = tempfile::tempdir().unwrap();
    let options = DemoDataOptions {
        size: 32,
        train: 8,
        test_good: 2,
        per_defect: 1,
        ..Default::default()
    };
    let class_dir = write_demo_dataset(work.path(), &options).unwrap();
    let class = MvtecClass::open_for_eval(&class_dir).unwrap();
    // The micro configuration, trained long enough for the segmenter to separate the
    // defects (an untrained one gives near-tied scores whose ranks any rounding flips).
    let mut config = common::micro_config();
    config.vae.epochs = 10;
    config.ldm.epochs = 10;
    config.segmenter.epochs = 40;
    let run = RunDir::create(&work.path().join("run"), config).unwrap();
    let images = load_images(&class.train, 32).unwrap();
    diffad::train(
        &run,
        &images,
        &Device::Cpu,
        &TrainOptions::default(),
        &mut silent,
    )
    .unwrap();

    let full = DiffAd::load(&run, &Device::Cpu).unwrap();
    assert_eq!(full.config().inference.dtype, Precision::F32);
    let image = load_image(&class.test[2].image, 32).unwrap();
    let (map, _) = full.predict(&image).unwrap();
    let eval = |model: &DiffAd, name: &str| {
        let out = work.path().join(name);
        let options = EvalOptions {
            anomaly_maps: false,
            overlays: false,
            thresholds: None,
        };
        evaluate(model, &class, &out, &options, &mut Silent)
            .unwrap()
            .metrics
    };
    let reference = eval(&full, "f32");
    for (precision, tolerance) in MAP_TOLERANCE {
        let half = DiffAd::load_with_precision(&run, &Device::Cpu, precision).unwrap();
        assert_eq!(half.config().inference.dtype, precision);
        let (half_map, _) = half.predict(&image).unwrap();
        let moved = map
            .as_slice()
            .iter()
            .zip(half_map.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{precision}: map moved by at most {moved:.2e}");
        assert!(
            moved > 0.0,
            "{precision}: the networks did not run in {precision}"
        );
        assert!(moved < tolerance, "{precision}: map moved by {moved}");
        let m = eval(&half, precision.name());
        let pairs = [
            ("image AUROC", reference.image_auroc, m.image_auroc),
            (
                "pixel AUROC",
                reference.pixel_auroc.unwrap(),
                m.pixel_auroc.unwrap(),
            ),
            ("pixel AP", reference.pixel_ap.unwrap(), m.pixel_ap.unwrap()),
        ];
        for (name, a, b) in pairs {
            eprintln!("{precision}: {name} {a:.4} -> {b:.4}");
            assert!(
                (a - b).abs() < METRIC_TOLERANCE,
                "{precision}: {name} moved from {a} to {b}"
            );
        }
    }
}

#[test]
fn precision_reads_from_toml_and_the_command_line_spelling() {
    for (text, precision) in [
        ("f32", Precision::F32),
        ("bf16", Precision::Bf16),
        ("F16", Precision::F16),
    ] {
        assert_eq!(text.parse::<Precision>().unwrap(), precision);
    }
    assert!("fp8".parse::<Precision>().unwrap_err().contains("fp8"));
    let mut config = diffad::Config::tiny();
    config.inference.dtype = Precision::Bf16;
    let toml = config.to_toml_string().unwrap();
    assert!(toml.contains("dtype = \"bf16\""), "{toml}");
    let back = diffad::Config::from_toml_str(&toml, "half.toml").unwrap();
    assert_eq!(back.inference.dtype, Precision::Bf16);
    // Configurations written before the setting existed read as f32.
    let old = toml.replace("dtype = \"bf16\"\n", "");
    let old = diffad::Config::from_toml_str(&old, "old.toml").unwrap();
    assert_eq!(old.inference.dtype, Precision::F32);
}
