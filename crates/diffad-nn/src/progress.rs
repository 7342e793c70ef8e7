//! How the trainers report progress: the [`Progress`] callback.
//!
//! Library crates do not print. The training loops of `diffad-vae`, `diffad-diffusion` and
//! `diffad-seg` call a `&mut dyn Progress` instead; a program draws bars from it (e.g. with
//! `indicatif`), logs it, or ignores it with [`Silent`].
//!
//! Steps are optimiser steps, counted over the whole training run (a resumed run starts
//! at the step of its checkpoint, not at 0).
//!
//! ```
//! use diffad_nn::progress::Progress;
//!
//! /// Remembers the losses.
//! #[derive(Default)]
//! struct Losses(Vec<(u64, f64)>);
//!
//! impl Progress for Losses {
//!     fn step(&mut self, step: u64, loss: f64) {
//!         self.0.push((step, loss));
//!     }
//! }
//!
//! let mut losses = Losses::default();
//! let progress: &mut dyn Progress = &mut losses;
//! progress.start(Some(2), 0);
//! progress.step(1, 0.5);
//! progress.step(2, 0.25);
//! progress.finish();
//! assert_eq!(losses.0, vec![(1, 0.5), (2, 0.25)]);
//! ```

/// Receives the progress of a training loop. Every method does nothing by default.
pub trait Progress {
    /// A run of `total` optimiser steps (`None`: unknown) starts, with `done` of them
    /// already done (a resumed run).
    fn start(&mut self, _total: Option<u64>, _done: u64) {}

    /// Optimiser step `step` (counted from 1 over the whole run) finished with this loss.
    fn step(&mut self, _step: u64, _loss: f64) {}

    /// The run ended (also when it ended early because its data ran out).
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Silent;

impl Progress for Silent {}

impl<P: Progress + ?Sized> Progress for &mut P {
    fn start(&mut self, total: Option<u64>, done: u64) {
        (**self).start(total, done);
    }

    fn step(&mut self, step: u64, loss: f64) {
        (**self).step(step, loss);
    }

    fn finish(&mut self) {
        (**self).finish();
    }
}
