//! The `diffad` command-line tool.

use clap::Parser;

/// DiffAD: unsupervised surface anomaly detection with a latent diffusion model.
#[derive(Parser, Debug)]
#[command(name = "diffad", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
