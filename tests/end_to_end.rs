//! End to end on a tiny generated dataset: a few steps of every stage,
//! evaluation, every output file, resumption, and the CLI's error contract.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use diffad::data::{load_image, load_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::nn::progress::Silent;
use diffad::predict::{predict_paths, PredictOptions};
use diffad::report::{read_tiff, Metrics};
use diffad::thresholds::Thresholds;
use diffad::train::silent;
use diffad::{Config, DiffAd, Error, RunDir, Stage, TrainOptions};

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn trains_every_stage_evaluates_and_writes_every_output() {
    let work = tempfile::tempdir().unwrap();
    let options = DemoDataOptions {
        size: 32,
        train: 6,
        test_good: 2,
        per_defect: 1,
        ..Default::default()
    };
    let class_dir = write_demo_dataset(work.path(), &options).unwrap();
    let class = MvtecClass::open_for_eval(&class_dir).unwrap();
    let config = common::micro_config();
    let run_dir = work.path().join("run");
    let run = RunDir::create(&run_dir, config.clone()).unwrap();
    let images = load_images(&class.train, 32).unwrap();
    let quiet = TrainOptions::default();

    // Training out of order is refused: the LDM needs the VAE.
    let early = diffad::train(
        &run,
        &images,
        &Device::Cpu,
        &TrainOptions {
            stages: vec![Stage::Ldm],
        },
        &mut silent,
    );
    assert!(matches!(
        early,
        Err(Error::MissingCheckpoint {
            stage: Stage::Vae,
            ..
        })
    ));

    let reports = diffad::train(&run, &images, &Device::Cpu, &quiet, &mut silent).unwrap();
    assert_eq!(reports.len(), 3);
    // 6 images, batch 4: 2 steps per epoch, 2 epochs.
    for r in &reports {
        assert!(!r.skipped);
        assert_eq!(r.steps, 4, "{r}");
        assert!(r.final_loss.is_some_and(f64::is_finite), "{r}");
    }
    for stage in Stage::ALL {
        assert!(run.is_done(stage));
        assert!(
            !run.checkpoint(stage).exists(),
            "{stage} checkpoint left behind"
        );
    }
    // Every stage logged the loss of each of its 4 steps.
    for stage in Stage::ALL {
        let log = std::fs::read_to_string(run.loss_log(stage)).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "step,loss", "{stage}");
        assert_eq!(lines.len(), 5, "{stage}: {log}");
        for (k, line) in lines[1..].iter().enumerate() {
            let (step, loss) = line.split_once(',').unwrap();
            assert_eq!(step.parse::<u64>().unwrap(), k as u64 + 1, "{stage}");
            assert!(loss.parse::<f64>().unwrap().is_finite(), "{stage}");
        }
    }
    // A second call finds every stage done.
    let again = diffad::train(&run, &images, &Device::Cpu, &quiet, &mut silent).unwrap();
    assert!(again.iter().all(|r| r.skipped));
    // The run directory refuses another configuration, naming the setting.
    let mut other = config.clone();
    other.ldm.epochs = 3;
    match RunDir::create(&run_dir, other) {
        Err(Error::ConfigMismatch { field, .. }) => assert_eq!(field, "ldm.epochs"),
        e => panic!("expected ConfigMismatch, got {e:?}"),
    }

    let model = DiffAd::load(&RunDir::open(&run_dir).unwrap(), &Device::Cpu).unwrap();
    // Single and batched predictions agree (per-image noise streams).
    let first = load_image(&class.test[0].image, 32).unwrap();
    let second = load_image(&class.test[1].image, 32).unwrap();
    let (map, score) = model.predict(&second).unwrap();
    let batch = model.predict_batch(&[first, second.clone()]).unwrap();
    assert_eq!(batch[1].map, map);
    assert_eq!(batch[1].score, score);
    assert!(map.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
    // `inference.map_sigma` smooths the map (and the image score is taken from
    // the smoothed map); 0 gives the raw segmentation output back.
    let smoothed = DiffAd::load(&RunDir::open(&run_dir).unwrap(), &Device::Cpu)
        .unwrap()
        .with_map_sigma(1.0)
        .unwrap();
    let (smooth_map, smooth_score) = smoothed.predict(&second).unwrap();
    let expected = diffad::metrics::gaussian_smooth(map.view(), 1.0).unwrap();
    assert_eq!(smooth_map.view(), expected.view());
    assert_ne!(smooth_map, map);
    assert_eq!(
        smooth_score,
        diffad::metrics::image_score_view(expected.view(), config.inference.score_kernel).unwrap()
    );
    assert!(smoothed.with_map_sigma(-1.0).is_err());

    let out = work.path().join("eval");
    let result = evaluate(&model, &class, &out, &EvalOptions::default(), &mut Silent).unwrap();
    let m = Metrics::read_json(&out.join("metrics.json")).unwrap();
    assert_eq!(m, result.metrics);
    assert_eq!(m.images, 6);
    // Reconstruction PSNR of the two good test images, in dB.
    let psnr = m.reconstruction_psnr.unwrap();
    assert!(psnr.is_finite() && psnr > 0.0, "{psnr}");
    for v in [
        m.image_auroc,
        m.pixel_auroc.unwrap(),
        m.pixel_ap.unwrap(),
        m.aupro.unwrap(),
        m.pixel_f1_max.unwrap(),
        m.image_f1_max,
    ] {
        assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{m:?}");
    }
    let defects: Vec<&str> = m
        .report
        .as_ref()
        .unwrap()
        .image
        .per_defect
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(defects, vec!["foreign_patch", "hole", "scratch", "stain"]);
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "path,defect,label,score");
    assert_eq!(lines.len(), 7);
    for (sample, line) in class.test.iter().zip(&lines[1..]) {
        let fields: Vec<&str> = line.rsplitn(4, ',').collect();
        assert_eq!(fields[2], sample.defect);
        assert_eq!(fields[1], if sample.is_anomalous() { "1" } else { "0" });
        let tiff = out
            .join("anomaly_maps")
            .join("demo_wood/test")
            .join(&sample.defect)
            .join(format!("{}.tiff", sample.stem()));
        let map = read_tiff(&tiff).unwrap();
        assert_eq!((map.height(), map.width()), (32, 32));
        let png = out
            .join("overlays/demo_wood/test")
            .join(&sample.defect)
            .join(format!("{}.png", sample.stem()));
        // The panel: x_a | x_r | x_inter | map | ground truth.
        assert_eq!(image::image_dimensions(&png).unwrap(), (5 * 32, 32));
    }

    // A test split without `ground_truth/` gives the image-level metrics only.
    let bare = work.path().join("bare").join("demo_wood");
    for sample in &class.test {
        let to = bare.join("test").join(&sample.defect);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(&sample.image, to.join(sample.image.file_name().unwrap())).unwrap();
    }
    let bare_class = MvtecClass::open_for_eval(&bare).unwrap();
    assert!(!bare_class.has_masks() && class.has_masks());
    let bare_out = work.path().join("bare-eval");
    let bare_result = evaluate(
        &model,
        &bare_class,
        &bare_out,
        &EvalOptions::default(),
        &mut Silent,
    )
    .unwrap();
    let b = &bare_result.metrics;
    assert_eq!(b.image_auroc, m.image_auroc);
    assert_eq!(b.image_f1_max, m.image_f1_max);
    assert_eq!((b.pixel_auroc, b.pixel_ap, b.aupro), (None, None, None));
    assert!(b.report.is_none() && b.image_report.is_some());
    assert!(b.to_string().contains("pixel metrics need"), "{b}");
    assert_eq!(
        Metrics::read_json(&bare_out.join("metrics.json")).unwrap(),
        *b
    );

    // Prediction on a folder: recursive, mirrored outputs, raw scores without thresholds.
    let test_dir = class.root.join("test");
    let preds = work.path().join("preds");
    let summary = predict_paths(
        &model,
        None,
        std::slice::from_ref(&test_dir),
        &preds,
        &PredictOptions::default(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.rows.len(), 6);
    assert!(summary.note.is_some() && summary.failures.is_empty());
    for (sample, row) in class.test.iter().zip(&summary.rows) {
        assert_eq!(row.path, sample.image);
        assert_eq!(row.anomalous, None);
        // Same score as a single prediction: batching and streaming change nothing.
        let alone = model
            .predict(&load_image(&sample.image, 32).unwrap())
            .unwrap();
        assert_eq!(row.score, alone.1);
        let base = preds.join("test").join(&sample.defect).join(sample.stem());
        assert!(base.with_extension("tiff").is_file(), "{base:?}");
        let panel = preds
            .join("test")
            .join(&sample.defect)
            .join(format!("{}_panel.png", sample.stem()));
        assert_eq!(image::image_dimensions(&panel).unwrap(), (5 * 32, 32));
    }
    // With stored thresholds: labels, normalised scores and masks; a corrupt
    // input is skipped with --keep-going and stops the run without it.
    let thresholds = Thresholds {
        image: 0.5,
        pixel: 0.5,
        min: 0.0,
        max: 1.0,
    };
    let corrupt = work.path().join("corrupt.png");
    std::fs::write(&corrupt, b"not a png").unwrap();
    let inputs = vec![class.test[0].image.clone(), corrupt.clone()];
    let out2 = work.path().join("preds2");
    let keep = PredictOptions {
        keep_going: true,
        ..PredictOptions::default()
    };
    let summary = predict_paths(
        &model,
        Some(&thresholds),
        &inputs,
        &out2,
        &keep,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.rows.len(), 1);
    assert_eq!(summary.failures.len(), 1);
    assert_eq!(summary.failures[0].0, corrupt);
    let row = &summary.rows[0];
    assert_eq!(row.anomalous, Some(row.score >= 0.5));
    assert_eq!(row.normalised, Some(thresholds.normalise(row.score)));
    let stem = class.test[0].stem();
    assert!(out2.join(format!("{stem}_mask.png")).is_file());
    let csv = std::fs::read_to_string(out2.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(predict_paths(
        &model,
        Some(&thresholds),
        &inputs,
        &work.path().join("preds3"),
        &PredictOptions::default(),
        &mut Silent,
    )
    .is_err());

    let mut all = Vec::new();
    files_under(work.path(), &mut all);
    assert!(
        all.iter().all(|p| p.extension().is_none_or(|e| e != "tmp")),
        "temporary files left: {all:?}"
    );
}

#[test]
fn thresholds_are_set_on_held_out_good_images() {
    let work = tempfile::tempdir().unwrap();
    let options = DemoDataOptions {
        size: 32,
        train: 10,
        test_good: 2,
        per_defect: 1,
        ..Default::default()
    };
    let class_dir = write_demo_dataset(work.path(), &options).unwrap();
    let class = MvtecClass::open_for_eval(&class_dir).unwrap();
    let mut config = common::micro_config();
    config.data.validation_fraction = 0.2;
    config.vae.epochs = 1;
    config.ldm.epochs = 1;
    config.segmenter.epochs = 1;
    // 10 good images: 2 held out (seeded), 8 train in 2 batches of 4.
    let held = diffad::train::validation_indices(&config, 10).unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(
        held,
        diffad::train::validation_indices(&config, 10).unwrap()
    );
    let run = RunDir::create(&work.path().join("run"), config.clone()).unwrap();
    let images = load_images(&class.train, 32).unwrap();
    let reports = diffad::train(
        &run,
        &images,
        &Device::Cpu,
        &TrainOptions::default(),
        &mut silent,
    )
    .unwrap();
    assert!(reports.iter().all(|r| r.steps == 2), "{reports:?}");
    let t = Thresholds::load(run.root())
        .unwrap()
        .expect("thresholds.json");
    assert!((0.0..=1.0).contains(&t.image) && (0.0..=1.0).contains(&t.pixel));
    assert!(t.min <= t.image && t.image <= t.max, "{t:?}");
    assert_eq!(t.normalise(t.image), 0.5);

    let model = DiffAd::load(&run, &Device::Cpu).unwrap();
    let out = work.path().join("eval");
    let options = EvalOptions {
        anomaly_maps: false,
        overlays: false,
        thresholds: Some(t.clone()),
    };
    let result = evaluate(&model, &class, &out, &options, &mut Silent).unwrap();
    let at = result.metrics.at_thresholds.unwrap();
    assert_eq!(at.image.threshold, t.image);
    for v in [
        at.image.precision,
        at.image.recall,
        at.image.f1,
        at.pixel.unwrap().f1,
    ] {
        assert!((0.0..=1.0).contains(&v), "{at:?}");
    }
    // The oracle F1-max is at least the stored threshold's F1.
    assert!(result.metrics.image_f1_max + 1e-9 >= at.image.f1);
    // Too few images for a split is a clear error.
    assert!(diffad::train::validation_indices(&config, 2).is_err());
    config.data.validation_fraction = 0.0;
    assert!(diffad::train::validation_indices(&config, 2)
        .unwrap()
        .is_empty());
}

#[test]
fn cli_reports_bad_input_on_one_line_with_exit_code_2_and_writes_nothing() {
    let bin = env!("CARGO_BIN_EXE_diffad");
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");

    let missing = work.path().join("no-such-folder");
    let out = Command::new(bin)
        .args(["train", "--config", "tiny", "--data"])
        .arg(&missing)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-folder"), "{err}");
    assert!(
        !run.exists(),
        "a failed train must not create the run directory"
    );

    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(bin)
        .args(["-q", "train", "--config", "tiny", "--data"])
        .arg(&empty)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no images"));

    let corrupt = empty.join("broken.png");
    std::fs::write(&corrupt, b"not a png").unwrap();
    let out = Command::new(bin)
        .args(["-q", "train", "--config", "tiny", "--data"])
        .arg(&empty)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.png"));
    assert!(!run.exists());

    let out = Command::new(bin)
        .args(["eval", "--run"])
        .arg(&empty)
        .arg("--data")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a diffad run directory"));

    let bad_config = work.path().join("bad.toml");
    std::fs::write(&bad_config, "seed = 1\n").unwrap();
    let out = Command::new(bin)
        .args(["config"])
        .arg(&bad_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));

    let out = Command::new(bin).args(["config", "tiny"]).output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        Config::from_toml_str(&printed, "stdout").unwrap(),
        Config::tiny()
    );

    for flag in ["--help", "--version"] {
        assert!(Command::new(bin)
            .arg(flag)
            .output()
            .unwrap()
            .status
            .success());
    }
}
