//! Prediction on production folders: files and folders in (folders searched
//! recursively for images), streamed through the model `inference.batch_size`
//! images at a time (memory bounded by one batch, not by the folder), and an
//! auditable folder out that mirrors the input tree, so no two inputs share an
//! output:
//!
//! ```text
//! <out>/predictions.csv                 path, score, normalised_score, label, threshold
//! <out>/<input>/<rel>.tiff              float32 anomaly map at the image's own size
//! <out>/<input>/<rel>_mask.png          map >= pixel threshold (0/255), when one is known
//! <out>/<input>/<rel>_panel.png         x_a | x_r | x_inter | map | predicted mask
//! ```
//!
//! `<input>` is the name of the folder given (or nothing for a file given
//! directly) and `<rel>` the image's path below it without its extension.
//!
//! Decisions come from the run's stored [`Thresholds`] (or explicit ones in
//! [`PredictOptions`]); without any, scores stay raw and the summary says so.
//! An unreadable image stops the run with its path, or with
//! [`PredictOptions::keep_going`] is reported in the summary and skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use diffad_nn::progress::Progress;
use rayon::prelude::*;

use crate::data::{list_images_in, load_image, Plane, RgbImage};
use crate::error::{Error, Result};
use crate::eval::resize_map;
use crate::io::{save_png, write_atomic};
use crate::model::DiffAd;
use crate::report::{panel, write_tiff};
use crate::thresholds::Thresholds;

/// What [`predict_paths`] does besides scoring.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PredictOptions {
    /// Skip unreadable images (listed in [`PredictSummary::failures`]) instead
    /// of stopping at the first.
    pub keep_going: bool,
    /// Image-score threshold overriding the run's stored one.
    pub threshold: Option<f32>,
    /// Pixel threshold overriding the run's stored one.
    pub pixel_threshold: Option<f32>,
}

/// One image to predict: its file and where its outputs go below `out`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictInput {
    /// The image file.
    pub path: PathBuf,
    /// Its outputs' path below the output folder, without extension.
    pub relative: PathBuf,
}

/// Expands files and folders (recursively, images only, sorted) into inputs
/// whose relative output paths mirror the input tree. Errors: a path that
/// does not exist, a folder without images ([`Error::EmptyFolder`]), or two
/// inputs that would write the same outputs ([`Error::Layout`], naming both).
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PredictInput>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let files = list_images_in(path, true)?;
            let name = path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(PathBuf::from))
                .unwrap_or_default();
            for file in files {
                let below = file.strip_prefix(path).unwrap_or(&file).with_extension("");
                inputs.push(PredictInput {
                    relative: name.join(below),
                    path: file,
                });
            }
        } else if path.is_file() {
            inputs.push(PredictInput {
                path: path.clone(),
                relative: PathBuf::from(path.file_stem().unwrap_or_default()),
            });
        } else {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    let mut seen: BTreeMap<&Path, &Path> = BTreeMap::new();
    for input in &inputs {
        if let Some(other) = seen.insert(&input.relative, &input.path) {
            return Err(Error::Layout {
                path: input.path.clone(),
                reason: format!(
                    "its outputs would overwrite those of {} (both `{}`); predict them in separate runs or folders",
                    other.display(),
                    input.relative.display()
                ),
            });
        }
    }
    Ok(inputs)
}

/// One row of `predictions.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionRow {
    /// The image file.
    pub path: PathBuf,
    /// The raw image score `max(avg_pool(map, k))`.
    pub score: f32,
    /// The score normalised so the threshold is 0.5, when thresholds with a
    /// score range are stored.
    pub normalised: Option<f32>,
    /// Anomalous or not, when an image threshold is known.
    pub anomalous: Option<bool>,
    /// The image threshold used, if any.
    pub threshold: Option<f32>,
}

/// What [`predict_paths`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictSummary {
    /// One row per image predicted, in input order.
    pub rows: Vec<PredictionRow>,
    /// Images skipped with [`PredictOptions::keep_going`], with the reason.
    pub failures: Vec<(PathBuf, String)>,
    /// `<out>/predictions.csv`.
    pub csv: PathBuf,
    /// Why there are no decisions, when no threshold is known.
    pub note: Option<String>,
}

/// Predicts every image of `paths` (see the module documentation) into `out`;
/// `thresholds` are the run's stored ones ([`Thresholds::load`]), which
/// `options` may override; `progress` counts images.
pub fn predict_paths(
    model: &DiffAd,
    thresholds: Option<&Thresholds>,
    paths: &[PathBuf],
    out: &Path,
    options: &PredictOptions,
    progress: &mut dyn Progress,
) -> Result<PredictSummary> {
    let inputs = collect_inputs(paths)?;
    let config = model.config();
    let size = config.data.image_size;
    let image_threshold = options.threshold.or(thresholds.map(|t| t.image));
    let pixel_threshold = options.pixel_threshold.or(thresholds.map(|t| t.pixel));
    let normaliser = thresholds.map(|t| Thresholds {
        image: image_threshold.unwrap_or(t.image),
        ..t.clone()
    });
    let note = image_threshold.is_none().then(|| {
        "no threshold stored with this run (thresholds.json) and none given: scores are raw, without labels".to_string()
    });
    let mut rows = Vec::with_capacity(inputs.len());
    let mut failures = Vec::new();
    progress.start(Some(inputs.len() as u64), 0);
    for chunk in inputs.chunks(config.inference.batch_size.max(1)) {
        let loaded: Vec<Result<(RgbImage, (u32, u32))>> = chunk
            .par_iter()
            .map(|input| {
                let dims = image::image_dimensions(&input.path).map_err(|source| {
                    Error::UnreadableImage {
                        path: input.path.clone(),
                        source,
                    }
                })?;
                Ok((load_image(&input.path, size)?, dims))
            })
            .collect();
        let mut batch = Vec::with_capacity(chunk.len());
        for (input, result) in chunk.iter().zip(loaded) {
            match result {
                Ok((image, dims)) => batch.push((input, image, dims)),
                Err(e) if options.keep_going => failures.push((input.path.clone(), e.to_string())),
                Err(e) => return Err(e),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let images: Vec<RgbImage> = batch.iter().map(|b| b.1.clone()).collect();
        let analyses = model.analyse_batch(&images)?;
        for ((input, image, (w, h)), a) in batch.iter().zip(&analyses) {
            let p = &a.prediction;
            let base = out.join(&input.relative);
            let with_suffix = |suffix: &str| {
                let mut name = base.file_name().unwrap_or_default().to_os_string();
                name.push(suffix);
                base.with_file_name(name)
            };
            write_tiff(
                &with_suffix(".tiff"),
                &resize_map(&p.map, *h as usize, *w as usize)?,
            )?;
            let predicted = match pixel_threshold {
                Some(t) => {
                    let flags: Vec<bool> = p.map.as_slice().iter().map(|&v| v >= t).collect();
                    let mask = Plane::from_bool(size, size, &flags)?;
                    save_png(
                        &with_suffix("_mask.png"),
                        &image::DynamicImage::from(mask.to_luma8()),
                    )?;
                    mask
                }
                None => Plane::zeros(size, size)?,
            };
            let tiles = panel(
                image,
                &a.reconstruction,
                a.middle.as_ref(),
                &p.map,
                &predicted,
            )?;
            save_png(
                &with_suffix("_panel.png"),
                &image::DynamicImage::from(tiles),
            )?;
            rows.push(PredictionRow {
                path: input.path.clone(),
                score: p.score,
                normalised: normaliser.as_ref().map(|t| t.normalise(p.score)),
                anomalous: image_threshold.map(|t| p.score >= t),
                threshold: image_threshold,
            });
        }
        progress.step((rows.len() + failures.len()) as u64, 0.0);
    }
    progress.finish();
    let csv = out.join("predictions.csv");
    write_predictions_csv(&csv, &rows)?;
    Ok(PredictSummary {
        rows,
        failures,
        csv,
        note,
    })
}

/// Writes `predictions.csv` (`path,score,normalised_score,label,threshold`;
/// label `anomalous`/`normal`, empty fields where unknown) atomically.
pub fn write_predictions_csv(path: &Path, rows: &[PredictionRow]) -> Result<()> {
    let mut text = String::from("path,score,normalised_score,label,threshold\n");
    let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let shown = r.path.display().to_string();
        let quoted = if shown.contains([',', '"', '\n']) {
            format!("\"{}\"", shown.replace('"', "\"\""))
        } else {
            shown
        };
        let label = match r.anomalous {
            Some(true) => "anomalous",
            Some(false) => "normal",
            None => "",
        };
        let _ = writeln!(
            text,
            "{quoted},{},{},{label},{}",
            r.score,
            opt(r.normalised),
            opt(r.threshold)
        );
    }
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn folders_are_searched_recursively_and_mirrored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("line3");
        touch_png(&root.join("hole/000.png"));
        touch_png(&root.join("scratch/000.png"));
        touch_png(&root.join("top.png"));
        std::fs::write(root.join("notes.txt"), "not an image").unwrap();
        let single = dir.path().join("part_7.png");
        touch_png(&single);
        let inputs = collect_inputs(&[root.clone(), single.clone()]).unwrap();
        let rel: Vec<String> = inputs
            .iter()
            .map(|i| i.relative.display().to_string())
            .collect();
        assert_eq!(
            rel,
            vec!["line3/hole/000", "line3/scratch/000", "line3/top", "part_7"]
        );
        assert_eq!(inputs[3].path, single);
        // Two inputs with the same outputs are refused, naming both.
        let err = collect_inputs(&[single.clone(), single.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("part_7"), "{err}");
        // Missing paths and empty folders are typed errors.
        assert!(matches!(
            collect_inputs(&[dir.path().join("nope")]),
            Err(Error::Io { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(matches!(
            collect_inputs(&[empty]),
            Err(Error::EmptyFolder { .. })
        ));
    }

    #[test]
    fn predictions_csv_quotes_paths_and_leaves_unknowns_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.csv");
        let rows = vec![
            PredictionRow {
                path: "a,b.png".into(),
                score: 0.25,
                normalised: None,
                anomalous: None,
                threshold: None,
            },
            PredictionRow {
                path: "c.png".into(),
                score: 0.75,
                normalised: Some(0.5),
                anomalous: Some(true),
                threshold: Some(0.75),
            },
        ];
        write_predictions_csv(&path, &rows).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "path,score,normalised_score,label,threshold\n\"a,b.png\",0.25,,,\nc.png,0.75,0.5,anomalous,0.75\n"
        );
    }
}
