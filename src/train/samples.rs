//! The synthetic anomalies both the LDM and the segmenter train on: DRAEM's
//! `(x_a, M)` of a good image `x` (paper Sec. 3.1, `docs/reference.md` §1),
//! drawn per `(epoch, index)` so a sample never depends on its batch.

use candle_core::Device;
use diffad_synth::{AnomalySynthesizer, SyntheticBatch};
use rayon::prelude::*;

use crate::data::RgbImage;
use crate::error::Result;

/// Synthesises anomalies for `indices` of `normals` with the per-sample
/// streams `(epoch, index)` (independent of batching and threads).
pub(super) fn synthesize(
    synth: &AnomalySynthesizer,
    normals: &[RgbImage],
    indices: &[usize],
    epoch: u64,
    device: &Device,
) -> Result<SyntheticBatch> {
    let samples = indices
        .par_iter()
        .map(|&i| synth.synthesize_indexed(&normals[i], None, epoch, i as u64))
        .collect::<diffad_synth::Result<Vec<_>>>()?;
    Ok(SyntheticBatch::from_samples(&samples, device)?)
}
