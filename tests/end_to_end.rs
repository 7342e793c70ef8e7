//! End to end on a tiny generated dataset: a few steps of every stage,
//! evaluation, every output file, resumption, and the CLI's error contract.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use diffad::data::{load_image, load_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::nn::progress::Silent;
use diffad::report::{read_tiff, Metrics};
use diffad::train::silent;
use diffad::{Config, DiffAd, Error, RunDir, Stage, TrainOptions};

/// The tiny preset shrunk to 32x32 images and two epochs per stage.
fn micro_config() -> Config {
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
    c
}

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
    let config = micro_config();
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
    let batch = model.predict_batch(&[first, second]).unwrap();
    assert_eq!(batch[1].map, map);
    assert_eq!(batch[1].score, score);
    assert!(map.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));

    let out = work.path().join("eval");
    let result = evaluate(&model, &class, &out, &EvalOptions::default(), &mut Silent).unwrap();
    let m = Metrics::read_json(&out.join("metrics.json")).unwrap();
    assert_eq!(m, result.metrics);
    assert_eq!(m.images, 6);
    for v in [
        m.image_auroc,
        m.pixel_auroc,
        m.pixel_ap,
        m.aupro,
        m.pixel_f1_max,
        m.image_f1_max,
    ] {
        assert!(v.is_finite() && (0.0..=1.0).contains(&v), "{m:?}");
    }
    let defects: Vec<&str> = m
        .report
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
        assert_eq!(image::image_dimensions(&png).unwrap(), (64, 32));
    }
    let mut all = Vec::new();
    files_under(work.path(), &mut all);
    assert!(
        all.iter().all(|p| p.extension().is_none_or(|e| e != "tmp")),
        "temporary files left: {all:?}"
    );
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
