//! Decision thresholds stored with a run (`<run>/thresholds.json`): an
//! image-score threshold, a pixel threshold, and the score range used to
//! normalise scores so that the image threshold maps to 0.5 (anomalib's
//! convention), turning raw scores into decisions.
//!
//! Normalisation (min-max around the threshold, as anomalib):
//!
//! ```text
//! n(s) = clamp(((s - threshold) / (max - min)) + 0.5, 0, 1)
//! ```
//!
//! so `n(s) >= 0.5` exactly when `s >= threshold`.
//!
//! A run made before thresholds existed has no file: [`Thresholds::load`]
//! returns `None` and predictions stay raw scores.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// The file name of the thresholds inside a run directory.
pub const THRESHOLDS_FILE: &str = "thresholds.json";

/// Decision thresholds and the normalisation range of image scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// An image is anomalous when its score is at least this.
    pub image: f32,
    /// A pixel is anomalous when its map value is at least this.
    pub pixel: f32,
    /// Smallest image score seen when the thresholds were set.
    pub min: f32,
    /// Largest image score seen when the thresholds were set.
    pub max: f32,
}

impl Thresholds {
    /// Checks that every value is finite, `min <= max` and the thresholds lie
    /// in `[0, 1]` (scores and maps are probabilities); `origin` names the
    /// file in errors.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Config {
                path: origin.to_path_buf(),
                message,
            })
        };
        for (name, v) in [
            ("image", self.image),
            ("pixel", self.pixel),
            ("min", self.min),
            ("max", self.max),
        ] {
            if !v.is_finite() {
                return fail(format!("threshold `{name}` = {v} is not finite"));
            }
        }
        if self.min > self.max {
            return fail(format!("min {} above max {}", self.min, self.max));
        }
        for (name, v) in [("image", self.image), ("pixel", self.pixel)] {
            if !(0.0..=1.0).contains(&v) {
                return fail(format!("threshold `{name}` = {v} must lie in [0, 1]"));
            }
        }
        Ok(())
    }

    /// The score normalised so that the image threshold maps to 0.5 (see the
    /// module documentation); a degenerate range (`max == min`) gives 0 or 1.
    pub fn normalise(&self, score: f32) -> f32 {
        let range = self.max - self.min;
        if range > 0.0 {
            ((score - self.image) / range + 0.5).clamp(0.0, 1.0)
        } else if score >= self.image {
            1.0
        } else {
            0.0
        }
    }

    /// Whether an image score means "anomalous".
    pub fn is_anomalous(&self, score: f32) -> bool {
        score >= self.image
    }

    /// Reads `<run>/thresholds.json`; `Ok(None)` when the run has none.
    pub fn load(run_root: &Path) -> Result<Option<Self>> {
        let path = run_root.join(THRESHOLDS_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let thresholds: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        thresholds.validate(&path)?;
        Ok(Some(thresholds))
    }

    /// Writes `<run>/thresholds.json` atomically.
    pub fn save(&self, run_root: &Path) -> Result<()> {
        let path = run_root.join(THRESHOLDS_FILE);
        self.validate(&path)?;
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Thresholds {
        Thresholds {
            image: 0.4,
            pixel: 0.6,
            min: 0.1,
            max: 0.9,
        }
    }

    #[test]
    fn the_threshold_normalises_to_one_half() {
        let t = example();
        assert_eq!(t.normalise(0.4), 0.5);
        assert!((t.normalise(0.6) - 0.75).abs() < 1e-6);
        assert_eq!(t.normalise(5.0), 1.0);
        assert_eq!(t.normalise(-5.0), 0.0);
        assert!(t.is_anomalous(0.4) && !t.is_anomalous(0.39));
        let flat = Thresholds {
            min: 0.4,
            max: 0.4,
            ..example()
        };
        assert_eq!((flat.normalise(0.4), flat.normalise(0.3)), (1.0, 0.0));
    }

    #[test]
    fn thresholds_round_trip_and_bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Thresholds::load(dir.path()).unwrap(), None);
        example().save(dir.path()).unwrap();
        assert_eq!(Thresholds::load(dir.path()).unwrap(), Some(example()));
        std::fs::write(dir.path().join(THRESHOLDS_FILE), "{\"image\": 1}").unwrap();
        assert!(matches!(
            Thresholds::load(dir.path()),
            Err(Error::Json { .. })
        ));
        let bad = Thresholds {
            image: f32::NAN,
            ..example()
        };
        assert!(bad.save(dir.path()).is_err());
        let text = serde_json::to_string(&Thresholds {
            min: 1.0,
            max: 0.0,
            ..example()
        })
        .unwrap();
        std::fs::write(dir.path().join(THRESHOLDS_FILE), text).unwrap();
        let err = Thresholds::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(THRESHOLDS_FILE), "{err}");
    }
}
