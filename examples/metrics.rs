//! Evaluate anomaly scores with `diffad-metrics` and print the report.
//!
//! ```text
//! cargo run --release --example metrics                      # built-in synthetic category
//! cargo run --release --example metrics -- --csv scores.csv  # columns score,label
//! cargo run --release --example metrics -- --maps MAPS --masks MASKS [--kernel 21]
//!                                          [--fpr-limit 0.3] [--json report.json]
//! cargo run --release --example metrics -- --synthetic 100 256   # bench-sized, for memory
//! ```
//!
//! PNG folders: every `*.png` under `MAPS` (one level of sub-folders allowed,
//! e.g. `MAPS/<defect>/<stem>.png`, the sub-folder naming the defect type) is
//! an anomaly map, read as grey levels scaled to `[0, 1]`. Its mask is the
//! PNG with the same relative path and stem under `MASKS`, optionally with
//! MVTec AD's `_mask` suffix (`MASKS/<defect>/<stem>_mask.png`); a grey
//! level of 128 or more is defective. A map without a mask is a normal image
//! (MVTec AD has no masks for `good`).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use diffad_metrics::{classification_metrics, Evaluator, PixelMetrics, DRAEM_KERNEL};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type AnyResult<T> = Result<T, Box<dyn Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", USAGE);
        return Ok(());
    }
    let kernel: usize = value("--kernel").map_or(Ok(DRAEM_KERNEL), str::parse)?;
    let fpr_limit: f64 = value("--fpr-limit").map_or(Ok(0.3), str::parse)?;
    let json = value("--json").map(PathBuf::from);
    if let Some(csv) = value("--csv") {
        return evaluate_csv(Path::new(csv));
    }
    if let Some(i) = args.iter().position(|a| a == "--synthetic") {
        let images = args.get(i + 1).map_or(Ok(100), |v| v.parse())?;
        let size = args.get(i + 2).map_or(Ok(256), |v| v.parse())?;
        return evaluate_synthetic_pixels(images, size, fpr_limit);
    }
    let mut eval = Evaluator::with_options(kernel, fpr_limit)?;
    match (value("--maps"), value("--masks")) {
        (Some(maps), Some(masks)) => add_png_folders(&mut eval, Path::new(maps), Path::new(masks))?,
        (None, None) => {
            println!("no input given: evaluating a built-in synthetic category (see --help)\n");
            add_synthetic(&mut eval, 24, 64)?;
        }
        _ => return Err("--maps and --masks go together".into()),
    }
    let report = eval.finish()?;
    println!("{report}");
    if let Some(path) = json {
        report.write_json(&path)?;
        println!("\nJSON report written to {}", path.display());
    } else {
        println!("\n{}", report.to_json()?);
    }
    Ok(())
}

const USAGE: &str = "usage: metrics [--csv FILE | --maps DIR --masks DIR | --synthetic IMAGES SIZE]
                [--kernel K (21)] [--fpr-limit L (0.3)] [--json OUT]";

/// `score,label` rows (a header line is skipped; label 0/1 or false/true).
fn evaluate_csv(path: &Path) -> AnyResult<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let (Some(score), Some(label)) = (fields.next(), fields.next()) else {
            return Err(
                format!("{}:{}: expected `score,label`", path.display(), line_no + 1).into(),
            );
        };
        let Ok(score) = score.parse::<f32>() else {
            if line_no == 0 {
                continue; // header
            }
            return Err(format!("{}:{}: bad score {score:?}", path.display(), line_no + 1).into());
        };
        let label = match label {
            "1" | "true" | "True" => true,
            "0" | "false" | "False" => false,
            other => {
                return Err(
                    format!("{}:{}: bad label {other:?}", path.display(), line_no + 1).into(),
                )
            }
        };
        scores.push(score);
        labels.push(label);
    }
    let m = classification_metrics(&scores, &labels)?;
    println!(
        "{} samples, {} positive",
        scores.len(),
        labels.iter().filter(|&&l| l).count()
    );
    println!("AUROC   {:.6}", m.auroc);
    println!("AP      {:.6}", m.average_precision);
    println!(
        "F1-max  {:.6} at threshold {}",
        m.f1_max.f1, m.f1_max.threshold
    );
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(())
}

/// PNG files under `root` (and its direct sub-folders), keyed by relative
/// path without extension.
fn list_pngs(root: &Path) -> AnyResult<BTreeMap<PathBuf, PathBuf>> {
    let mut found = BTreeMap::new();
    let read = |dir: &Path| {
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))
    };
    for entry in read(root)? {
        let path = entry?.path();
        if path.is_dir() {
            for inner in read(&path)? {
                let inner = inner?.path();
                if inner
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("png"))
                {
                    found.insert(inner.strip_prefix(root)?.with_extension(""), inner);
                }
            }
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            found.insert(path.strip_prefix(root)?.with_extension(""), path);
        }
    }
    Ok(found)
}

fn add_png_folders(eval: &mut Evaluator, maps: &Path, masks: &Path) -> AnyResult<()> {
    let map_files = list_pngs(maps)?;
    if map_files.is_empty() {
        return Err(format!("no PNG anomaly maps in {}", maps.display()).into());
    }
    let mut mask_files = BTreeMap::new();
    for (key, path) in list_pngs(masks)? {
        let stem = key.file_name().and_then(|s| s.to_str()).unwrap_or_default();
        let key = match stem.strip_suffix("_mask") {
            Some(base) => key.with_file_name(base),
            None => key,
        };
        mask_files.insert(key, path);
    }
    for (key, map_path) in &map_files {
        let map = image::open(map_path)
            .map_err(|e| format!("cannot read anomaly map {}: {e}", map_path.display()))?
            .to_luma32f();
        let (width, height) = (map.width() as usize, map.height() as usize);
        let mask: Vec<bool> = match mask_files.get(key) {
            Some(mask_path) => {
                let mask = image::open(mask_path)
                    .map_err(|e| format!("cannot read mask {}: {e}", mask_path.display()))?
                    .to_luma8();
                if (mask.width() as usize, mask.height() as usize) != (width, height) {
                    return Err(format!(
                        "{} is {}x{} but its map {} is {width}x{height}",
                        mask_path.display(),
                        mask.width(),
                        mask.height(),
                        map_path.display()
                    )
                    .into());
                }
                mask.pixels().map(|p| p.0[0] >= 128).collect()
            }
            None => vec![false; width * height],
        };
        let defect = key
            .parent()
            .and_then(|p| p.to_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("(top level)");
        eval.add(defect, map.as_raw(), &mask, width, height)
            .map_err(|e| format!("{}: {e}", map_path.display()))?;
    }
    println!("{} anomaly maps from {}\n", map_files.len(), maps.display());
    Ok(())
}

/// One synthetic image: for anomalous images 1-3 elliptic defects covering
/// about 6 % of the pixels; scores in [0, 1], higher on defects by `lift`.
fn synthetic_image(seed: u64, size: usize, anomalous: bool, lift: f32) -> (Vec<f32>, Vec<bool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mask = vec![false; size * size];
    if anomalous {
        let target = size * size * 6 / 100;
        let defects = rng.random_range(1..=3);
        for _ in 0..defects {
            let area = target as f64 / f64::from(defects);
            let aspect = rng.random_range(0.4..2.5f64);
            let a = (area / std::f64::consts::PI * aspect).sqrt();
            let b = area / std::f64::consts::PI / a;
            let cx = rng.random_range(0.2..0.8) * size as f64;
            let cy = rng.random_range(0.2..0.8) * size as f64;
            for y in 0..size {
                for x in 0..size {
                    let (dx, dy) = ((x as f64 - cx) / a, (y as f64 - cy) / b);
                    if dx * dx + dy * dy <= 1.0 {
                        mask[y * size + x] = true;
                    }
                }
            }
        }
    }
    let map = mask
        .iter()
        .map(|&d| {
            let noise: f32 = (0..3).map(|_| rng.random::<f32>()).sum::<f32>() / 3.0;
            (0.7 * noise + if d { lift } else { 0.0 }).clamp(0.0, 1.0)
        })
        .collect();
    (map, mask)
}

/// A small synthetic category: "good" images and two defect types, one
/// easier to find than the other.
fn add_synthetic(eval: &mut Evaluator, images: usize, size: usize) -> AnyResult<()> {
    for i in 0..images {
        let (defect, lift) = match i % 3 {
            0 => ("good", 0.0),
            1 => ("scratch", 0.35),
            _ => ("stain", 0.15),
        };
        let (map, mask) = synthetic_image(0x5EED + i as u64, size, defect != "good", lift);
        eval.add(defect, &map, &mask, size, size)?;
    }
    Ok(())
}

/// The bench workload through the streaming accumulator, generating one map
/// at a time (for peak-memory measurements with `/usr/bin/time -v`).
fn evaluate_synthetic_pixels(images: usize, size: usize, fpr_limit: f64) -> AnyResult<()> {
    let start = Instant::now();
    let mut pixels = PixelMetrics::with_fpr_limit(fpr_limit)?;
    pixels.reserve(images * size * size);
    for i in 0..images {
        let (map, mask) = synthetic_image(0xD1FF_AD00 + i as u64, size, i % 2 == 1, 0.25);
        pixels.update(&map, &mask, size, size)?;
    }
    let generated = start.elapsed();
    let report = pixels.finish()?;
    println!(
        "{images} maps of {size}x{size}: {} pixels, {} anomalous, {} regions",
        report.pixels, report.anomalous_pixels, report.regions
    );
    println!(
        "pixel AUROC {:.6}  AP {:.6}  AU-PRO@{} {:.6}  F1-max {:.6}",
        report.auroc, report.average_precision, report.fpr_limit, report.aupro, report.f1_max.f1
    );
    println!(
        "generate + update {:.0} ms, finish {:.0} ms",
        generated.as_secs_f64() * 1e3,
        (start.elapsed() - generated).as_secs_f64() * 1e3
    );
    Ok(())
}
