//! The per-stage diagnosis (`diffad::diagnose`) on a micro run: every number
//! finite, `diagnosis.json` round-trips, the CLI writes it; and the
//! invariants of its PSNR diagnostics on arrays.

mod common;

use std::process::Command;

use candle_core::Device;
use diffad::data::{load_images, MvtecClass, RgbImage};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::diagnose::{
    diagnose, psnr_full, psnr_inside, psnr_outside, DiagnoseOptions, Diagnosis, SegScores,
    DIAGNOSIS_FILE, PSNR_CAP_DB,
};
use diffad::train::silent;
use diffad::{Config, DiffAd, RunDir, TrainOptions};

fn assert_scores(what: &str, s: &SegScores) {
    for v in [s.pixel_auroc, s.pixel_ap, s.image_auroc] {
        assert!((0.0..=1.0).contains(&v), "{what}: {s:?}");
    }
}

#[test]
fn diagnoses_a_micro_run_and_the_cli_writes_diagnosis_json() {
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
    let run_dir = work.path().join("run");
    let run = RunDir::create(&run_dir, common::micro_config()).unwrap();
    let images = load_images(&class.train, 32).unwrap();
    diffad::train(
        &run,
        &images,
        &Device::Cpu,
        &TrainOptions::default(),
        &mut silent,
    )
    .unwrap();
    let model = DiffAd::load(&run, &Device::Cpu).unwrap();

    let options = DiagnoseOptions {
        synthetic: 3,
        max_train: 4,
    };
    let d = diagnose(&model, &class, &options).unwrap();
    assert_eq!(d.class, class.name);
    assert_eq!(d.vae.test_good_images, 2);
    assert_eq!(d.vae.train_images, 4);
    assert_eq!(d.ldm.synthetic_images, 3);
    let l = &d.ldm;
    for (what, v) in [
        ("vae test", d.vae.test_good_psnr),
        ("vae train", d.vae.train_psnr.unwrap()),
        ("ldm good", l.good_psnr),
        ("anomaly", l.anomaly_inside_psnr),
        ("removed", l.removed_inside_psnr),
        ("kept", l.kept_outside_psnr),
        ("copied", l.copied_inside_psnr),
        ("real copied", l.real_copied_inside_psnr.unwrap()),
        ("real outside", l.real_outside_psnr.unwrap()),
    ] {
        assert!(v.is_finite() && v > 0.0 && v <= PSNR_CAP_DB, "{what}: {v}");
    }
    assert_scores("synthetic", &d.segmenter.synthetic);
    assert_scores("real", d.segmenter.real.as_ref().unwrap());
    // One row per defect kind of the demo set, each with its one image.
    let kinds: Vec<String> = class
        .defects()
        .into_iter()
        .filter(|k| k != "good")
        .collect();
    assert_eq!(
        d.real_defects
            .iter()
            .map(|r| r.defect.clone())
            .collect::<Vec<_>>(),
        kinds
    );
    for r in &d.real_defects {
        assert_eq!(r.images, 1, "{r:?}");
        assert_scores(&r.defect, &r.scores);
    }
    // Seeded per image: a second diagnosis is identical.
    assert_eq!(diagnose(&model, &class, &options).unwrap(), d);
    let table = d.to_string();
    assert!(
        table.contains("copied") && table.contains("segmenter"),
        "{table}"
    );

    // JSON round trip.
    let path = work.path().join("d").join(DIAGNOSIS_FILE);
    d.write_json(&path).unwrap();
    assert_eq!(Diagnosis::read_json(&path).unwrap(), d);

    // The CLI writes `<run>/diagnosis/diagnosis.json` and prints the table.
    let out = Command::new(env!("CARGO_BIN_EXE_diffad"))
        .args([
            "-q",
            "diagnose",
            "--synthetic",
            "3",
            "--max-train",
            "4",
            "--run",
        ])
        .arg(&run_dir)
        .arg("--data")
        .arg(&class_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PSNR"), "{stdout}");
    let written = Diagnosis::read_json(&run_dir.join("diagnosis").join(DIAGNOSIS_FILE)).unwrap();
    assert_eq!(written, d);
}

#[test]
fn a_reconstructor_that_copies_its_input_scores_the_cap_and_removes_nothing() {
    let config = Config::tiny();
    let size = config.data.image_size;
    let values = (0..size * size * 3)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let x = RgbImage::from_hwc(size, size, values).unwrap();
    let synth = config.validation_synthesizer().unwrap();
    let mut checked = 0;
    for i in 0..4u64 {
        let s = synth.synthesize_indexed(&x, None, 0, i).unwrap();
        // The identity "reconstruction" x_r = x_a.
        let x_r = s.augmented.clone();
        let Some(copied) = psnr_inside(&s.augmented, &x_r, &s.mask).unwrap() else {
            continue;
        };
        assert_eq!(copied, PSNR_CAP_DB, "sample {i}: direct copy");
        // It removed nothing: x_r against x inside M is the defect itself.
        assert_eq!(
            psnr_inside(&x_r, &s.normal, &s.mask).unwrap(),
            psnr_inside(&s.augmented, &s.normal, &s.mask).unwrap()
        );
        assert!(psnr_inside(&x_r, &s.normal, &s.mask).unwrap().unwrap() < PSNR_CAP_DB);
        // And kept every normal pixel.
        if let Some(kept) = psnr_outside(&x_r, &s.normal, &s.mask).unwrap() {
            assert_eq!(kept, PSNR_CAP_DB, "sample {i}: outside M");
        }
        checked += 1;
    }
    assert!(checked > 0, "no synthetic anomaly drawn");
    assert_eq!(psnr_full(&x, &x).unwrap(), PSNR_CAP_DB);
}
