//! The `diffad` command-line tool: train DiffAD on a folder of good images,
//! evaluate it on an MVTec AD class, predict anomaly maps, or run the demo.
//!
//! Errors are printed as one line naming the file at fault, with exit code 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::{Parser, Subcommand, ValueEnum};
use diffad::data::{load_images, training_images, MvtecClass};
use diffad::demo_data::{write_demo_dataset, DemoDataOptions};
use diffad::eval::{evaluate, EvalOptions};
use diffad::progress::Bar;
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
        /// `paper`, `tiny` or a TOML file (default: the run's saved config, else `paper`).
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
    /// Anomaly maps and scores of images.
    Predict {
        /// Run directory made by `diffad train`.
        #[arg(long)]
        run: PathBuf,
        /// Output folder for `<stem>.tiff` and `<stem>.png` (default `<run>/predictions`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Images to score.
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
    /// Print a configuration as TOML (a starting point for `--config`).
    Config {
        /// `paper`, `tiny` or a TOML file to check and print.
        #[arg(default_value = "paper")]
        preset: String,
    },
    /// demo-data + training of every stage with the `tiny` config + eval, on the CPU.
    Demo {
        /// Working folder (data, run and evaluation).
        #[arg(long, default_value = "diffad-demo")]
        out: PathBuf,
    },
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
            };
            eval(&run, &class, &out, &device, &options, progress)
        }
        Command::Predict { run, out, images } => {
            let device = parse_device(&cli.device)?;
            let run = RunDir::open(run)?;
            let out = out
                .clone()
                .unwrap_or_else(|| run.root().join("predictions"));
            predict(&run, images, &out, &device)
        }
        Command::DemoData { out, size, seed } => {
            let options = DemoDataOptions {
                size: *size,
                seed: *seed,
                ..DemoDataOptions::default()
            };
            let dir = write_demo_dataset(out, &options)?;
            let class = MvtecClass::open(&dir)?;
            println!(
                "wrote {}: {} training images, {} test images ({})",
                dir.display(),
                class.train.len(),
                class.test.len(),
                class.defects().join(", ")
            );
            Ok(())
        }
        Command::Config { preset } => {
            print!("{}", Config::load(preset)?.to_toml_string()?);
            Ok(())
        }
        Command::Demo { out } => demo(out, progress),
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
    options: &EvalOptions,
    progress: bool,
) -> Result<()> {
    let model = DiffAd::load(run, device)?;
    let result = evaluate(
        &model,
        class,
        out,
        options,
        Bar::boxed(progress, "eval").as_mut(),
    )?;
    println!("{}", result.metrics.report);
    println!(
        "class {}: image AUROC {:.1}  pixel AUROC {:.1}  pixel AP {:.1}  AU-PRO {:.1}  pixel F1-max {:.1}  ({:.3} s/image)",
        result.metrics.class,
        100.0 * result.metrics.image_auroc,
        100.0 * result.metrics.pixel_auroc,
        100.0 * result.metrics.pixel_ap,
        100.0 * result.metrics.aupro,
        100.0 * result.metrics.pixel_f1_max,
        result.seconds_per_image,
    );
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

fn predict(run: &RunDir, paths: &[PathBuf], out: &Path, device: &Device) -> Result<()> {
    let size = run.config().data.image_size;
    // Read every input before writing anything.
    let images = load_images(paths, size)?;
    let model = DiffAd::load(run, device)?;
    let start = Instant::now();
    let predictions = model.predict_batch(&images)?;
    let seconds = start.elapsed().as_secs_f64();
    for ((path, image), p) in paths.iter().zip(&images).zip(&predictions) {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let (w, h) = image::image_dimensions(path).map_err(|source| Error::UnreadableImage {
            path: path.clone(),
            source,
        })?;
        let full = diffad::eval::resize_map(&p.map, h as usize, w as usize)?;
        diffad::report::write_tiff(&out.join(format!("{stem}.tiff")), &full)?;
        diffad::report::write_overlay(&out.join(format!("{stem}.png")), image, &p.map)?;
        println!("{}\t{:.6}", path.display(), p.score);
    }
    eprintln!(
        "{} images in {:.2} s ({:.3} s/image); maps in {}",
        paths.len(),
        seconds,
        seconds / paths.len() as f64,
        out.display()
    );
    Ok(())
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
        &EvalOptions::default(),
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
