//! Every class of an MVTec AD root at once: train each class into its own
//! run directory (resuming what is done), evaluate it on its test split, and
//! summarise the headline metrics per class and on average, as the paper's
//! Table 2 (image and pixel AUROC) and Table 3 (pixel AP) report them.
//!
//! ```text
//! <runs>/<class>/...          one run directory per class (see `crate::run_dir`)
//! <runs>/<class>/eval/...     its evaluation (see `crate::eval`), with the run's thresholds
//! <runs>/summary.csv          class,image_auroc,pixel_auroc,pixel_ap,aupro,train_seconds,eval_seconds
//! <runs>/summary.md           the same as a Markdown table, metrics in percent
//! ```
//!
//! A class whose run has every stage (and its thresholds) is not trained
//! again, so an interrupted benchmark resumes where it stopped; evaluation
//! always runs, so the summary reflects the current code. The times are the
//! wall seconds of this call: training includes loading the images, and is
//! near zero for a finished run; evaluation includes loading the model.
//!
//! In `summary.csv` the metrics are fractions in `[0, 1]` and an empty field
//! is a metric that could not be computed (pixel metrics need ground-truth
//! masks); `summary.md` shows percentages with one decimal and `-` there. The
//! `mean` row averages the classes; a metric missing for any class has no
//! mean, so the mean stays comparable with the paper's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::config::Config;
use crate::data::{load_images, open_classes, MvtecClass};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalOptions, EvalOutput};
use crate::io::write_atomic;
use crate::model::DiffAd;
use crate::run_dir::{RunDir, CONFIG_FILE};
use crate::stage::Stage;
use crate::thresholds::{Thresholds, THRESHOLDS_FILE};
use crate::train::{train, ProgressFactory, StageReport, TrainOptions};

/// The file name of the CSV summary in the runs folder.
pub const SUMMARY_CSV: &str = "summary.csv";
/// The file name of the Markdown summary in the runs folder.
pub const SUMMARY_MD: &str = "summary.md";
/// The name of the folder, inside each class's run directory, that receives
/// its evaluation.
pub const EVAL_DIR: &str = "eval";

/// What [`run_benchmark`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkOptions {
    /// The configuration of every class. `None`: a class's saved
    /// configuration when its run exists, else [`Config::paper`]. A run made
    /// with another configuration is [`Error::ConfigMismatch`].
    pub config: Option<Config>,
    /// The classes to run, by folder name, in this order (duplicates
    /// ignored); empty = every class under the root, sorted by name.
    pub classes: Vec<String>,
    /// Write the float32 TIFF maps of every class.
    pub anomaly_maps: bool,
    /// Write the PNG panels of every class.
    pub overlays: bool,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        Self {
            config: None,
            classes: Vec::new(),
            anomaly_maps: true,
            overlays: true,
        }
    }
}

/// One row of the summary: a class, or the mean over the classes.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// The class name (`mean` for the mean row).
    pub name: String,
    /// Image-level AUROC.
    pub image_auroc: f64,
    /// Pixel-level AUROC; `None` without ground-truth masks.
    pub pixel_auroc: Option<f64>,
    /// Pixel-level average precision; `None` without ground-truth masks.
    pub pixel_ap: Option<f64>,
    /// AU-PRO up to FPR 0.3; `None` without ground-truth masks.
    pub aupro: Option<f64>,
    /// Wall seconds of training in this call (loading the images included).
    pub train_seconds: f64,
    /// Wall seconds of evaluation (loading the model included).
    pub eval_seconds: f64,
}

impl SummaryRow {
    /// The mean of `rows`, named `mean`: each pixel metric only when every
    /// row has it. `None` for no rows.
    pub fn mean(rows: &[SummaryRow]) -> Option<SummaryRow> {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len() as f64;
        let average = |value: fn(&SummaryRow) -> f64| rows.iter().map(value).sum::<f64>() / n;
        let average_all = |value: fn(&SummaryRow) -> Option<f64>| {
            rows.iter()
                .map(value)
                .sum::<Option<f64>>()
                .map(|sum| sum / n)
        };
        Some(SummaryRow {
            name: "mean".into(),
            image_auroc: average(|r| r.image_auroc),
            pixel_auroc: average_all(|r| r.pixel_auroc),
            pixel_ap: average_all(|r| r.pixel_ap),
            aupro: average_all(|r| r.aupro),
            train_seconds: average(|r| r.train_seconds),
            eval_seconds: average(|r| r.eval_seconds),
        })
    }
}

/// What [`run_benchmark`] did for one class.
#[derive(Clone, Debug)]
pub struct ClassOutcome {
    /// Its summary row.
    pub row: SummaryRow,
    /// Its run directory (`<runs>/<class>`).
    pub run: PathBuf,
    /// What each stage did (all skipped for a finished run).
    pub stages: Vec<StageReport>,
    /// Its evaluation (`<runs>/<class>/eval`).
    pub eval: EvalOutput,
}

/// What [`run_benchmark`] returns.
#[derive(Clone, Debug)]
pub struct BenchmarkSummary {
    /// One entry per class, in the order they ran.
    pub classes: Vec<ClassOutcome>,
    /// The mean over the classes.
    pub mean: SummaryRow,
    /// `<runs>/summary.csv`.
    pub summary_csv: PathBuf,
    /// `<runs>/summary.md`.
    pub summary_md: PathBuf,
}

impl BenchmarkSummary {
    /// The rows of the classes, then the mean.
    pub fn rows(&self) -> Vec<SummaryRow> {
        self.classes
            .iter()
            .map(|c| c.row.clone())
            .chain(std::iter::once(self.mean.clone()))
            .collect()
    }
}

/// Trains and evaluates every selected class under `root` (an MVTec AD root,
/// or one class folder) into `<out>/<class>`, then writes `<out>/summary.csv`
/// and `<out>/summary.md` (see the module documentation).
///
/// Before anything is trained, every selected class must exist (an unknown
/// name is [`Error::Layout`] on `root` naming it), hold training and test
/// images, and match its existing run's configuration, so a mistake in the
/// last class does not wait for the first to train. A class that fails stops
/// the benchmark with [`Error::Class`] naming it. `progress` makes the
/// reporter of each task, labelled `<class> <task>` (`bottle vae`, ...,
/// `bottle eval`).
pub fn run_benchmark(
    root: &Path,
    out: &Path,
    options: &BenchmarkOptions,
    device: &Device,
    progress: &mut ProgressFactory,
) -> Result<BenchmarkSummary> {
    let classes = select_classes(open_classes(root)?, &options.classes, root)?;
    for class in &classes {
        preflight(class, &out.join(&class.name), options.config.as_ref())
            .map_err(|e| in_class(class, e))?;
    }
    let mut outcomes = Vec::with_capacity(classes.len());
    for class in &classes {
        let outcome = run_class(class, &out.join(&class.name), options, device, progress)
            .map_err(|e| in_class(class, e))?;
        outcomes.push(outcome);
    }
    let rows: Vec<SummaryRow> = outcomes.iter().map(|c| c.row.clone()).collect();
    let mean = SummaryRow::mean(&rows).ok_or_else(|| Error::Layout {
        path: root.to_path_buf(),
        reason: "no classes to benchmark".into(),
    })?;
    let summary = BenchmarkSummary {
        classes: outcomes,
        mean,
        summary_csv: out.join(SUMMARY_CSV),
        summary_md: out.join(SUMMARY_MD),
    };
    let rows = summary.rows();
    write_atomic(&summary.summary_csv, summary_csv(&rows).as_bytes())?;
    write_atomic(&summary.summary_md, summary_markdown(&rows).as_bytes())?;
    Ok(summary)
}

/// `summary.csv`: a header, then one line per row; metrics as fractions
/// (shortest round-trip form), empty when missing; seconds to the
/// millisecond.
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut text =
        String::from("class,image_auroc,pixel_auroc,pixel_ap,aupro,train_seconds,eval_seconds\n");
    let field = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            text,
            "{},{},{},{},{},{:.3},{:.3}",
            csv_field(&r.name),
            r.image_auroc,
            field(r.pixel_auroc),
            field(r.pixel_ap),
            field(r.aupro),
            r.train_seconds,
            r.eval_seconds
        );
    }
    text
}

/// `summary.md`: a Markdown table with one line per row, metrics in percent
/// with one decimal (`-` when missing), seconds with one decimal; a row named
/// `mean` is shown as **Mean**.
pub fn summary_markdown(rows: &[SummaryRow]) -> String {
    let mut text = String::from(
        "| Class | Image AUROC | Pixel AUROC | Pixel AP | AU-PRO | Train (s) | Eval (s) |\n\
         |:--|--:|--:|--:|--:|--:|--:|\n",
    );
    let percent =
        |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}", 100.0 * v));
    for r in rows {
        let name = if r.name == "mean" {
            "**Mean**".to_owned()
        } else {
            r.name.replace('|', "\\|")
        };
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {:.1} | {:.1} |",
            percent(Some(r.image_auroc)),
            percent(r.pixel_auroc),
            percent(r.pixel_ap),
            percent(r.aupro),
            r.train_seconds,
            r.eval_seconds
        );
    }
    text
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn in_class(class: &MvtecClass, source: Error) -> Error {
    Error::Class {
        class: class.name.clone(),
        path: class.root.clone(),
        source: Box::new(source),
    }
}

/// The classes named in `wanted` (in that order, duplicates dropped), or all
/// of them when `wanted` is empty; unknown names are an error naming them.
fn select_classes(all: Vec<MvtecClass>, wanted: &[String], root: &Path) -> Result<Vec<MvtecClass>> {
    if wanted.is_empty() {
        return Ok(all);
    }
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| !all.iter().any(|c| &c.name == *w))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let found: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::Layout {
            path: root.to_path_buf(),
            reason: format!(
                "no class folder named {} (classes here: {})",
                unknown.join(", "),
                found.join(", ")
            ),
        });
    }
    let mut selected: Vec<MvtecClass> = Vec::with_capacity(wanted.len());
    for name in wanted {
        if !selected.iter().any(|c| &c.name == name) {
            if let Some(class) = all.iter().find(|c| &c.name == name) {
                selected.push(class.clone());
            }
        }
    }
    Ok(selected)
}

/// Checks what can be checked before training: training and test images,
/// and the configuration of an existing run.
fn preflight(class: &MvtecClass, run_root: &Path, config: Option<&Config>) -> Result<()> {
    if class.train.is_empty() {
        return Err(Error::Layout {
            path: class.root.clone(),
            reason: "no `train/good` images to train on".into(),
        });
    }
    if class.test.is_empty() {
        return Err(Error::Layout {
            path: class.root.clone(),
            reason: "no `test/<defect>` images to evaluate on".into(),
        });
    }
    if run_root.join(CONFIG_FILE).is_file() {
        open_run(run_root, config)?;
    }
    Ok(())
}

/// Reopens (or, when `run_root` holds no run yet, creates) the class's run
/// directory with `config`, or with the saved configuration when `config`
/// is `None` (else [`Config::paper`]).
fn open_run(run_root: &Path, config: Option<&Config>) -> Result<RunDir> {
    match config {
        Some(config) => RunDir::create(run_root, config.clone()),
        None if run_root.join(CONFIG_FILE).is_file() => RunDir::open(run_root),
        None => RunDir::create(run_root, Config::paper()),
    }
}

/// Whether `train` would do nothing: every stage is done and the thresholds
/// are stored (or none are asked for).
fn is_finished(run: &RunDir) -> bool {
    Stage::ALL.iter().all(|&s| run.is_done(s))
        && (run.config().data.validation_fraction <= 0.0
            || run.root().join(THRESHOLDS_FILE).is_file())
}

fn run_class(
    class: &MvtecClass,
    run_root: &Path,
    options: &BenchmarkOptions,
    device: &Device,
    progress: &mut ProgressFactory,
) -> Result<ClassOutcome> {
    let mut labelled = |task: &str| progress(&format!("{} {task}", class.name));

    let start = Instant::now();
    let existing = run_root.join(CONFIG_FILE).is_file();
    let finished = if existing {
        Some(open_run(run_root, options.config.as_ref())?).filter(is_finished)
    } else {
        None
    };
    let (run, stages) = match finished {
        Some(run) => {
            let skipped = Stage::ALL
                .iter()
                .map(|&stage| StageReport {
                    stage,
                    skipped: true,
                    steps: 0,
                    final_loss: None,
                    seconds: 0.0,
                })
                .collect();
            (run, skipped)
        }
        None => {
            // The images load before a new run directory is made, so a
            // class with an unreadable image leaves nothing behind.
            let size = match (&options.config, existing) {
                (Some(config), _) => config.data.image_size,
                (None, true) => {
                    Config::from_file(&run_root.join(CONFIG_FILE))?
                        .data
                        .image_size
                }
                (None, false) => Config::paper().data.image_size,
            };
            let images = load_images(&class.train, size)?;
            let run = open_run(run_root, options.config.as_ref())?;
            let stages = train(
                &run,
                &images,
                device,
                &TrainOptions::default(),
                &mut labelled,
            )?;
            (run, stages)
        }
    };
    let train_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let model = DiffAd::load(&run, device)?;
    let eval_options = EvalOptions {
        anomaly_maps: options.anomaly_maps,
        overlays: options.overlays,
        thresholds: Thresholds::load(run.root())?,
    };
    let mut reporter = labelled("eval");
    let eval = evaluate(
        &model,
        class,
        &run.root().join(EVAL_DIR),
        &eval_options,
        reporter.as_mut(),
    )?;
    let eval_seconds = start.elapsed().as_secs_f64();

    let m = &eval.metrics;
    let row = SummaryRow {
        name: class.name.clone(),
        image_auroc: m.image_auroc,
        pixel_auroc: m.pixel_auroc,
        pixel_ap: m.pixel_ap,
        aupro: m.aupro,
        train_seconds,
        eval_seconds,
    };
    Ok(ClassOutcome {
        row,
        run: run.root().to_path_buf(),
        stages,
        eval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, image: f64, pixel: Option<f64>, seconds: f64) -> SummaryRow {
        SummaryRow {
            name: name.into(),
            image_auroc: image,
            pixel_auroc: pixel,
            pixel_ap: pixel.map(|p| p / 2.0),
            aupro: Some(0.5),
            train_seconds: seconds,
            eval_seconds: seconds / 10.0,
        }
    }

    #[test]
    fn mean_averages_and_drops_a_metric_missing_anywhere() {
        let both = [
            row("a", 0.9, Some(0.8), 10.0),
            row("b", 0.7, Some(0.6), 30.0),
        ];
        let mean = SummaryRow::mean(&both).unwrap();
        assert_eq!(mean.name, "mean");
        assert!((mean.image_auroc - 0.8).abs() < 1e-12);
        assert!((mean.pixel_auroc.unwrap() - 0.7).abs() < 1e-12);
        assert!((mean.pixel_ap.unwrap() - 0.35).abs() < 1e-12);
        assert_eq!(mean.aupro, Some(0.5));
        assert!((mean.train_seconds - 20.0).abs() < 1e-12);
        assert!((mean.eval_seconds - 2.0).abs() < 1e-12);
        let one_without = [row("a", 0.9, Some(0.8), 1.0), row("b", 0.7, None, 1.0)];
        let mean = SummaryRow::mean(&one_without).unwrap();
        assert_eq!((mean.pixel_auroc, mean.pixel_ap), (None, None));
        assert_eq!(mean.aupro, Some(0.5));
        assert!(SummaryRow::mean(&[]).is_none());
    }

    #[test]
    fn csv_and_markdown_layouts() {
        let rows = [
            row("bottle", 0.987, Some(0.984), 12.3456),
            row("a,b|c", 0.999, None, 0.0),
        ];
        let csv = summary_csv(&rows);
        assert_eq!(
            csv,
            "class,image_auroc,pixel_auroc,pixel_ap,aupro,train_seconds,eval_seconds\n\
             bottle,0.987,0.984,0.492,0.5,12.346,1.235\n\
             \"a,b|c\",0.999,,,0.5,0.000,0.000\n"
        );
        let mut with_mean = rows.to_vec();
        with_mean.push(SummaryRow::mean(&rows).unwrap());
        let md = summary_markdown(&with_mean);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| Class | Image AUROC | Pixel AUROC | Pixel AP | AU-PRO | Train (s) | Eval (s) |"
        );
        assert_eq!(
            lines[2],
            "| bottle | 98.7 | 98.4 | 49.2 | 50.0 | 12.3 | 1.2 |"
        );
        assert_eq!(lines[3], "| a,b\\|c | 99.9 | - | - | 50.0 | 0.0 | 0.0 |");
        assert_eq!(lines[4], "| **Mean** | 99.3 | - | - | 50.0 | 6.2 | 0.6 |");
        assert_eq!(lines.len(), 5);
    }
}
