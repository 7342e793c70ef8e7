//! The all-classes benchmark on a two-class demo root: one run per class,
//! `summary.csv` / `summary.md`, resumption, class selection and errors.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use diffad::benchmark::{
    run_benchmark, summary_markdown, BenchmarkOptions, BenchmarkSummary, SUMMARY_CSV, SUMMARY_MD,
};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::report::Metrics;
use diffad::thresholds::Thresholds;
use diffad::train::silent;
use diffad::{Config, Error, RunDir, Stage};

const CLASSES: [&str; 2] = ["wood_a", "wood_b"];

/// Two demo classes under `root` (different seeds), 10 good training
/// images (2 held out for the thresholds) and 6 test images each.
fn write_root(root: &Path) {
    for (k, name) in CLASSES.iter().enumerate() {
        let options = DemoDataOptions {
            class_name: (*name).into(),
            size: 32,
            train: 10,
            test_good: 2,
            per_defect: 1,
            seed: 7 + k as u64,
        };
        write_demo_dataset(root, &options).unwrap();
    }
}

fn options(classes: &[&str]) -> BenchmarkOptions {
    BenchmarkOptions {
        config: Some(micro_config()),
        classes: classes.iter().map(|c| (*c).to_string()).collect(),
        anomaly_maps: false,
        overlays: false,
    }
}

/// The fields of `summary.csv`, line by line, header dropped.
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("class,image_auroc,pixel_auroc,pixel_ap,aupro,train_seconds,eval_seconds")
    );
    lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn number(field: &str) -> f64 {
    field
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {field:?}"))
}

/// Checks `summary.csv` and `summary.md` against `summary`: one row per
/// class in `names`, then a mean row that averages them.
fn check_summary_files(summary: &BenchmarkSummary, names: &[&str]) {
    let rows = read_csv(&summary.summary_csv);
    assert_eq!(rows.len(), names.len() + 1, "{rows:?}");
    for (row, name) in rows.iter().zip(names) {
        assert_eq!(row[0], *name);
    }
    let (classes, mean) = rows.split_at(names.len());
    assert_eq!(mean[0][0], "mean");
    for column in 1..=6 {
        let average =
            classes.iter().map(|r| number(&r[column])).sum::<f64>() / classes.len() as f64;
        // Metrics are written exactly; seconds to the millisecond.
        let tolerance = if column <= 4 { 1e-12 } else { 1.5e-3 };
        let stored = number(&mean[0][column]);
        assert!(
            (stored - average).abs() <= tolerance,
            "column {column}: mean {stored} vs average {average}"
        );
    }
    for (row, outcome) in classes.iter().zip(&summary.classes) {
        let r = &outcome.row;
        assert_eq!(number(&row[1]), r.image_auroc);
        assert_eq!(Some(number(&row[2])), r.pixel_auroc);
        assert_eq!(Some(number(&row[3])), r.pixel_ap);
        assert_eq!(Some(number(&row[4])), r.aupro);
        for v in [
            r.image_auroc,
            number(&row[2]),
            number(&row[3]),
            number(&row[4]),
        ] {
            assert!((0.0..=1.0).contains(&v), "{r:?}");
        }
    }
    let md = std::fs::read_to_string(&summary.summary_md).unwrap();
    assert_eq!(md, summary_markdown(&summary.rows()));
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(
        lines[0],
        "| Class | Image AUROC | Pixel AUROC | Pixel AP | AU-PRO | Train (s) | Eval (s) |"
    );
    assert_eq!(lines.len(), 2 + names.len() + 1, "{md}");
    for (line, outcome) in lines[2..].iter().zip(&summary.classes) {
        assert!(
            line.starts_with(&format!("| {} |", outcome.row.name)),
            "{md}"
        );
        let image = format!(" {:.1} |", 100.0 * outcome.row.image_auroc);
        assert!(line.contains(&image), "{line} lacks{image}");
    }
    assert!(lines[lines.len() - 1].starts_with("| **Mean** |"), "{md}");
    for file in [SUMMARY_CSV, SUMMARY_MD] {
        let dir = summary.summary_csv.parent().unwrap();
        assert!(!dir.join(format!("{file}.tmp")).exists());
    }
}

/// The shared micro configuration, holding 2 of 10 good images out for the thresholds.
fn micro_config() -> Config {
    let mut c = common::micro_config();
    c.data.validation_fraction = 0.2;
    c
}

#[test]
fn benchmarks_every_class_resumes_and_names_bad_classes() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("mvtec");
    write_root(&root);
    let runs = work.path().join("runs");

    let first = run_benchmark(&root, &runs, &options(&[]), &Device::Cpu, &mut silent).unwrap();
    assert_eq!(first.classes.len(), 2);
    for (outcome, name) in first.classes.iter().zip(CLASSES) {
        assert_eq!(outcome.run, runs.join(name));
        assert!(outcome.stages.iter().all(|s| !s.skipped && s.steps > 0));
        let run = RunDir::open(&outcome.run).unwrap();
        assert_eq!(run.config(), &micro_config());
        assert!(Stage::ALL.iter().all(|&s| run.is_done(s)));
        // Evaluated with the run's stored thresholds, into `<run>/eval`.
        assert!(Thresholds::load(run.root()).unwrap().is_some());
        let metrics = Metrics::read_json(&run.root().join("eval/metrics.json")).unwrap();
        assert_eq!(metrics, outcome.eval.metrics);
        assert_eq!(metrics.class, name);
        assert_eq!(metrics.images, 6);
        assert!(metrics.at_thresholds.is_some());
        assert_eq!(metrics.image_auroc, outcome.row.image_auroc);
    }
    assert_eq!(first.summary_csv, runs.join(SUMMARY_CSV));
    check_summary_files(&first, &CLASSES);

    // Again: nothing trains, the metrics are the same.
    let loss_log = runs.join("wood_a").join("seg").join("loss.csv");
    let losses = std::fs::read_to_string(&loss_log).unwrap();
    let again = run_benchmark(&root, &runs, &options(&[]), &Device::Cpu, &mut silent).unwrap();
    assert_eq!(std::fs::read_to_string(&loss_log).unwrap(), losses);
    for (new, old) in again.classes.iter().zip(&first.classes) {
        assert!(new.stages.iter().all(|s| s.skipped), "{:?}", new.stages);
        assert!(new.row.train_seconds < old.row.train_seconds);
        assert_eq!(new.eval.metrics, old.eval.metrics);
        assert_eq!(
            (
                new.row.image_auroc,
                new.row.pixel_auroc,
                new.row.pixel_ap,
                new.row.aupro
            ),
            (
                old.row.image_auroc,
                old.row.pixel_auroc,
                old.row.pixel_ap,
                old.row.aupro
            )
        );
    }
    check_summary_files(&again, &CLASSES);

    // One class by name, with the saved configuration (no `config`).
    let only_b = BenchmarkOptions {
        config: None,
        ..options(&["wood_b", "wood_b"])
    };
    let b = run_benchmark(&root, &runs, &only_b, &Device::Cpu, &mut silent).unwrap();
    assert_eq!(b.classes.len(), 1);
    assert_eq!(b.classes[0].eval.metrics, first.classes[1].eval.metrics);
    check_summary_files(&b, &["wood_b"]);

    // An unknown name is an error naming it, before anything runs.
    let err = run_benchmark(
        &root,
        &runs,
        &options(&["wood_a", "no_such_class"]),
        &Device::Cpu,
        &mut silent,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Layout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("no_such_class"), "{message}");
    assert!(message.contains("wood_a, wood_b"), "{message}");

    // A class that fails stops the run with an error naming it: here a
    // configuration that differs from its existing run, found before training.
    let mut other = micro_config();
    other.ldm.epochs = 3;
    let changed = BenchmarkOptions {
        config: Some(other),
        ..options(&[])
    };
    match run_benchmark(&root, &runs, &changed, &Device::Cpu, &mut silent) {
        Err(Error::Class { class, source, .. }) => {
            assert_eq!(class, "wood_a");
            assert!(
                matches!(*source, Error::ConfigMismatch { ref field, .. } if field == "ldm.epochs"),
                "{source:?}"
            );
        }
        other => panic!("expected a class error, got {other:?}"),
    }

    // The CLI says the same on one line, with exit code 2.
    let out = Command::new(env!("CARGO_BIN_EXE_diffad"))
        .args(["-q", "benchmark", "--config", "tiny", "--classes", "nope"])
        .arg("--data")
        .arg(&root)
        .arg("--out")
        .arg(work.path().join("runs2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope"), "{err}");
    assert!(!work.path().join("runs2").exists());
}
