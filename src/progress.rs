//! Progress bars for programs: an opt-in [`Progress`] that draws an
//! `indicatif` bar on stderr. The library itself reports progress only to the
//! [`Progress`] its caller passes (see [`crate::train::ProgressFactory`]) and
//! never prints; the `diffad` binary and the examples pass these bars.

use diffad_nn::progress::{Progress, Silent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (hidden when stderr is not a terminal): the
/// [`Progress`] the `diffad` binary and the examples use.
pub struct Bar {
    label: String,
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar labelled `label`, drawn from the first [`Progress::start`].
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            bar: None,
        }
    }

    /// The reporter of `label`: a bar, or nothing with `--quiet`.
    pub fn boxed(show: bool, label: &str) -> Box<dyn Progress> {
        if show {
            Box::new(Bar::new(label))
        } else {
            Box::new(Silent)
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: Option<u64>, done: u64) {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(self.label.clone());
        bar.set_position(done);
        self.bar = Some(bar);
    }

    fn step(&mut self, step: u64, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4}"));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
