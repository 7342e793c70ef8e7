//! The `diffad` command-line tool: train DiffAD on a folder of good images,
//! evaluate it on an MVTec AD class, predict anomaly maps, or run the demo.
//!
//! Errors are printed as one line naming the file at fault, with exit code 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::{Parser, Subcommand, ValueEnum};
use diffad::config::Precision;
use diffad::data::{load_images, training_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::predict::{predict_paths, PredictOptions};
use diffad::progress::Bar;
use diffad::thresholds::Thresholds;
use diffad::{Config, DiffAd, Error, Result, RunDir, Stage, TrainOptions};

/// DiffAD: unsupervised surface anomaly detection with a latent diffusion model
/// (Zhang et al., ICCV 2023).
#[derive(Parser, Debug)]
#[command(name = "diffad", version, about, long_about = None)]
struct Cli {
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` feature).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Precision of the networks at inference (`f32`, `bf16`, `f16`; default: the
    /// run's `inference.dtype`). Half precision is for GPUs; the CPU widens it to f32.
    #[arg(long, global = true)]
    dtype: Option<Precision>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StageArg {
    /// Every stage not yet done, in order.
    All,
    /// The KL autoencoder.
    Vae,
    /// The conditional latent diffusion model.
    Ldm,
    /// The segmentation network.
    Seg,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train on the good images of an MVTec class folder (`train/good`) or a
    /// plain folder of good images. Interrupted runs resume.
    Train {
        /// MVTec class folder or folder of good images.
        #[arg(long)]
        data: PathBuf,
        /// Run directory (created; reopened if it exists).
        #[arg(long)]
        out: PathBuf,
        /// `paper`, `tiny`, `cpu` or a TOML file (default: the run's saved config, else `paper`).
        #[arg(long)]
        config: Option<String>,
        /// Which stage to train.
        #[arg(long, value_enum, default_value_t = StageArg::All)]
        stage: StageArg,
    },
    /// Evaluate a trained run on the test split of an MVTec class folder.
    Eval {
        /// Run directory made by `diffad train`.
        #[arg(long)]
        run: PathBuf,
        /// MVTec class folder with `test/` and `ground_truth/`.
        #[arg(long)]
        data: PathBuf,
        /// Output folder (default `<run>/eval`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the TIFF anomaly maps.
        #[arg(long)]
        no_maps: bool,
        /// Skip the PNG overlays.
        #[arg(long)]
        no_overlays: bool,
    },
    /// Measure where the quality goes, stage by stage: VAE reconstruction
    /// PSNR, whether x_r removes synthetic defects (PSNR inside and outside
    /// the mask), the segmenter on synthetic versus real defects.
    Diagnose {
        /// Run directory made by `diffad train`.
        #[arg(long)]
        run: PathBuf,
        /// MVTec class folder with good test images (and `ground_truth/` for real defects).
        #[arg(long)]
        data: PathBuf,
        /// Output folder for `diagnosis.json` (default `<run>/diagnosis`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Synthetic anomalies, pasted on copies of the good test images.
        #[arg(long, default_value_t = 16)]
        synthetic: usize,
        /// Training images whose VAE round trip is measured.
        #[arg(long, default_value_t = 16)]
        max_train: usize,
    },
    /// Train (resuming what is done) and evaluate every class of an MVTec AD
    /// root, one run per class in `<out>/<class>`, and write
    /// `<out>/summary.csv` and `<out>/summary.md`.
    Benchmark {
        /// MVTec AD root (one folder per class) or a single class folder.
        #[arg(long)]
        data: PathBuf,
        /// Runs folder (created; reopened if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Classes to run, comma-separated (default: all, sorted by name).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// `paper`, `tiny`, `cpu` or a TOML file (default: each run's saved config, else `paper`).
        #[arg(long)]
        config: Option<String>,
        /// Skip the TIFF anomaly maps.
        #[arg(long)]
        no_maps: bool,
        /// Skip the PNG overlays.
        #[arg(long)]
        no_overlays: bool,
    },
    /// Regenerate `docs/quality.md`: the real-photograph benchmark (written
    /// into `--photos` for the classes it lacks) with a preset beside the
    /// raw-pixel baseline, the per-stage diagnosis and the issue-15 criterion.
    /// Finished runs and baselines are reused, so an interrupted call resumes.
    Quality {
        /// The real-photograph benchmark's folder (missing classes are written there).
        #[arg(long)]
        photos: PathBuf,
        /// Runs folder: `<runs>/<class>`, `<runs>/baseline/<class>`, `<runs>/seed-<s>/<class>`,
        /// `<runs>/table1/<row>/<class>`.
        #[arg(long)]
        runs: PathBuf,
        /// The Markdown file to write (e.g. `docs/quality.md`).
        #[arg(long)]
        doc: PathBuf,
        /// Side of the photographs written for missing classes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// `cpu`, `tiny`, `paper` or a TOML file.
        #[arg(long, default_value = "cpu")]
        config: String,
        /// Classes, comma-separated (default: all six, in the benchmark's order).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// Seed of the photographs written for missing classes.
        #[arg(long, default_value_t = 2023)]
        seed: u64,
        /// Also train and tabulate the Table 1 reconstruction rows on this class.
        #[arg(long)]
        table1: Option<String>,
        /// Train every class with this many seeds (the configuration's `seed`, then +1, ...)
        /// and judge the criterion also on each class's mean over them.
        #[arg(long, default_value_t = 1)]
        seeds: usize,
    },
    /// Anomaly maps and scores of images.
    Predict {
        /// Run directory made by `diffad train`.
        #[arg(long)]
        run: PathBuf,
        /// Output folder (default `<run>/predictions`): `predictions.csv` and, mirroring the
        /// inputs, `<rel>.tiff` maps, `<rel>_mask.png` masks and `<rel>_panel.png` panels.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip unreadable images (listed at the end, exit status 1) instead of stopping.
        #[arg(long)]
        keep_going: bool,
        /// Image-score threshold (overrides the run's thresholds.json).
        #[arg(long)]
        threshold: Option<f32>,
        /// Pixel threshold of the masks (overrides the run's thresholds.json).
        #[arg(long)]
        pixel_threshold: Option<f32>,
        /// Images and folders of images (searched recursively).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Write a small MVTec-layout dataset of procedural textures.
    DemoData {
        /// Output folder (the class is written to `<out>/demo_wood`).
        #[arg(long)]
        out: PathBuf,
        /// Image side in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seed.
        #[arg(long, default_value_t = 2023)]
        seed: u64,
    },
    /// Write the real-photograph benchmark: one MVTec-layout class per
    /// photographed surface (brick, grass, gravel, wood, tissue, retina) with
    /// scratches, stains, holes, warps and contamination.
    PhotoData {
        /// Output folder (classes are written to `<out>/<class>`).
        #[arg(long)]
        out: PathBuf,
        /// Image side in pixels (the benchmark uses 64 and 128).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seed.
        #[arg(long, default_value_t = 2023)]
        seed: u64,
        /// Classes to write, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
    },
    /// Evaluate the raw-pixel 7x7 patch nearest-neighbour baseline on an
    /// MVTec class folder (memory from `train/good`), as `eval` does.
    Baseline {
        /// MVTec class folder with `train/good`, `test/` and `ground_truth/`.
        #[arg(long)]
        data: PathBuf,
        /// Output folder for `metrics.json` and `scores.csv` (default `<data>/baseline`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Image side (default: the training images' width).
        #[arg(long)]
        size: Option<usize>,
    },
    /// Write a run's VAE, denoiser and DDIM sampler as diffusers folders
    /// (`vae/`, `unet/`, `scheduler/`).
    Export {
        /// Run directory made by `diffad train` (its `vae` and `ldm` stages).
        #[arg(long)]
        run: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a configuration as TOML (a starting point for `--config`).
    Config {
        /// `paper`, `tiny`, `cpu` or a TOML file to check and print.
        #[arg(default_value = "paper")]
        preset: String,
    },
    /// demo-data + training of every stage with the `tiny` config + eval, on the CPU.
    Demo {
        /// Working folder (data, run and evaluation).
        #[arg(long, default_value = "diffad-demo")]
        out: PathBuf,
    },
    /// Measure sampling speed on seeded random weights (UNet forward at batch 1 and 8,
    /// DDIM reconstruction and the whole predict path at batch 8) on `--device` in
    /// `--dtype`; `scripts/gpu-check.sh` compares it with PyTorch.
    Speed {
        /// `paper`, `tiny`, `cpu` or a TOML file.
        #[arg(long, default_value = "paper")]
        config: String,
        /// Timed calls per measurement (after one warm-up); the median is reported.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Also write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run directory of the random weights (reused when it holds the same
        /// configuration; default: a temporary folder, removed afterwards).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Only write the configuration's diffusers configs (`vae/`, `unet/`,
        /// `scheduler/`) and `diffad.toml` to this folder, for `scripts/torch_speed.py`.
        #[arg(long)]
        write_configs: Option<PathBuf>,
    },
}

/// The run's model, in `dtype` when given (else the run's `inference.dtype`).
fn load_model(run: &RunDir, device: &Device, dtype: Option<Precision>) -> Result<DiffAd> {
    match dtype {
        Some(precision) => DiffAd::load_with_precision(run, device, precision),
        None => DiffAd::load(run, device),
    }
}

fn parse_device(spec: &str) -> Result<Device> {
    let bad = |message: String| Error::Config {
        path: PathBuf::from("--device"),
        message,
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| bad(e.to_string())),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n).map_err(|e| bad(e.to_string())),
            _ => Err(bad(format!("unknown device `{other}` (cpu, cuda, cuda:N)"))),
        },
    }
}

fn stages(arg: StageArg) -> Vec<Stage> {
    match arg {
        StageArg::All => Stage::ALL.to_vec(),
        StageArg::Vae => vec![Stage::Vae],
        StageArg::Ldm => vec![Stage::Ldm],
        StageArg::Seg => vec![Stage::Segmenter],
    }
}

/// Prints the libraries' `log` records (warnings such as a skipped texture
/// file) on stderr, one line each.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "{}: {}: {}",
                record.level().as_str().to_lowercase(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    // Reuse freed activations instead of page-faulting them in again.
    diffad::nn::tune_allocator();
    let cli = Cli::parse();
    if log::set_logger(&StderrLog).is_ok() {
        log::set_max_level(if cli.quiet {
            log::LevelFilter::Error
        } else {
            log::LevelFilter::Warn
        });
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let progress = !cli.quiet;
    match &cli.command {
        Command::Train {
            data,
            out,
            config,
            stage,
        } => {
            let device = parse_device(&cli.device)?;
            let config = resolve_config(out, config.as_deref())?;
            train(out, config, data, &device, stages(*stage), progress).map(drop)
        }
        Command::Eval {
            run,
            data,
            out,
            no_maps,
            no_overlays,
        } => {
            let device = parse_device(&cli.device)?;
            let run = RunDir::open(run)?;
            let class = MvtecClass::open_for_eval(data)?;
            let out = out.clone().unwrap_or_else(|| run.root().join("eval"));
            let options = EvalOptions {
                anomaly_maps: !no_maps,
                overlays: !no_overlays,
                thresholds: Thresholds::load(run.root())?,
            };
            eval(&run, &class, &out, &device, cli.dtype, &options, progress)
        }
        Command::Diagnose {
            run,
            data,
            out,
            synthetic,
            max_train,
        } => {
            let device = parse_device(&cli.device)?;
            let run = RunDir::open(run)?;
            let class = MvtecClass::open_for_eval(data)?;
            let out = out.clone().unwrap_or_else(|| run.root().join("diagnosis"));
            let options = diffad::diagnose::DiagnoseOptions {
                synthetic: *synthetic,
                max_train: *max_train,
            };
            let model = load_model(&run, &device, cli.dtype)?;
            let diagnosis = diffad::diagnose::diagnose(&model, &class, &options)?;
            let path = out.join(diffad::diagnose::DIAGNOSIS_FILE);
            diagnosis.write_json(&path)?;
            print!("{diagnosis}");
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Benchmark {
            data,
            out,
            classes,
            config,
            no_maps,
            no_overlays,
        } => {
            let device = parse_device(&cli.device)?;
            let options = diffad::benchmark::BenchmarkOptions {
                config: config.as_deref().map(Config::load).transpose()?,
                classes: classes.clone(),
                anomaly_maps: !no_maps,
                overlays: !no_overlays,
            };
            benchmark(data, out, &options, &device, progress)
        }
        Command::Quality {
            photos,
            runs,
            doc,
            size,
            config,
            classes,
            seed,
            table1,
            seeds,
        } => {
            let device = parse_device(&cli.device)?;
            let mut options = diffad::quality::QualityOptions::new(photos, runs, doc);
            options.seeds = *seeds;
            options.photos.size = *size;
            options.photos.seed = *seed;
            if !classes.is_empty() {
                options.photos.classes = classes.clone();
            }
            options.config = Config::load(config)?;
            options.config_name = config.clone();
            options.table1 = table1.clone();
            options.command = std::iter::once("diffad".to_owned())
                .chain(std::env::args().skip(1).map(|a| {
                    if a.contains(char::is_whitespace) {
                        format!("'{a}'")
                    } else {
                        a
                    }
                }))
                .collect::<Vec<_>>()
                .join(" ");
            quality(&options, &device, progress)
        }
        Command::Predict {
            run,
            out,
            keep_going,
            threshold,
            pixel_threshold,
            images,
        } => {
            let device = parse_device(&cli.device)?;
            let run = RunDir::open(run)?;
            let out = out
                .clone()
                .unwrap_or_else(|| run.root().join("predictions"));
            let options = PredictOptions {
                keep_going: *keep_going,
                threshold: *threshold,
                pixel_threshold: *pixel_threshold,
            };
            predict(&run, images, &out, &device, cli.dtype, &options, progress)
        }
        Command::DemoData { out, size, seed } => {
            let options = DemoDataOptions {
                size: *size,
                seed: *seed,
                ..DemoDataOptions::default()
            };
            let dir = write_demo_dataset(out, &options)?;
            report_written_class(&dir)
        }
        Command::PhotoData {
            out,
            size,
            seed,
            classes,
        } => photo_data(out, *size, *seed, classes),
        Command::Baseline { data, out, size } => {
            let out = out.clone().unwrap_or_else(|| data.join("baseline"));
            baseline(data, &out, *size)
        }
        Command::Config { preset } => {
            print!("{}", Config::load(preset)?.to_toml_string()?);
            Ok(())
        }
        Command::Export { run, out } => {
            let export = diffad::export::export_diffusers(&RunDir::open(run)?, out)?;
            for dir in [&export.vae, &export.unet, &export.scheduler] {
                println!("wrote {}/", dir.display());
            }
            Ok(())
        }
        Command::Demo { out } => demo(out, progress),
        Command::Speed {
            config,
            reps,
            json,
            run,
            write_configs,
        } => speed(
            &Config::load(config)?,
            &cli.device,
            cli.dtype,
            *reps,
            json.as_deref(),
            run.as_deref(),
            write_configs.as_deref(),
        ),
    }
}

/// The configuration of a run: `spec` (a preset name or a file) if given,
/// else the one saved in `out`, else `paper`.
fn resolve_config(out: &Path, spec: Option<&str>) -> Result<Config> {
    let saved = out.join(diffad::CONFIG_FILE);
    match spec {
        Some(spec) => Config::load(spec),
        None if saved.is_file() => Config::from_file(&saved),
        None => Ok(Config::paper()),
    }
}

/// Loads the training images (all of them, before anything is written),
/// then creates or reopens the run directory and trains.
fn train(
    out: &Path,
    config: Config,
    data: &Path,
    device: &Device,
    stages: Vec<Stage>,
    progress: bool,
) -> Result<RunDir> {
    let start = Instant::now();
    let size = config.data.image_size;
    let paths = training_images(data)?;
    eprintln!(
        "loading {} training images from {} at {size}x{size}",
        paths.len(),
        data.display()
    );
    let images = load_images(&paths, size)?;
    let run = RunDir::create(out, config)?;
    let reports = diffad::train(
        &run,
        &images,
        device,
        &TrainOptions { stages },
        &mut |label| Bar::boxed(progress, label),
    )?;
    println!(
        "trained {} ({:.1} s):",
        run.root().display(),
        start.elapsed().as_secs_f64()
    );
    for r in &reports {
        println!("  {r}");
    }
    Ok(run)
}

fn eval(
    run: &RunDir,
    class: &MvtecClass,
    out: &Path,
    device: &Device,
    dtype: Option<Precision>,
    options: &EvalOptions,
    progress: bool,
) -> Result<()> {
    let model = load_model(run, device, dtype)?;
    let result = evaluate(
        &model,
        class,
        out,
        options,
        Bar::boxed(progress, "eval").as_mut(),
    )?;
    println!("{}", result.metrics);
    println!(
        "{}  ({:.3} s/image)",
        result.metrics.headline(),
        result.seconds_per_image
    );
    if let Some(t) = &result.metrics.at_thresholds {
        let show = |d: &diffad::report::Decisions| {
            format!(
                "{:.4} (precision {:.1}, recall {:.1}, F1 {:.1})",
                d.threshold,
                100.0 * d.precision,
                100.0 * d.recall,
                100.0 * d.f1
            )
        };
        let pixel = t.pixel.as_ref().map_or("- (no masks)".to_string(), show);
        println!("stored thresholds: image {}  pixel {pixel}", show(&t.image));
    }
    println!("wrote {}", result.metrics_json.display());
    println!("wrote {}", result.scores_csv.display());
    if options.anomaly_maps {
        println!("wrote {}/", result.anomaly_maps_dir.display());
    }
    if options.overlays {
        println!("wrote {}/", result.overlays_dir.display());
    }
    Ok(())
}

fn benchmark(
    data: &Path,
    out: &Path,
    options: &diffad::benchmark::BenchmarkOptions,
    device: &Device,
    progress: bool,
) -> Result<()> {
    let summary = diffad::benchmark::run_benchmark(data, out, options, device, &mut |label| {
        Bar::boxed(progress, label)
    })?;
    for class in &summary.classes {
        let trained: Vec<&str> = class
            .stages
            .iter()
            .filter(|s| !s.skipped)
            .map(|s| s.stage.name())
            .collect();
        eprintln!(
            "{}: {} ({})",
            class.row.name,
            if trained.is_empty() {
                "already trained".to_string()
            } else {
                format!("trained {}", trained.join(", "))
            },
            class.run.display()
        );
    }
    print!("{}", diffad::benchmark::summary_markdown(&summary.rows()));
    println!("wrote {}", summary.summary_csv.display());
    println!("wrote {}", summary.summary_md.display());
    Ok(())
}

fn quality(
    options: &diffad::quality::QualityOptions,
    device: &Device,
    progress: bool,
) -> Result<()> {
    let report = diffad::quality::regenerate_quality(options, device, &mut |label| {
        Bar::boxed(progress, label)
    })?;
    for dir in &report.photos_written {
        report_written_class(dir)?;
    }
    let percent = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1}", 100.0 * v));
    for c in &report.classes {
        println!(
            "{}: pixel AP {} (baseline {}), AU-PRO {} (baseline {}), trained in {:.0} s{}",
            c.name,
            percent(c.model.pixel_ap),
            percent(c.baseline.pixel_ap),
            percent(c.model.aupro),
            percent(c.baseline.aupro),
            c.train.total,
            if c.trained_now.is_empty() {
                " (reused)"
            } else {
                ""
            }
        );
    }
    let criterion = report.criterion();
    println!(
        "issue 15 criterion {}",
        if criterion.holds {
            "holds"
        } else {
            "does not hold"
        }
    );
    println!("wrote {}", report.doc.display());
    Ok(())
}

fn predict(
    run: &RunDir,
    paths: &[PathBuf],
    out: &Path,
    device: &Device,
    dtype: Option<Precision>,
    options: &PredictOptions,
    progress: bool,
) -> Result<()> {
    let model = load_model(run, device, dtype)?;
    let thresholds = Thresholds::load(run.root())?;
    let start = Instant::now();
    let summary = predict_paths(
        &model,
        thresholds.as_ref(),
        paths,
        out,
        options,
        Bar::boxed(progress, "predict").as_mut(),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(note) = &summary.note {
        eprintln!("note: {note}");
    }
    for r in &summary.rows {
        let label = match r.anomalous {
            Some(true) => "\tanomalous",
            Some(false) => "\tnormal",
            None => "",
        };
        println!("{}\t{:.6}{label}", r.path.display(), r.score);
    }
    for (path, reason) in &summary.failures {
        eprintln!("skipped {}: {reason}", path.display());
    }
    let n = summary.rows.len().max(1);
    eprintln!(
        "{} images in {:.2} s ({:.3} s/image); wrote {}",
        summary.rows.len(),
        seconds,
        seconds / n as f64,
        summary.csv.display()
    );
    if summary.failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Layout {
            path: out.to_path_buf(),
            reason: format!("{} input(s) could not be read", summary.failures.len()),
        })
    }
}

fn demo(out: &Path, progress: bool) -> Result<()> {
    let start = Instant::now();
    let options = DemoDataOptions::default();
    let class_dir = out.join("data").join(&options.class_name);
    if class_dir.is_dir() {
        eprintln!("[1/3] reusing demo data in {}", class_dir.display());
    } else {
        eprintln!("[1/3] writing demo data to {}", class_dir.display());
        write_demo_dataset(&out.join("data"), &options)?;
    }
    let class = MvtecClass::open_for_eval(&class_dir)?;
    eprintln!(
        "[2/3] training the tiny config on {} good images (CPU)",
        class.train.len()
    );
    let device = Device::Cpu;
    let run = train(
        &out.join("run"),
        Config::tiny(),
        &class_dir,
        &device,
        Stage::ALL.to_vec(),
        progress,
    )?;
    eprintln!("[3/3] evaluating on {} test images", class.test.len());
    let eval_out = run.root().join("eval");
    eval(
        &run,
        &class,
        &eval_out,
        &device,
        None,
        &EvalOptions {
            thresholds: Thresholds::load(run.root())?,
            ..EvalOptions::default()
        },
        progress,
    )?;
    println!(
        "demo finished in {:.1} s. Try: diffad predict --run {} {}",
        start.elapsed().as_secs_f64(),
        run.root().display(),
        class
            .test
            .iter()
            .find(|s| s.is_anomalous())
            .map(|s| s.image.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// `diffad speed`: the configs for PyTorch, or the measurements of `config` (printed as a
/// table, and as JSON when asked) in `dtype` (default: the config's `inference.dtype`).
fn speed(
    config: &Config,
    device: &str,
    dtype: Option<Precision>,
    reps: usize,
    json: Option<&Path>,
    run: Option<&Path>,
    write_configs: Option<&Path>,
) -> Result<()> {
    if let Some(dir) = write_configs {
        diffad::speed::write_diffusers_configs(config, dir)?;
        println!("wrote {}/", dir.display());
        return Ok(());
    }
    let spec = device;
    let device = parse_device(spec)?;
    let precision = dtype.unwrap_or(config.inference.dtype);
    let temporary = std::env::temp_dir().join(format!("diffad-speed-{}", std::process::id()));
    let root = run.unwrap_or(&temporary);
    eprintln!(
        "measuring on {spec} in {precision} (random weights in {})",
        root.display()
    );
    let options = diffad::speed::SpeedOptions {
        reps,
        ..Default::default()
    };
    let report = diffad::speed::measure_speed(config, root, &device, precision, &options);
    if run.is_none() {
        diffad::io::remove_dir(&temporary)?;
    }
    let report = report?;
    print!("{report}");
    if let Some(path) = json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn photo_data(out: &Path, size: usize, seed: u64, classes: &[String]) -> Result<()> {
    let defaults = diffad::photo_data::PhotoDataOptions::default();
    let options = diffad::photo_data::PhotoDataOptions {
        size,
        seed,
        classes: if classes.is_empty() {
            defaults.classes.clone()
        } else {
            classes.to_vec()
        },
        ..defaults
    };
    for dir in diffad::photo_data::write_photo_dataset(out, &options)? {
        report_written_class(&dir)?;
    }
    Ok(())
}

/// Prints what a dataset writer wrote into the class folder `dir`.
fn report_written_class(dir: &Path) -> Result<()> {
    let class = MvtecClass::open(dir)?;
    println!(
        "wrote {}: {} training images, {} test images ({})",
        dir.display(),
        class.train.len(),
        class.test.len(),
        class.defects().join(", ")
    );
    Ok(())
}

fn baseline(data: &Path, out: &Path, size: Option<usize>) -> Result<()> {
    let class = MvtecClass::open_for_eval(data)?;
    let config = diffad::baseline::PatchKnnConfig::default();
    let result = diffad::baseline::evaluate_baseline(&class, size, out, &config)?;
    println!("{}", result.metrics);
    println!(
        "{} (patch kNN baseline, {} memory patches at {}x{}; {:.3} s/image)",
        result.metrics.headline(),
        result.memory_len,
        result.size,
        result.size,
        result.seconds_per_image,
    );
    println!("wrote {}", result.metrics_json.display());
    println!("wrote {}", result.scores_csv.display());
    Ok(())
}
