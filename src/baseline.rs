//! The raw-pixel patch nearest-neighbour baseline (`diffad baseline`): no
//! learning, the yardstick every DiffAD figure is compared with.
//!
//! * **Memory**: the `7 x 7` RGB patches (dimension 147) of the training
//!   images at every `memory_stride`-th row and column (default 2), the
//!   images reflect-padded by 3 pixels (NumPy's `reflect`: the edge pixel is
//!   not repeated) so border patches exist; if there are more than
//!   `max_memory` patches, a seeded random subset of that many is kept.
//! * **Anomaly map**: for every test pixel, the Euclidean (L2) distance from
//!   its patch (same reflect padding, stride 1) to the nearest memory patch:
//!   `a(p) = min_m ||q_p - m||_2`, searched exactly.
//! * **Image score**: the maximum of the map (`score_kernel = 1`; a larger
//!   odd kernel takes the maximum of the box-filtered map, as the model's
//!   evaluation does).
//!
//! The exact search is a blocked matrix product: with the patches centred on
//! the memory's mean, `||q - m||^2 = ||q||^2 + (||m||^2 - 2 q.m)`, and the
//! bracket for a block of queries against a block of memory is one product
//! of `[q, 1]` with `[-2 m, ||m||^2]` (Candle's CPU matmul, `gemm`); test
//! images run in parallel (Rayon). Maps depend on nothing but the data and
//! the seed, not on the thread count.
//!
//! Evaluation goes through [`diffad_metrics::Evaluator`] exactly as
//! [`crate::eval::evaluate`] evaluates the model (image AUROC, pixel AUROC,
//! pixel AP, AU-PRO up to FPR 0.3, per defect type), and writes the same
//! `metrics.json` and `scores.csv`.
//!
//! ```
//! use diffad::baseline::{PatchKnn, PatchKnnConfig};
//! use diffad::data::RgbImage;
//! let good = RgbImage::filled(16, 16, [0.5, 0.5, 0.5]).unwrap();
//! let knn = PatchKnn::fit(&[good.clone()], &PatchKnnConfig::default()).unwrap();
//! let mut bad = good.clone();
//! bad.view_mut()[[8, 8, 0]] = 1.0;
//! let map = knn.anomaly_map(&bad).unwrap();
//! assert!(map.view()[[8, 8]] > 0.4 && map.view()[[0, 0]] < 1e-3);
//! ```

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{load_images, MvtecClass, RgbImage};
use crate::error::{Error, Result};
use crate::report::{write_scores_csv, AnomalyMap, Metrics, ScoreRow};

/// Settings of [`PatchKnn`] and [`evaluate_baseline`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchKnnConfig {
    /// Patch side (odd): 7.
    pub patch: usize,
    /// Memory patches are taken at every `memory_stride`-th row and column
    /// of the training images: 2.
    pub memory_stride: usize,
    /// At most this many memory patches (a seeded random subset beyond it):
    /// 32768, which keeps all of 40 64x64 images at stride 2.
    pub max_memory: usize,
    /// Seed of the memory subset.
    pub seed: u64,
    /// Box filter of the image score (odd; 1 = the map's maximum).
    pub score_kernel: usize,
}

impl Default for PatchKnnConfig {
    fn default() -> Self {
        Self {
            patch: 7,
            memory_stride: 2,
            max_memory: 32_768,
            seed: 0,
            score_kernel: 1,
        }
    }
}

impl PatchKnnConfig {
    fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Config {
                path: "<baseline>".into(),
                message,
            })
        };
        if self.patch.is_multiple_of(2) {
            return bad(format!("patch = {} must be odd", self.patch));
        }
        if self.memory_stride == 0 || self.max_memory == 0 {
            return bad("memory_stride and max_memory must be positive".into());
        }
        if self.score_kernel.is_multiple_of(2) {
            return bad(format!("score_kernel = {} must be odd", self.score_kernel));
        }
        Ok(())
    }
}

/// Queries (and memory patches) per matrix-product block.
const BLOCK: usize = 4096;

/// A fitted patch nearest-neighbour detector.
#[derive(Clone, Debug)]
pub struct PatchKnn {
    patch: usize,
    height: usize,
    width: usize,
    /// The mean memory patch, subtracted from every patch.
    mean: Vec<f32>,
    /// Memory blocks, each `(dim + 1, len)`: columns `[-2 m, ||m||^2]`.
    memory: Vec<Tensor>,
    memory_len: usize,
}

/// NumPy `reflect` index: `-1 -> 1`, `n -> n - 2`.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Writes the `patch x patch x 3` patch centred on `(y, x)` (reflect padding)
/// into `out`, minus `mean`.
fn extract(img: &RgbImage, y: usize, x: usize, patch: usize, mean: &[f32], out: &mut [f32]) {
    let (h, w) = (img.height(), img.width());
    let half = (patch / 2) as isize;
    let data = img.as_hwc();
    let mut k = 0;
    for dy in -half..=half {
        let yy = reflect(y as isize + dy, h);
        for dx in -half..=half {
            let xx = reflect(x as isize + dx, w);
            let px = &data[(yy * w + xx) * 3..(yy * w + xx) * 3 + 3];
            for &v in px {
                out[k] = v - mean[k];
                k += 1;
            }
        }
    }
}

impl PatchKnn {
    /// Builds the memory from good `train` images (all of one size).
    pub fn fit(train: &[RgbImage], config: &PatchKnnConfig) -> Result<Self> {
        config.validate()?;
        let first = train
            .first()
            .ok_or_else(|| Error::Shape("the baseline needs at least one training image".into()))?;
        let (height, width) = (first.height(), first.width());
        if let Some(other) = train
            .iter()
            .find(|i| (i.height(), i.width()) != (height, width))
        {
            return Err(Error::Shape(format!(
                "training images differ in size: {height}x{width} and {}x{}",
                other.height(),
                other.width()
            )));
        }
        let dim = config.patch * config.patch * 3;
        let s = config.memory_stride;
        let mut positions: Vec<(usize, usize, usize)> = (0..train.len())
            .flat_map(|i| {
                (0..height)
                    .step_by(s)
                    .flat_map(move |y| (0..width).step_by(s).map(move |x| (i, y, x)))
            })
            .collect();
        if positions.len() > config.max_memory {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            let mut keep =
                rand::seq::index::sample(&mut rng, positions.len(), config.max_memory).into_vec();
            keep.sort_unstable();
            positions = keep.into_iter().map(|k| positions[k]).collect();
        }
        let zero = vec![0.0; dim];
        let mut patches = vec![0.0f32; positions.len() * dim];
        patches
            .par_chunks_mut(dim)
            .zip(&positions)
            .for_each(|(out, &(i, y, x))| extract(&train[i], y, x, config.patch, &zero, out));
        let mut mean = vec![0.0f64; dim];
        for p in patches.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(p) {
                *m += f64::from(v);
            }
        }
        let mean: Vec<f32> = mean
            .iter()
            .map(|m| (m / positions.len() as f64) as f32)
            .collect();
        let memory = patches
            .chunks(BLOCK * dim)
            .map(|block| {
                let len = block.len() / dim;
                // (dim + 1, len), row-major: column j is [-2 m_j, ||m_j||^2].
                let mut t = vec![0.0f32; (dim + 1) * len];
                for (j, p) in block.chunks(dim).enumerate() {
                    let mut norm = 0.0f32;
                    for (k, (&v, &m)) in p.iter().zip(&mean).enumerate() {
                        let c = v - m;
                        t[k * len + j] = -2.0 * c;
                        norm += c * c;
                    }
                    t[dim * len + j] = norm;
                }
                Ok(Tensor::from_vec(t, (dim + 1, len), &Device::Cpu)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch: config.patch,
            height,
            width,
            mean,
            memory,
            memory_len: positions.len(),
        })
    }

    /// Number of memory patches.
    pub fn memory_len(&self) -> usize {
        self.memory_len
    }

    /// The anomaly map of `img` (same size as the training images): each
    /// pixel's L2 distance to the nearest memory patch.
    pub fn anomaly_map(&self, img: &RgbImage) -> Result<AnomalyMap> {
        let (h, w) = (img.height(), img.width());
        if (h, w) != (self.height, self.width) {
            return Err(Error::Shape(format!(
                "test image is {h}x{w} but the baseline was fitted on {}x{}",
                self.height, self.width
            )));
        }
        let dim = self.mean.len();
        let mut map = Vec::with_capacity(h * w);
        let pixels: Vec<(usize, usize)> =
            (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).collect();
        for block in pixels.chunks(BLOCK) {
            let mut q = vec![0.0f32; block.len() * (dim + 1)];
            let mut q_norm = Vec::with_capacity(block.len());
            for (row, &(y, x)) in q.chunks_mut(dim + 1).zip(block) {
                extract(img, y, x, self.patch, &self.mean, &mut row[..dim]);
                row[dim] = 1.0;
                q_norm.push(row[..dim].iter().map(|v| v * v).sum::<f32>());
            }
            let q = Tensor::from_vec(q, (block.len(), dim + 1), &Device::Cpu)?;
            let mut best = vec![f32::INFINITY; block.len()];
            for m in &self.memory {
                // ||m||^2 - 2 q.m for every (query, memory) pair; its row minimum.
                let partial: Vec<f32> = q.matmul(m)?.min(1)?.to_vec1()?;
                for (b, p) in best.iter_mut().zip(partial) {
                    *b = b.min(p);
                }
            }
            map.extend(
                best.iter()
                    .zip(&q_norm)
                    .map(|(b, n)| (b + n).max(0.0).sqrt()),
            );
        }
        Ok(AnomalyMap::finite(h, w, map)?)
    }
}

/// What [`evaluate_baseline`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineOutput {
    /// The metrics (also in `metrics.json`).
    pub metrics: Metrics,
    /// `<out>/metrics.json`.
    pub metrics_json: PathBuf,
    /// `<out>/scores.csv`.
    pub scores_csv: PathBuf,
    /// Memory patches used.
    pub memory_len: usize,
    /// Image side the class was evaluated at.
    pub size: usize,
    /// Wall time per test image (seconds), fitting and loading excluded.
    pub seconds_per_image: f64,
}

/// Fits the baseline on `class`'s `train/good` images and evaluates it on
/// its test split at `size x size` (default: the first training image's
/// width), writing `<out>/metrics.json` and `<out>/scores.csv`.
pub fn evaluate_baseline(
    class: &MvtecClass,
    size: Option<usize>,
    out: &Path,
    config: &PatchKnnConfig,
) -> Result<BaselineOutput> {
    if class.train.is_empty() {
        return Err(Error::Layout {
            path: class.root.clone(),
            reason: "no `train/good` images to fit the baseline on".into(),
        });
    }
    if class.test.is_empty() {
        return Err(Error::Layout {
            path: class.root.clone(),
            reason: "no `test/<defect>` images to evaluate on".into(),
        });
    }
    let size = match size {
        Some(size) => size,
        None => {
            let first = &class.train[0];
            image::image_dimensions(first)
                .map_err(|source| Error::UnreadableImage {
                    path: first.clone(),
                    source,
                })?
                .0 as usize
        }
    };
    let train = load_images(&class.train, size)?;
    let knn = PatchKnn::fit(&train, config)?;
    let start = std::time::Instant::now();
    let results: Vec<_> = class
        .test
        .par_iter()
        .map(|sample| {
            let (image, mask) = sample.load(size)?;
            Ok((knn.anomaly_map(&image)?, mask))
        })
        .collect::<Result<_>>()?;
    let seconds = start.elapsed().as_secs_f64();
    let mut evaluator = diffad_metrics::Evaluator::with_options(config.score_kernel, 0.3)?;
    let mut rows = Vec::with_capacity(results.len());
    for (sample, (map, mask)) in class.test.iter().zip(&results) {
        let score = evaluator.add_view(&sample.defect, map.view(), mask.to_bool().view())?;
        rows.push(ScoreRow {
            path: sample.image.clone(),
            defect: sample.defect.clone(),
            label: u8::from(sample.is_anomalous()),
            score,
        });
    }
    let metrics = Metrics::new(&class.name, evaluator.finish()?);
    let scores_csv = out.join("scores.csv");
    write_scores_csv(&scores_csv, &rows)?;
    let metrics_json = out.join("metrics.json");
    metrics.write_json(&metrics_json)?;
    Ok(BaselineOutput {
        metrics,
        metrics_json,
        scores_csv,
        memory_len: knn.memory_len(),
        size,
        seconds_per_image: seconds / class.test.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_numpy() {
        // np.pad(np.arange(4), 3, mode="reflect") = [3 2 1 0 1 2 3 2 1 0]
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect(-2, 1), 0);
    }

    /// The blocked product equals a brute-force search.
    #[test]
    fn distances_equal_brute_force() {
        let img = |seed: u64| {
            use rand::Rng;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            RgbImage::from_hwc(9, 11, (0..9 * 11 * 3).map(|_| rng.random()).collect()).unwrap()
        };
        let train = [img(1), img(2)];
        let config = PatchKnnConfig {
            patch: 3,
            memory_stride: 1,
            ..Default::default()
        };
        let knn = PatchKnn::fit(&train, &config).unwrap();
        assert_eq!(knn.memory_len(), 2 * 9 * 11);
        let test = img(3);
        let map = knn.anomaly_map(&test).unwrap();
        let zero = vec![0.0; 27];
        let (mut q, mut m) = (vec![0.0; 27], vec![0.0; 27]);
        for y in 0..9 {
            for x in 0..11 {
                extract(&test, y, x, 3, &zero, &mut q);
                let mut best = f32::INFINITY;
                for t in &train {
                    for my in 0..9 {
                        for mx in 0..11 {
                            extract(t, my, mx, 3, &zero, &mut m);
                            let d: f32 = q.iter().zip(&m).map(|(a, b)| (a - b).powi(2)).sum();
                            best = best.min(d.sqrt());
                        }
                    }
                }
                let got = map.view()[[y, x]];
                assert!((got - best).abs() < 1e-3, "({y}, {x}): {got} vs {best}");
            }
        }
    }

    #[test]
    fn memory_subset_is_seeded_and_capped() {
        let train = vec![RgbImage::filled(8, 8, [0.2, 0.4, 0.6]).unwrap(); 3];
        let config = PatchKnnConfig {
            max_memory: 10,
            ..Default::default()
        };
        assert_eq!(PatchKnn::fit(&train, &config).unwrap().memory_len(), 10);
        let bad = PatchKnnConfig {
            patch: 4,
            ..Default::default()
        };
        assert!(PatchKnn::fit(&train, &bad).is_err());
    }
}
