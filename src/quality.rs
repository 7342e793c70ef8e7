//! The quality report on real photographs, `docs/quality.md`, regenerated
//! from scratch (`diffad quality`, issue 15): the real-photograph benchmark
//! ([`crate::photo_data`]) with one configuration (the `cpu` preset,
//! [`Config::cpu`]) beside the raw-pixel baseline ([`crate::baseline`]), and
//! the per-stage diagnosis of every run ([`crate::diagnose`]).
//!
//! ```text
//! <photos>/<class>/...                 the benchmark (written for the classes it lacks)
//! <runs>/baseline/<class>/metrics.json the baseline (+ scores.csv, settings.json)
//! <runs>/<class>/...                   one run per class, as `diffad benchmark` trains it
//! <runs>/<class>/eval/...              its evaluation (see `crate::benchmark`)
//! <runs>/<class>/diagnosis/diagnosis.json
//! <runs>/summary.{csv,md}              the benchmark's own summary
//! <runs>/seed-<s>/<class>/...          the extra seeds' runs, only with `seeds` > 1
//! <runs>/table1/<row>/<class>/...      the Table 1 rows, only with `table1`
//! <doc>                                the Markdown report
//! ```
//!
//! Everything resumes: a class already in `<photos>` is not written again, a
//! baseline whose `metrics.json` was made with the same settings is read back,
//! and a finished run is not trained again ([`crate::benchmark`]); evaluation
//! and diagnosis always run, so the report reflects the current code. The
//! training time of a class is therefore not this call's wall time but the
//! sum of the stage times its run logged while training (`train.log`, the
//! `<stage>: done: ... <seconds> s` lines; [`stage_seconds_from_log`]).
//!
//! The report's criterion is issue 15's: the configuration beats the
//! baseline on pixel AP and on AU-PRO on every class, on image AUROC on
//! average, and trains every class in at most [`TRAIN_BUDGET_SECONDS`].
//! With several seeds (`seeds`) it is judged twice: on the first seed's runs
//! and on each class's mean over the seeds.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::baseline::{evaluate_baseline, PatchKnnConfig};
use crate::benchmark::{run_benchmark, BenchmarkOptions, ClassOutcome, SummaryRow};
use crate::config::{Config, Table1Row};
use crate::data::{MvtecClass, GOOD};
use crate::diagnose::{diagnose, DiagnoseOptions, Diagnosis, SegScores, DIAGNOSIS_FILE};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalOptions};
use crate::io::write_atomic;
use crate::model::DiffAd;
use crate::photo_data::{photo_class, write_photo_dataset, PhotoDataOptions};
use crate::report::Metrics;
use crate::run_dir::RunDir;
use crate::stage::Stage;
use crate::train::ProgressFactory;
use diffad_nn::progress::Silent;

/// Issue 15's training budget per class: 15 minutes.
pub const TRAIN_BUDGET_SECONDS: f64 = 900.0;

/// The folder of `<runs>` that receives the baselines.
pub const BASELINE_DIR: &str = "baseline";
/// The folder of `<runs>` that receives the Table 1 rows.
pub const TABLE1_DIR: &str = "table1";
/// The prefix of the runs folders of the extra seeds, `<runs>/seed-<s>`.
pub const SEED_DIR_PREFIX: &str = "seed-";
/// The folder of a class's run that receives its diagnosis.
pub const DIAGNOSIS_DIR: &str = "diagnosis";

/// Where a run's evaluation on the raw (unsmoothed) map goes, for the
/// ablation of `inference.map_sigma`.
pub const UNSMOOTHED_DIR: &str = "eval_map_sigma_0";
/// The settings a baseline's `metrics.json` was made with, beside it.
pub const BASELINE_SETTINGS_FILE: &str = "settings.json";

/// The rows of the paper's Table 1 that differ only in the reconstruction
/// (group (i)): forward-reverse, clean condition, noisy condition, each with
/// the segmenter on concat(x_a, x_r).
pub const TABLE1_RECONSTRUCTION_ROWS: [Table1Row; 3] = [
    Table1Row::ForwardReverse,
    Table1Row::CleanCondition,
    Table1Row::NoInterpolation,
];

/// What [`regenerate_quality`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityOptions {
    /// The real-photograph benchmark's folder (`--photos`).
    pub photos_dir: PathBuf,
    /// The runs folder (`--runs`).
    pub runs: PathBuf,
    /// The Markdown file to write (`--doc`).
    pub doc: PathBuf,
    /// The classes measured (`classes`, in this order) and how the missing
    /// ones are written (size, seed, crops per split).
    pub photos: PhotoDataOptions,
    /// The configuration every class is trained with.
    pub config: Config,
    /// Its name in the report (`cpu`, or the file given).
    pub config_name: String,
    /// Train and tabulate the Table 1 reconstruction rows on this class (one
    /// of `photos.classes`).
    pub table1: Option<String>,
    /// The command line shown in the report's header.
    pub command: String,
    /// The baseline's settings.
    pub baseline: PatchKnnConfig,
    /// How much each diagnosis measures.
    pub diagnose: DiagnoseOptions,
    /// Write the float32 TIFF maps of every evaluation.
    pub anomaly_maps: bool,
    /// Write the PNG panels of every evaluation.
    pub overlays: bool,
    /// Training seeds per class (`--seeds`, at least 1): the configuration's
    /// `seed`, then `seed + 1`, ... The extra runs go to
    /// `<runs>/seed-<s>/<class>` and are evaluated only (no maps, panels or
    /// diagnosis); the criterion is then also judged on the mean over seeds.
    pub seeds: usize,
}

impl QualityOptions {
    /// The defaults of `diffad quality --photos <photos_dir> --runs <runs>
    /// --doc <doc>`: all six classes at 64x64 (seed 2023), the `cpu` preset,
    /// no Table 1, maps and panels written as `diffad benchmark` writes them.
    pub fn new(photos_dir: &Path, runs: &Path, doc: &Path) -> Self {
        Self {
            photos_dir: photos_dir.to_path_buf(),
            runs: runs.to_path_buf(),
            doc: doc.to_path_buf(),
            photos: PhotoDataOptions::default(),
            config: Config::cpu(),
            config_name: "cpu".into(),
            table1: None,
            command: format!(
                "diffad quality --photos {} --runs {} --doc {}",
                photos_dir.display(),
                runs.display(),
                doc.display()
            ),
            baseline: PatchKnnConfig::default(),
            diagnose: DiagnoseOptions::default(),
            anomaly_maps: true,
            overlays: true,
            seeds: 1,
        }
    }
}

/// The machine the report was made on.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Threads available to the process (`std::thread::available_parallelism`).
    pub cores: usize,
    /// The CPU model (`model name` of `/proc/cpuinfo`), when readable.
    pub cpu: Option<String>,
    /// The 1-minute load average when the report started (`/proc/loadavg`),
    /// when readable: other work on the machine slows training.
    pub load_average: Option<f64>,
}

impl Machine {
    /// The machine this process runs on.
    pub fn detect() -> Self {
        let cpu = fs::read_to_string("/proc/cpuinfo").ok().and_then(|text| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(key, _)| key.trim() == "model name")
                .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "))
        });
        let load_average = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()));
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            load_average,
        }
    }
}

/// The training time of one run, stage by stage.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTime {
    /// Seconds per stage: the run's `train.log` when it records the stage,
    /// else the time this call spent on it.
    pub stages: Vec<(Stage, f64)>,
    /// Their sum.
    pub total: f64,
}

impl TrainTime {
    fn of(outcome: &ClassOutcome) -> Result<Self> {
        let log = outcome.run.join("train.log");
        let logged = if log.is_file() {
            stage_seconds_from_log(&fs::read_to_string(&log).map_err(|e| Error::io(&log, e))?)
        } else {
            BTreeMap::new()
        };
        let stages: Vec<(Stage, f64)> = Stage::ALL
            .iter()
            .map(|&stage| {
                let now = outcome
                    .stages
                    .iter()
                    .find(|r| r.stage == stage)
                    .map_or(0.0, |r| r.seconds);
                (stage, logged.get(&stage).copied().unwrap_or(now))
            })
            .collect();
        Ok(Self {
            total: stages.iter().map(|(_, s)| s).sum(),
            stages,
        })
    }
}

/// Seconds per stage recorded in a run's `train.log`: the lines
/// `<unix time> <stage>: done: <stage> <N> steps <seconds> s ...` that
/// [`crate::train()`] writes when a stage finishes (the last one of a stage,
/// if it was trained more than once). A stage interrupted and resumed
/// records only the time of its last session.
pub fn stage_seconds_from_log(log: &str) -> BTreeMap<Stage, f64> {
    let mut seconds = BTreeMap::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(&"done:")) = (words.get(1), words.get(2)) else {
            continue;
        };
        let Some(stage) = Stage::ALL
            .into_iter()
            .find(|s| name.strip_suffix(':') == Some(s.name()))
        else {
            continue;
        };
        let value = words
            .iter()
            .position(|w| *w == "steps")
            .filter(|&i| words.get(i + 2) == Some(&"s"))
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            seconds.insert(stage, value);
        }
    }
    seconds
}

/// One class of the report.
#[derive(Clone, Debug)]
pub struct ClassQuality {
    /// The class name.
    pub name: String,
    /// The photograph it comes from (for the benchmark's own classes).
    pub source: Option<&'static str>,
    /// Side of its images on disk.
    pub image_size: usize,
    /// Good training images (`train/good`).
    pub train_images: usize,
    /// Of them, held out for the thresholds (`data.validation_fraction`).
    pub held_out: usize,
    /// Test images per `test/<defect>` folder (`good` included).
    pub test_images: BTreeMap<String, usize>,
    /// The model's metrics (`<runs>/<class>/eval/metrics.json`).
    pub model: Metrics,
    /// Its training time.
    pub train: TrainTime,
    /// The stages trained in this call (none for a finished run).
    pub trained_now: Vec<Stage>,
    /// Wall seconds of its evaluation (loading the model included).
    pub eval_seconds: f64,
    /// The baseline's metrics (`<runs>/baseline/<class>/metrics.json`).
    pub baseline: Metrics,
    /// Whether the baseline's `metrics.json` was read back, not recomputed.
    pub baseline_reused: bool,
    /// The baseline's wall seconds per test image when it was computed.
    pub baseline_seconds_per_image: f64,
    /// The model's metrics with the map unsmoothed (`inference.map_sigma` =
    /// 0, the paper's scoring), when the configuration smooths it: the
    /// ablation of that extension (`<runs>/<class>/eval_map_sigma_0/`).
    pub unsmoothed: Option<Metrics>,
    /// The per-stage diagnosis of the run.
    pub diagnosis: Diagnosis,
    /// The run directory.
    pub run: PathBuf,
    /// The runs of the extra seeds (`--seeds`), in seed order.
    pub other_seeds: Vec<SeedRun>,
}

/// One extra seed's run of a class (`<runs>/seed-<s>/<class>`).
#[derive(Clone, Debug)]
pub struct SeedRun {
    /// Its `seed`.
    pub seed: u64,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its training time.
    pub train: TrainTime,
    /// The stages trained in this call (none for a finished run).
    pub trained_now: Vec<Stage>,
}

impl ClassQuality {
    fn model_row(&self) -> SummaryRow {
        summary_row(&self.name, &self.model, self.train.total, self.eval_seconds)
    }

    fn baseline_row(&self) -> SummaryRow {
        summary_row(&self.name, &self.baseline, 0.0, 0.0)
    }

    /// Every seed's row, the main run's first (train = its training time).
    fn seed_rows(&self) -> Vec<SummaryRow> {
        std::iter::once(self.model_row())
            .chain(
                self.other_seeds
                    .iter()
                    .map(|r| summary_row(&self.name, &r.metrics, r.train.total, 0.0)),
            )
            .collect()
    }

    /// The mean over the seeds, named after the class, with the longest of
    /// their training times (the budget holds only if every run keeps it).
    fn seed_mean_row(&self) -> SummaryRow {
        let rows = self.seed_rows();
        let mut mean = SummaryRow::mean(&rows).unwrap_or_else(|| self.model_row());
        mean.name = self.name.clone();
        mean.train_seconds = rows.iter().map(|r| r.train_seconds).fold(0.0, f64::max);
        mean
    }
}

fn summary_row(name: &str, m: &Metrics, train_seconds: f64, eval_seconds: f64) -> SummaryRow {
    SummaryRow {
        name: name.to_owned(),
        image_auroc: m.image_auroc,
        pixel_auroc: m.pixel_auroc,
        pixel_ap: m.pixel_ap,
        aupro: m.aupro,
        train_seconds,
        eval_seconds,
    }
}

/// One row of the Table 1 section.
#[derive(Clone, Debug)]
pub struct Table1Result {
    /// The row.
    pub row: Table1Row,
    /// Its metrics (with the reconstruction PSNR).
    pub metrics: Metrics,
    /// Its training time.
    pub train: TrainTime,
    /// Its run directory.
    pub run: PathBuf,
}

/// The Table 1 rows on one class.
#[derive(Clone, Debug)]
pub struct Table1Quality {
    /// The class.
    pub class: String,
    /// The reconstruction rows ([`TABLE1_RECONSTRUCTION_ROWS`]), then the
    /// configuration's own row (its main run) when it is a Table 1 row.
    pub rows: Vec<Table1Result>,
}

/// Issue 15's criterion, evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    /// The classes.
    pub classes: usize,
    /// The classes where the model's pixel AP is above the baseline's.
    pub pixel_ap_wins: Vec<String>,
    /// The classes where the model's AU-PRO is above the baseline's.
    pub aupro_wins: Vec<String>,
    /// Mean image AUROC: model, baseline.
    pub image_auroc_means: (f64, f64),
    /// The class that trained longest and its seconds.
    pub slowest: (String, f64),
    /// Whether all four parts hold.
    pub holds: bool,
}

/// One setting that differs between two configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDifference {
    /// Its dotted TOML name (`data.image_size`).
    pub key: String,
    /// Its value in the first configuration (TOML syntax; `unset` when absent).
    pub from: String,
    /// Its value in the second.
    pub to: String,
}

impl fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.key, self.from, self.to)
    }
}

/// Every setting whose value differs between `from` and `to`, by dotted TOML
/// name: the top-level settings, then each section's, sorted by name. A
/// setting set on one side only (an optional one) shows `unset` on the other.
pub fn config_differences(from: &Config, to: &Config) -> Result<Vec<ConfigDifference>> {
    let value = |c: &Config| {
        toml::Value::try_from(c).map_err(|e| Error::Config {
            path: PathBuf::from("<serialise>"),
            message: e.to_string(),
        })
    };
    let mut out = Vec::new();
    differences(&value(from)?, &value(to)?, "", &mut out);
    Ok(out)
}

fn differences(a: &toml::Value, b: &toml::Value, prefix: &str, out: &mut Vec<ConfigDifference>) {
    let show = |v: Option<&toml::Value>| v.map_or_else(|| "unset".to_owned(), |v| v.to_string());
    if let (toml::Value::Table(ta), toml::Value::Table(tb)) = (a, b) {
        let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
        keys.sort();
        keys.dedup();
        // Plain settings first, then the sections, as the TOML file lists them.
        keys.sort_by_key(|k| {
            ta.get(*k)
                .or_else(|| tb.get(*k))
                .is_some_and(|v| v.is_table())
        });
        for key in keys {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match (ta.get(key), tb.get(key)) {
                (Some(x), Some(y)) => differences(x, y, &name, out),
                (x, y) => out.push(ConfigDifference {
                    key: name,
                    from: show(x),
                    to: show(y),
                }),
            }
        }
    } else if a != b {
        out.push(ConfigDifference {
            key: prefix.to_owned(),
            from: show(Some(a)),
            to: show(Some(b)),
        });
    }
}

/// What [`regenerate_quality`] measured; [`QualityReport::to_markdown`] is
/// the report it wrote.
#[derive(Clone, Debug)]
pub struct QualityReport {
    /// The command line in the header.
    pub command: String,
    /// When the report started (`YYYY-MM-DD HH:MM UTC`).
    pub date_utc: String,
    /// The machine.
    pub machine: Machine,
    /// Wall seconds of the whole call.
    pub wall_seconds: f64,
    /// The configuration's name.
    pub config_name: String,
    /// The configuration.
    pub config: Config,
    /// The baseline's settings.
    pub baseline: PatchKnnConfig,
    /// The classes written into `<photos>` by this call.
    pub photos_written: Vec<PathBuf>,
    /// The classes, in the order measured.
    pub classes: Vec<ClassQuality>,
    /// The Table 1 rows, when asked for.
    pub table1: Option<Table1Quality>,
    /// The Markdown file written.
    pub doc: PathBuf,
}

impl QualityReport {
    /// The mean over the classes of the model's row and of the baseline's
    /// (a pixel metric missing for any class has no mean).
    pub fn means(&self) -> Option<(SummaryRow, SummaryRow)> {
        let model: Vec<SummaryRow> = self.classes.iter().map(ClassQuality::model_row).collect();
        let baseline: Vec<SummaryRow> = self
            .classes
            .iter()
            .map(ClassQuality::baseline_row)
            .collect();
        Some((SummaryRow::mean(&model)?, SummaryRow::mean(&baseline)?))
    }

    /// The number of training seeds per class (`--seeds`).
    pub fn seeds(&self) -> usize {
        1 + self.classes.first().map_or(0, |c| c.other_seeds.len())
    }

    /// Issue 15's criterion on these classes (the main runs, one seed).
    pub fn criterion(&self) -> Criterion {
        let rows: Vec<SummaryRow> = self.classes.iter().map(ClassQuality::model_row).collect();
        self.criterion_on(&rows)
    }

    /// Issue 15's criterion on the mean over the seeds of each class (the
    /// training budget on the slowest run of any seed); with one seed, the
    /// same as [`QualityReport::criterion`].
    pub fn seed_mean_criterion(&self) -> Criterion {
        let rows: Vec<SummaryRow> = self
            .classes
            .iter()
            .map(ClassQuality::seed_mean_row)
            .collect();
        self.criterion_on(&rows)
    }

    /// The criterion with `rows[i]` as class `i`'s model row.
    fn criterion_on(&self, rows: &[SummaryRow]) -> Criterion {
        let baselines: Vec<SummaryRow> = self
            .classes
            .iter()
            .map(ClassQuality::baseline_row)
            .collect();
        let wins = |metric: fn(&SummaryRow) -> Option<f64>| -> Vec<String> {
            rows.iter()
                .zip(&baselines)
                .filter(|(m, b)| beats(metric(m), metric(b)) == Some(true))
                .map(|(m, _)| m.name.clone())
                .collect()
        };
        let pixel_ap_wins = wins(|r| r.pixel_ap);
        let aupro_wins = wins(|r| r.aupro);
        let image_auroc_means = match (SummaryRow::mean(rows), SummaryRow::mean(&baselines)) {
            (Some(m), Some(b)) => (m.image_auroc, b.image_auroc),
            _ => (f64::NAN, f64::NAN),
        };
        let slowest = rows
            .iter()
            .max_by(|a, b| a.train_seconds.total_cmp(&b.train_seconds))
            .map_or((String::new(), 0.0), |r| (r.name.clone(), r.train_seconds));
        let n = self.classes.len();
        let holds = n > 0
            && pixel_ap_wins.len() == n
            && aupro_wins.len() == n
            && image_auroc_means.0 > image_auroc_means.1
            && slowest.1 <= TRAIN_BUDGET_SECONDS;
        Criterion {
            classes: n,
            pixel_ap_wins,
            aupro_wins,
            image_auroc_means,
            slowest,
            holds,
        }
    }

    /// `preset` when the configuration is named by a preset (`cpu`), else
    /// `configuration` (a TOML file).
    fn config_kind(&self) -> &'static str {
        if Config::preset(&self.config_name).is_some() {
            "preset"
        } else {
            "configuration"
        }
    }

    /// The Markdown report (`docs/quality.md`).
    pub fn to_markdown(&self) -> Result<String> {
        let mut md = String::new();
        self.write_header(&mut md);
        self.write_benchmark(&mut md);
        self.write_main_table(&mut md);
        self.write_seeds(&mut md);
        self.write_ablation(&mut md);
        self.write_per_defect(&mut md);
        self.write_diagnosis(&mut md);
        self.write_departures(&mut md)?;
        self.write_table1(&mut md);
        Ok(md)
    }

    fn write_header(&self, md: &mut String) {
        let m = &self.machine;
        let cpu = m.cpu.as_deref().map_or(String::new(), |c| format!(", {c}"));
        let load = m.load_average.map_or(String::new(), |l| {
            format!("; load average {l:.2} at the start")
        });
        let trained = self
            .classes
            .iter()
            .filter(|c| !c.trained_now.is_empty())
            .count();
        let extra: Vec<&SeedRun> = self.classes.iter().flat_map(|c| &c.other_seeds).collect();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(
                " ({} of the {} runs of the extra seeds)",
                extra.iter().filter(|r| !r.trained_now.is_empty()).count(),
                extra.len()
            )
        };
        let _ = writeln!(md, "# Quality on real photographs\n");
        let _ = writeln!(
            md,
            "Generated by `{}` on {} (machine: {} cores{cpu}{load}), in {} of wall time. \
             {trained} of {} classes were trained in this call{extra}; a finished run is reused, and \
             its training time is read from its `train.log`. Do not edit by hand: rerun the \
             command, which resumes (finished runs are not trained again; evaluation and \
             diagnosis always run).\n",
            self.command,
            self.date_utc,
            m.cores,
            duration(self.wall_seconds),
            self.classes.len(),
        );
    }

    fn write_benchmark(&self, md: &mut String) {
        let kinds = defect_kinds(&self.classes);
        let _ = writeln!(md, "## The benchmark\n");
        let sizes: Vec<String> = {
            let mut s: Vec<usize> = self.classes.iter().map(|c| c.image_size).collect();
            s.sort_unstable();
            s.dedup();
            s.iter().map(|s| format!("{s}x{s}")).collect()
        };
        let _ = writeln!(
            md,
            "`diffad photo-data` (README, \"Real-photograph benchmark\"): crops of photographed \
             surfaces ({}) in the MVTec AD layout, with defect kinds DRAEM's synthesis never \
             makes. Training and test crops come from disjoint regions of each photograph: \
             test from the last 40 % along its longer side, or from the middle 40 % between two \
             training ends where the photograph has a gradient of lighting or content along \
             that side (wood, tissue; with the test part at one end, every good test crop of \
             wood was darker than every training crop, and every one of tissue brighter). \
             Counts read from the data:\n",
            sizes.join(", ")
        );
        let mut head = String::from("| class | photograph | train/good | test/good |");
        let mut rule = String::from("|---|---|--:|--:|");
        for k in &kinds {
            let _ = write!(head, " {k} |");
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for c in &self.classes {
            let mut line = format!(
                "| {} | {} | {} | {} |",
                c.name,
                c.source.unwrap_or("-"),
                c.train_images,
                c.test_images.get(GOOD).copied().unwrap_or(0)
            );
            for k in &kinds {
                let _ = write!(line, " {} |", c.test_images.get(k).copied().unwrap_or(0));
            }
            let _ = writeln!(md, "{line}");
        }
        let held: Vec<String> = self
            .classes
            .iter()
            .map(|c| c.held_out.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(
            md,
            "\nOf the training images, {} per class (`data.validation_fraction` = {}) are held \
             out to set the thresholds and are not trained on.\n",
            held.join(" or "),
            self.config.data.validation_fraction
        );
        let _ = writeln!(md, "Defect kinds:\n");
        for k in &kinds {
            match defect_description(k) {
                Some(d) => {
                    let _ = writeln!(md, "- `{k}`: {d}");
                }
                None => {
                    let _ = writeln!(md, "- `{k}`");
                }
            }
        }
        let _ = writeln!(md);
    }

    fn write_main_table(&self, md: &mut String) {
        let size = self.config.data.image_size;
        let b = &self.baseline;
        let _ = writeln!(
            md,
            "## The `{}` {} beside the raw-pixel baseline\n",
            self.config_name,
            self.config_kind()
        );
        let _ = writeln!(
            md,
            "Model: `diffad benchmark --config {}` ({size}x{size}), thresholds from the held-out \
             images. Baseline: `diffad baseline`, the raw-pixel {p}x{p} patch nearest-neighbour \
             detector (memory stride {}, at most {} patches, image score = max of the {k}x{k} \
             mean-filtered map), at {size}x{size}. Percent; train (s) = the sum of the stage \
             times in the run's `train.log`.\n",
            self.config_name,
            b.memory_stride,
            b.max_memory,
            p = b.patch,
            k = b.score_kernel,
        );
        let _ = writeln!(
            md,
            "| class | image AUROC | pixel AUROC | pixel AP | AU-PRO | train (s) \
             | baseline: image AUROC | pixel AUROC | pixel AP | AU-PRO \
             | beats on pixel AP | beats on AU-PRO |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|"
        );
        let line = |name: &str, m: &SummaryRow, b: &SummaryRow| {
            format!(
                "| {name} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                percent(Some(m.image_auroc)),
                percent(m.pixel_auroc),
                percent(m.pixel_ap),
                percent(m.aupro),
                m.train_seconds,
                percent(Some(b.image_auroc)),
                percent(b.pixel_auroc),
                percent(b.pixel_ap),
                percent(b.aupro),
                mark(beats(m.pixel_ap, b.pixel_ap)),
                mark(beats(m.aupro, b.aupro)),
            )
        };
        for c in &self.classes {
            let _ = writeln!(md, "{}", line(&c.name, &c.model_row(), &c.baseline_row()));
        }
        if let Some((m, b)) = self.means() {
            let _ = writeln!(md, "{}", line("**mean**", &m, &b));
        }
        let seeds = self.seeds();
        let _ = writeln!(
            md,
            "\n{}",
            self.criterion_sentence("**Criterion (issue 15)**", &self.criterion())
        );
        if seeds == 1 {
            let _ = writeln!(
                md,
                "One training seed per class (`seed` = {}). The seed alone moves a class's \
                 pixel AP by up to 10 points and its AU-PRO by up to 8 (wood, \
                 `docs/experiments.md`, \"Seeds\"), so a margin smaller than that is not a \
                 win; `--seeds 3` judges the mean of three.\n",
                self.config.seed,
            );
        } else {
            let _ = writeln!(
                md,
                "This table is seed {} alone; \"Seeds\" below judges the criterion on the mean \
                 of {seeds} seeds.\n",
                self.config.seed,
            );
        }
        let _ = writeln!(
            md,
            "Training time per stage (s), evaluation (s) and the baseline's time per test image:\n"
        );
        let _ = writeln!(
            md,
            "| class | vae | ldm | seg | train | eval | baseline (s/image) |\n\
             |---|--:|--:|--:|--:|--:|--:|"
        );
        for c in &self.classes {
            let stage = |s: Stage| {
                c.train
                    .stages
                    .iter()
                    .find(|(x, _)| *x == s)
                    .map_or("-".to_owned(), |(_, v)| format!("{v:.1}"))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                c.name,
                stage(Stage::Vae),
                stage(Stage::Ldm),
                stage(Stage::Segmenter),
                c.train.total,
                c.eval_seconds,
                c.baseline_seconds_per_image
            );
        }
        let _ = writeln!(md);
    }

    /// `label: the <config> beats the baseline ... : **holds**. Pixel AP: ...`
    /// for `cr`, one paragraph.
    fn criterion_sentence(&self, label: &str, cr: &Criterion) -> String {
        let n = cr.classes;
        let missing = |wins: &[String]| {
            let losers: Vec<&str> = self
                .classes
                .iter()
                .map(|c| c.name.as_str())
                .filter(|name| !wins.iter().any(|w| w == name))
                .collect();
            if losers.is_empty() {
                String::new()
            } else {
                format!(", not on {}", losers.join(", "))
            }
        };
        let (mi, bi) = cr.image_auroc_means;
        format!(
            "{label}: the `{}` {} beats the baseline on pixel AP and on AU-PRO on every class, \
             and on image AUROC on average, and every class trains in at most 15 min \
             ({TRAIN_BUDGET_SECONDS:.0} s): **{}**. Pixel AP: {} of {n} classes{} {}; AU-PRO: \
             {} of {n} classes{} {}; mean image AUROC {} against {} {}; slowest training \
             {:.0} s ({}) {}.\n",
            self.config_name,
            self.config_kind(),
            if cr.holds { "holds" } else { "does not hold" },
            cr.pixel_ap_wins.len(),
            missing(&cr.pixel_ap_wins),
            mark(Some(cr.pixel_ap_wins.len() == n)),
            cr.aupro_wins.len(),
            missing(&cr.aupro_wins),
            mark(Some(cr.aupro_wins.len() == n)),
            percent(Some(mi)),
            percent(Some(bi)),
            mark(Some(mi > bi)),
            cr.slowest.1,
            cr.slowest.0,
            mark(Some(cr.slowest.1 <= TRAIN_BUDGET_SECONDS)),
        )
    }

    /// The seeds section (`--seeds` above 1): pixel AP / AU-PRO per seed, the
    /// mean, the baseline, and the criterion on the means.
    fn write_seeds(&self, md: &mut String) {
        let seeds = self.seeds();
        if seeds < 2 {
            return;
        }
        let first = self.config.seed;
        let _ = writeln!(md, "## Seeds\n");
        let _ = writeln!(
            md,
            "Every class trained with {seeds} seeds (`seed` = {first} to {}; the extra runs in \
             `<runs>/{SEED_DIR_PREFIX}<seed>/<class>`), pixel AP / AU-PRO in percent, then their \
             mean and the baseline's. Train (s) = the slowest of the class's runs.\n",
            first + seeds as u64 - 1,
        );
        let mut header = String::from("| class |");
        let mut rule = String::from("|---|");
        for k in 0..seeds {
            let _ = write!(header, " seed {} |", first + k as u64);
            rule.push_str("--:|");
        }
        header.push_str(
            " mean image AUROC | mean pixel AP / AU-PRO | train (s) \
             | baseline: pixel AP / AU-PRO | beats on pixel AP | beats on AU-PRO |",
        );
        rule.push_str("--:|--:|--:|--:|:-:|:-:|");
        let _ = writeln!(md, "{header}\n{rule}");
        let pair = |r: &SummaryRow| format!("{} / {}", percent(r.pixel_ap), percent(r.aupro));
        for c in &self.classes {
            let mut line = format!("| {} |", c.name);
            for r in c.seed_rows() {
                let _ = write!(line, " {} |", pair(&r));
            }
            let (m, b) = (c.seed_mean_row(), c.baseline_row());
            let _ = writeln!(
                md,
                "{line} {} | {} | {:.0} | {} | {} | {} |",
                percent(Some(m.image_auroc)),
                pair(&m),
                m.train_seconds,
                pair(&b),
                mark(beats(m.pixel_ap, b.pixel_ap)),
                mark(beats(m.aupro, b.aupro)),
            );
        }
        let _ = writeln!(
            md,
            "\n{}",
            self.criterion_sentence(
                &format!("**Criterion on the mean of {seeds} seeds**"),
                &self.seed_mean_criterion()
            )
        );
    }

    /// The ablation of the map smoothing (`inference.map_sigma`), when the
    /// configuration smooths: the same runs scored on the raw map.
    fn write_ablation(&self, md: &mut String) {
        if self.classes.iter().all(|c| c.unsmoothed.is_none()) {
            return;
        }
        let _ = writeln!(md, "## Ablation: the smoothed anomaly map\n");
        let _ = writeln!(
            md,
            "The `{}` {} smooths the anomaly map with a Gaussian of `inference.map_sigma` = {} \
             pixels, an extension of the method (the paper scores the raw segmentation output; \
             see \"Where the `{0}` {1} departs from the paper\"). The same runs scored on the \
             raw map (`inference.map_sigma` = 0, in `<runs>/<class>/eval_map_sigma_0/`), \
             percent:\n",
            self.config_name,
            self.config_kind(),
            self.config.inference.map_sigma,
        );
        let _ = writeln!(
            md,
            "| class | raw map: image AUROC | pixel AP | AU-PRO | smoothed: image AUROC \
             | pixel AP | AU-PRO | baseline: pixel AP | AU-PRO |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for c in &self.classes {
            let Some(raw) = &c.unsmoothed else { continue };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                percent(Some(raw.image_auroc)),
                percent(raw.pixel_ap),
                percent(raw.aupro),
                percent(Some(c.model.image_auroc)),
                percent(c.model.pixel_ap),
                percent(c.model.aupro),
                percent(c.baseline.pixel_ap),
                percent(c.baseline.aupro),
            );
        }
        let _ = writeln!(md);
    }

    fn write_per_defect(&self, md: &mut String) {
        let _ = writeln!(md, "## Per defect kind\n");
        let _ = writeln!(
            md,
            "Pixel AUROC and pixel AP of each defect kind (its images' pixels against the good \
             images'), percent.\n"
        );
        for c in &self.classes {
            let _ = writeln!(md, "### {}\n", c.name);
            let _ = writeln!(
                md,
                "| defect | images | pixel AUROC | pixel AP | baseline: pixel AUROC | pixel AP |\n\
                 |---|--:|--:|--:|--:|--:|"
            );
            let model = per_defect(&c.model);
            let baseline = per_defect(&c.baseline);
            let mut kinds: Vec<&String> = model.keys().chain(baseline.keys()).collect();
            kinds.sort();
            kinds.dedup();
            for k in kinds {
                let images = c.test_images.get(k).copied().unwrap_or(0);
                let (ma, mp) = model.get(k).copied().unwrap_or((None, None));
                let (ba, bp) = baseline.get(k).copied().unwrap_or((None, None));
                let _ = writeln!(
                    md,
                    "| {k} | {images} | {} | {} | {} | {} |",
                    percent(ma),
                    percent(mp),
                    percent(ba),
                    percent(bp)
                );
            }
            let _ = writeln!(md);
        }
    }

    fn write_diagnosis(&self, md: &mut String) {
        let Some(first) = self.classes.first() else {
            return;
        };
        let d0 = &first.diagnosis;
        let _ = writeln!(md, "## Where the quality goes (per-stage diagnosis)\n");
        let _ = writeln!(
            md,
            "`diffad diagnose --run <runs>/<class> --data <photos>/<class>`, written to \
             `<runs>/<class>/{DIAGNOSIS_DIR}/{DIAGNOSIS_FILE}`: {} synthetic anomalies on copies \
             of the good test images, up to {} training images; mean per-image PSNR in dB, \
             segmenter scores in percent (the good test images are the negatives of both).\n",
            d0.ldm.synthetic_images, d0.vae.train_images
        );
        let mut head = String::from("| stage | measure |");
        let mut rule = String::from("|---|---|");
        for c in &self.classes {
            let _ = write!(head, " {} |", c.name);
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        type Cell = fn(&Diagnosis) -> String;
        let rows: [(&str, &str, Cell); 13] = [
            ("VAE", "`D(E(x))` vs `x`, good test images", |d| {
                db(Some(d.vae.test_good_psnr))
            }),
            ("VAE", "`D(E(x))` vs `x`, training images", |d| {
                db(d.vae.train_psnr)
            }),
            ("LDM", "`x_r` vs `x`, good test images", |d| {
                db(Some(d.ldm.good_psnr))
            }),
            (
                "LDM",
                "synthetic: `x_a` vs `x` inside M (the defect's strength)",
                |d| db(Some(d.ldm.anomaly_inside_psnr)),
            ),
            (
                "LDM",
                "synthetic: `x_r` vs `x` inside M (higher = defect removed)",
                |d| db(Some(d.ldm.removed_inside_psnr)),
            ),
            (
                "LDM",
                "synthetic: `x_r` vs `x` outside M (higher = normal kept)",
                |d| db(Some(d.ldm.kept_outside_psnr)),
            ),
            (
                "LDM",
                "synthetic: `x_a` vs `x_r` inside M (direct copy, higher = worse)",
                |d| db(Some(d.ldm.copied_inside_psnr)),
            ),
            (
                "LDM",
                "real: `x_a` vs `x_r` inside the masks (direct copy)",
                |d| db(d.ldm.real_copied_inside_psnr),
            ),
            (
                "LDM",
                "real: `x_a` vs `x_r` outside the masks (noise floor)",
                |d| db(d.ldm.real_outside_psnr),
            ),
            ("segmenter", "synthetic anomalies: pixel AUROC / AP", |d| {
                pixel_pair(Some(&d.segmenter.synthetic))
            }),
            ("segmenter", "real defects: pixel AUROC / AP", |d| {
                pixel_pair(d.segmenter.real.as_ref())
            }),
            ("segmenter", "synthetic anomalies: image AUROC", |d| {
                percent(Some(d.segmenter.synthetic.image_auroc))
            }),
            ("segmenter", "real defects: image AUROC", |d| {
                percent(d.segmenter.real.map(|s| s.image_auroc))
            }),
        ];
        for (stage, measure, cell) in rows {
            let mut line = format!("| {stage} | {measure} |");
            for c in &self.classes {
                let _ = write!(line, " {} |", cell(&c.diagnosis));
            }
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(
            md,
            "\nPer real defect kind: direct-copy PSNR inside the masks / noise floor outside them \
             (dB), then the segmenter's pixel AP on that kind (percent). A defect stands out in \
             the residual `x_a - x_r` only when the first number is well below the second.\n"
        );
        let mut kinds: Vec<&str> = self
            .classes
            .iter()
            .flat_map(|c| c.diagnosis.real_defects.iter().map(|d| d.defect.as_str()))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let _ = writeln!(md, "{head}\n{rule}");
        for k in kinds {
            let mut line = format!("| real | {k} |");
            for c in &self.classes {
                let cell = c
                    .diagnosis
                    .real_defects
                    .iter()
                    .find(|d| d.defect == k)
                    .map_or("-".to_owned(), |d| {
                        format!(
                            "{} / {}, AP {}",
                            db(d.copied_inside_psnr),
                            db(d.outside_psnr),
                            percent(Some(d.scores.pixel_ap))
                        )
                    });
                let _ = write!(line, " {cell} |");
            }
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(md);
    }

    fn write_departures(&self, md: &mut String) -> Result<()> {
        let name = &self.config_name;
        let kind = self.config_kind();
        let _ = writeln!(md, "## Where the `{name}` {kind} departs from the paper\n");
        let diffs = config_differences(&Config::paper(), &self.config)?;
        if diffs.is_empty() {
            let _ = writeln!(md, "Nowhere: it is the paper's configuration.\n");
            return Ok(());
        }
        let _ = writeln!(
            md,
            "Every setting of `diffad config {name}` that differs from `diffad config paper` \
             (`diffad.toml`), paper value → `{name}` value:\n"
        );
        for d in &diffs {
            let _ = writeln!(md, "- `{}`: {} → {}", d.key, d.from, d.to);
        }
        let _ = writeln!(md);
        if self.config == Config::cpu() {
            let _ = writeln!(
                md,
                "The method is the paper's (noisy condition, interpolated channels, DRAEM's \
                 synthesis and focal loss); only sizes, schedules and step sizes change. Why \
                 each departure was made, and the measurements behind it, is written in the doc \
                 comment of `Config::cpu` (`src/config/presets.rs`; `cargo doc --open`, then \
                 `diffad::Config::cpu`).\n"
            );
        } else {
            let _ = writeln!(
                md,
                "The reasons behind the `cpu` preset's departures are in the doc comment of \
                 `Config::cpu` (`src/config/presets.rs`); `{name}` is not that preset.\n"
            );
        }
        Ok(())
    }

    fn write_table1(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "## Table 1 at CPU scale\n\n\
             The reconstruction rows of the paper's Table 1 (Sec. 4.2, group (i)): \
             forward-reverse (SDEdit), the clean condition and the noisy condition, each with \
             the segmenter on concat(x_a, x_r), trained with the `{}` {}; and, for \
             reference, the configuration's own row (its main run of that class).\n",
            self.config_name,
            self.config_kind()
        );
        let Some(t) = &self.table1 else {
            let _ = writeln!(
                md,
                "Not measured in this report: add `--table1 <class>` to the command above to \
                 train and evaluate the three rows on that class (each in \
                 `<runs>/{TABLE1_DIR}/<row>/<class>`, about three more trainings of that class).\n"
            );
            return;
        };
        let _ = writeln!(
            md,
            "On `{}`, in `<runs>/{TABLE1_DIR}/<row>/{}`; percent, reconstruction PSNR = mean \
             PSNR of `x_r` against the good test images. The paper's figures are its MVTec AD \
             averages (image AUROC / pixel AUROC / pixel AP).\n",
            t.class, t.class
        );
        let _ = writeln!(
            md,
            "| row | `ldm.reconstruction` | `segmenter.input` | image AUROC | pixel AUROC \
             | pixel AP | AU-PRO | reconstruction PSNR (dB) | train (s) | paper |\n\
             |---|---|---|--:|--:|--:|--:|--:|--:|--:|"
        );
        for r in &t.rows {
            let (reconstruction, input) = r.row.settings();
            let m = &r.metrics;
            let [pi, pp, pa] = r.row.paper_results();
            let _ = writeln!(
                md,
                "| {} | `{}` | `{}` | {} | {} | {} | {} | {} | {:.0} | {pi:.1} / {pp:.1} / {pa:.1} |",
                r.row.paper_name(),
                kebab(&reconstruction),
                kebab(&input),
                percent(Some(m.image_auroc)),
                percent(m.pixel_auroc),
                percent(m.pixel_ap),
                percent(m.aupro),
                db(m.reconstruction_psnr),
                r.train.total,
            );
        }
        let _ = writeln!(md);
    }
}

/// Runs the whole report (see the module documentation) and writes it to
/// `options.doc` atomically.
///
/// Checked before anything is trained: every class is a benchmark class or
/// already in `<photos>`, and the Table 1 class is one of the classes. A
/// class that fails stops the report with [`Error::Class`] naming it.
/// `progress` makes the reporter of each long task, labelled as
/// [`run_benchmark`] labels them (`brick vae`, ..., `brick eval`; the
/// Table 1 rows prefixed by the row, `forward-reverse brick ldm`).
pub fn regenerate_quality(
    options: &QualityOptions,
    device: &Device,
    progress: &mut ProgressFactory,
) -> Result<QualityReport> {
    let start = Instant::now();
    let machine = Machine::detect();
    let date_utc = utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut names: Vec<String> = Vec::new();
    for name in &options.photos.classes {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        return Err(Error::Config {
            path: "--classes".into(),
            message: "no classes to measure".into(),
        });
    }
    if let Some(class) = &options.table1 {
        if !names.contains(class) {
            return Err(Error::Config {
                path: "--table1".into(),
                message: format!(
                    "`{class}` is not one of the classes measured ({})",
                    names.join(", ")
                ),
            });
        }
    }
    options.config.validate(Path::new("<config>"))?;
    if options.seeds == 0 {
        return Err(Error::Config {
            path: "--seeds".into(),
            message: "at least one seed".into(),
        });
    }

    // 1. The benchmark's classes that `<photos>` lacks.
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !options.photos_dir.join(n).exists())
        .cloned()
        .collect();
    let photos_written = if missing.is_empty() {
        Vec::new()
    } else {
        let write = PhotoDataOptions {
            classes: missing,
            ..options.photos.clone()
        };
        write_photo_dataset(&options.photos_dir, &write)?
    };
    let classes: Vec<MvtecClass> = names
        .iter()
        .map(|n| MvtecClass::open_for_eval(&options.photos_dir.join(n)))
        .collect::<Result<_>>()?;

    // 2. The baselines (cheap), then every model as `diffad benchmark` trains
    // and evaluates it, then the diagnoses.
    let size = options.config.data.image_size;
    let mut baselines = Vec::with_capacity(classes.len());
    for class in &classes {
        let out = options.runs.join(BASELINE_DIR).join(&class.name);
        let baseline = baseline_metrics(class, size, &out, &options.baseline)
            .map_err(|e| in_class(class, e))?;
        baselines.push(baseline);
    }
    let benchmark = BenchmarkOptions {
        config: Some(options.config.clone()),
        classes: names.clone(),
        anomaly_maps: options.anomaly_maps,
        overlays: options.overlays,
    };
    let summary = run_benchmark(
        &options.photos_dir,
        &options.runs,
        &benchmark,
        device,
        progress,
    )?;
    let mut measured = Vec::with_capacity(classes.len());
    for ((class, outcome), baseline) in classes.iter().zip(&summary.classes).zip(baselines) {
        let quality = class_quality(class, outcome, baseline, options, device)
            .map_err(|e| in_class(class, e))?;
        measured.push(quality);
    }

    // 3. The extra seeds, evaluated only.
    for k in 1..options.seeds {
        let seed = options.config.seed + k as u64;
        let mut config = options.config.clone();
        config.seed = seed;
        let extra = BenchmarkOptions {
            config: Some(config),
            classes: names.clone(),
            anomaly_maps: false,
            overlays: false,
        };
        let runs = options.runs.join(format!("{SEED_DIR_PREFIX}{seed}"));
        let summary = run_benchmark(&options.photos_dir, &runs, &extra, device, progress)?;
        for (quality, outcome) in measured.iter_mut().zip(&summary.classes) {
            quality.other_seeds.push(SeedRun {
                seed,
                metrics: outcome.eval.metrics.clone(),
                train: TrainTime::of(outcome)?,
                trained_now: trained_now(outcome),
            });
        }
    }

    // 4. Table 1 on one class.
    let table1 = match &options.table1 {
        None => None,
        Some(name) => Some(table1_rows(name, options, &measured, device, progress)?),
    };

    let mut report = QualityReport {
        command: options.command.clone(),
        date_utc,
        machine,
        wall_seconds: 0.0,
        config_name: options.config_name.clone(),
        config: options.config.clone(),
        baseline: options.baseline.clone(),
        photos_written,
        classes: measured,
        table1,
        doc: options.doc.clone(),
    };
    report.wall_seconds = start.elapsed().as_secs_f64();
    write_atomic(&options.doc, report.to_markdown()?.as_bytes())?;
    Ok(report)
}

/// The stages `outcome` trained (not skipped as finished).
fn trained_now(outcome: &ClassOutcome) -> Vec<Stage> {
    outcome
        .stages
        .iter()
        .filter(|s| !s.skipped)
        .map(|s| s.stage)
        .collect()
}

/// A class's baseline, computed or read back.
struct BaselineResult {
    metrics: Metrics,
    reused: bool,
    seconds_per_image: f64,
}

/// Diagnoses the run of `outcome` and gathers everything the report shows
/// of `class`.
fn class_quality(
    class: &MvtecClass,
    outcome: &ClassOutcome,
    baseline: BaselineResult,
    options: &QualityOptions,
    device: &Device,
) -> Result<ClassQuality> {
    let run = RunDir::open(&outcome.run)?;
    let model = DiffAd::load(&run, device)?;
    let diagnosis = diagnose(&model, class, &options.diagnose)?;
    let unsmoothed = if run.config().inference.map_sigma > 0.0 {
        // The same networks, scored on the raw map (no second load).
        let raw = model.with_map_sigma(0.0)?;
        let eval = EvalOptions {
            anomaly_maps: false,
            overlays: false,
            thresholds: None,
        };
        let out = outcome.run.join(UNSMOOTHED_DIR);
        Some(evaluate(&raw, class, &out, &eval, &mut Silent)?.metrics)
    } else {
        None
    };
    diagnosis.write_json(&outcome.run.join(DIAGNOSIS_DIR).join(DIAGNOSIS_FILE))?;
    let mut test_images = BTreeMap::new();
    for sample in &class.test {
        *test_images.entry(sample.defect.clone()).or_insert(0) += 1;
    }
    let image_size = match class.train.first() {
        Some(first) => {
            image::image_dimensions(first)
                .map_err(|source| Error::UnreadableImage {
                    path: first.clone(),
                    source,
                })?
                .0 as usize
        }
        None => 0,
    };
    Ok(ClassQuality {
        name: class.name.clone(),
        source: photo_class(&class.name).ok().map(|c| c.source),
        image_size,
        train_images: class.train.len(),
        held_out: crate::train::validation_indices(run.config(), class.train.len())
            .map_or(0, |h| h.len()),
        test_images,
        model: outcome.eval.metrics.clone(),
        train: TrainTime::of(outcome)?,
        trained_now: trained_now(outcome),
        eval_seconds: outcome.row.eval_seconds,
        baseline: baseline.metrics,
        baseline_reused: baseline.reused,
        baseline_seconds_per_image: baseline.seconds_per_image,
        unsmoothed,
        diagnosis,
        run: outcome.run.clone(),
        other_seeds: Vec::new(),
    })
}

/// The settings a baseline's `metrics.json` was made with
/// ([`BASELINE_SETTINGS_FILE`]), and its speed then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BaselineSettings {
    size: usize,
    knn: PatchKnnConfig,
    seconds_per_image: f64,
}

/// The baseline of `class` at `size` in `out`: read back when `out` holds a
/// `metrics.json` made with the same settings, else computed. Returns the
/// metrics, whether they were read back, and the seconds per test image.
fn baseline_metrics(
    class: &MvtecClass,
    size: usize,
    out: &Path,
    knn: &PatchKnnConfig,
) -> Result<BaselineResult> {
    let metrics_json = out.join("metrics.json");
    let settings_json = out.join(BASELINE_SETTINGS_FILE);
    if metrics_json.is_file() && settings_json.is_file() {
        let text = fs::read_to_string(&settings_json).map_err(|e| Error::io(&settings_json, e))?;
        let saved: Option<BaselineSettings> = serde_json::from_str(&text).ok();
        if let Some(saved) = saved.filter(|s| s.size == size && &s.knn == knn) {
            return Ok(BaselineResult {
                metrics: Metrics::read_json(&metrics_json)?,
                reused: true,
                seconds_per_image: saved.seconds_per_image,
            });
        }
    }
    let output = evaluate_baseline(class, Some(size), out, knn)?;
    let settings = BaselineSettings {
        size,
        knn: knn.clone(),
        seconds_per_image: output.seconds_per_image,
    };
    let json = serde_json::to_string_pretty(&settings).map_err(|source| Error::Json {
        path: settings_json.clone(),
        source,
    })?;
    write_atomic(&settings_json, json.as_bytes())?;
    Ok(BaselineResult {
        metrics: output.metrics,
        reused: false,
        seconds_per_image: output.seconds_per_image,
    })
}

fn table1_rows(
    class: &str,
    options: &QualityOptions,
    measured: &[ClassQuality],
    device: &Device,
    progress: &mut ProgressFactory,
) -> Result<Table1Quality> {
    let mut rows = Vec::new();
    for row in TABLE1_RECONSTRUCTION_ROWS {
        let name = kebab(&row);
        let benchmark = BenchmarkOptions {
            config: Some(row.apply(options.config.clone())),
            classes: vec![class.to_owned()],
            anomaly_maps: false,
            overlays: false,
        };
        let mut labelled = |task: &str| progress(&format!("{name} {task}"));
        let summary = run_benchmark(
            &options.photos_dir,
            &options.runs.join(TABLE1_DIR).join(&name),
            &benchmark,
            device,
            &mut labelled,
        )?;
        for outcome in &summary.classes {
            rows.push(Table1Result {
                row,
                metrics: outcome.eval.metrics.clone(),
                train: TrainTime::of(outcome)?,
                run: outcome.run.clone(),
            });
        }
    }
    // The configuration's own row is its main run, already measured.
    let own = Table1Row::ALL.into_iter().find(|r| {
        r.settings()
            == (
                options.config.ldm.reconstruction,
                options.config.segmenter.input,
            )
    });
    if let (Some(row), Some(c)) = (own, measured.iter().find(|c| c.name == class)) {
        if !TABLE1_RECONSTRUCTION_ROWS.contains(&row) {
            rows.push(Table1Result {
                row,
                metrics: c.model.clone(),
                train: c.train.clone(),
                run: c.run.clone(),
            });
        }
    }
    Ok(Table1Quality {
        class: class.to_owned(),
        rows,
    })
}

fn in_class(class: &MvtecClass, source: Error) -> Error {
    Error::Class {
        class: class.name.clone(),
        path: class.root.clone(),
        source: Box::new(source),
    }
}

/// A serde enum's kebab-case name (`forward-reverse`), as in the TOML file.
fn kebab<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("?"),
    }
}

/// Whether `model` is above `baseline`; `None` when either is missing.
fn beats(model: Option<f64>, baseline: Option<f64>) -> Option<bool> {
    Some(model? > baseline?)
}

fn mark(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "-",
    }
}

/// A fraction in percent with one decimal, `-` when missing.
fn percent(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{:.1}", 100.0 * v))
}

/// Decibels with two decimals, `-` when missing.
fn db(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn pixel_pair(s: Option<&SegScores>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |s| {
            format!(
                "{} / {}",
                percent(Some(s.pixel_auroc)),
                percent(Some(s.pixel_ap))
            )
        },
    )
}

/// Per defect kind of a report: pixel AUROC and pixel AP (of that kind's
/// images together with the good ones).
fn per_defect(m: &Metrics) -> BTreeMap<String, (Option<f64>, Option<f64>)> {
    m.report
        .as_ref()
        .map(|r| {
            r.pixel
                .per_defect
                .iter()
                .filter(|(k, _)| k.as_str() != GOOD)
                .map(|(k, d)| (k.clone(), (d.auroc, d.average_precision)))
                .collect()
        })
        .unwrap_or_default()
}

/// The defect kinds of the classes' test splits (`good` excluded), sorted.
fn defect_kinds(classes: &[ClassQuality]) -> Vec<String> {
    let mut kinds: Vec<String> = classes
        .iter()
        .flat_map(|c| c.test_images.keys().filter(|k| *k != GOOD).cloned())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// What the benchmark's defect kinds are (`crate::photo_data::defects`).
fn defect_description(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "scratch" => "thin curved strokes (1-2 px), slightly lighter or darker",
        "stain" => "low-contrast soft blotches (4-10 % brightness and hue)",
        "hole" => "missing material: a dark pit with a shaded rim",
        "warp" => "the texture itself displaced inside a disc, colours unchanged",
        "contamination" => "small foreign particles and fibres",
        _ => return None,
    })
}

/// `seconds` as `1 h 02 min 13 s`, `6 min 06 s` or `42.3 s`.
fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h} h {m:02} min {s:02} s")
    } else {
        format!("{m} min {s:02} s")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian calendar;
/// the days-to-date conversion of H. Hinnant's `civil_from_days`).
fn utc_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let rem = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_764_590_400 + 3_660), "2025-12-01 13:01 UTC");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42.34), "42.3 s");
        assert_eq!(duration(366.0), "6 min 06 s");
        assert_eq!(duration(3733.0), "1 h 02 min 13 s");
    }

    #[test]
    fn stage_seconds_come_from_the_done_lines() {
        let log = "1764590400 vae: start (36 images)\n\
                   1764590575 vae: done: vae     200 steps    174.3 s  final loss 0.0123\n\
                   1764590576 ldm: start (36 images)\n\
                   1764590900 ldm: done: ldm    1350 steps    321.0 s\n\
                   1764590901 seg: done: seg already trained\n\
                   1764591000 seg: done: seg      60 steps     99.5 s  final loss 0.2\n\
                   1764591001 thresholds: image 0.5 pixel 0.4 (score range 0..1, 4 held-out images)\n\
                   garbage\n";
        let seconds = stage_seconds_from_log(log);
        assert_eq!(seconds.get(&Stage::Vae), Some(&174.3));
        assert_eq!(seconds.get(&Stage::Ldm), Some(&321.0));
        assert_eq!(seconds.get(&Stage::Segmenter), Some(&99.5));
        assert!(stage_seconds_from_log("").is_empty());
    }

    #[test]
    fn the_log_line_train_writes_parses() {
        // The exact line `crate::train()` logs, from `StageReport`'s Display.
        let report = crate::train::StageReport {
            stage: Stage::Ldm,
            skipped: false,
            steps: 1350,
            final_loss: Some(0.02),
            seconds: 512.31,
        };
        let line = format!("1764590400 {}: done: {report}", Stage::Ldm);
        assert_eq!(stage_seconds_from_log(&line).get(&Stage::Ldm), Some(&512.3));
    }

    #[test]
    fn marks_and_percentages() {
        assert_eq!(beats(Some(0.3), Some(0.2)), Some(true));
        assert_eq!(beats(Some(0.2), Some(0.2)), Some(false));
        assert_eq!(beats(None, Some(0.2)), None);
        assert_eq!(percent(Some(0.98765)), "98.8");
        assert_eq!(percent(None), "-");
        assert_eq!(mark(Some(true)), "✓");
    }
}
