//! Trains a small KL autoencoder (diffusers `AutoencoderKL` layout) on a folder of images
//! or on built-in synthetic images, with a progress bar, then writes a PNG with the inputs
//! (top row) and their reconstructions `D(E(x))` (bottom row) and prints the PSNR.
//!
//! ```text
//! # built-in synthetic images (gradients, stripes, discs), no files needed:
//! cargo run --release --example vae
//! # a folder of images (e.g. MVTec's <class>/train/good), resized to --size:
//! cargo run --release --example vae -- --images mvtec/bottle/train/good --size 64 --steps 500
//! ```
//!
//! The model is `AutoencoderKlConfig::tiny()` (widths 32/64, f = 2) unless `--paper` is
//! given (the paper's 83.7 M-parameter VAE, f = 8: far too slow to train on a laptop CPU,
//! but it runs).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clap::Parser;
use diffad::metrics::psnr;
use diffad::vae::synthetic::synthetic_images;
use diffad::vae::{
    AdamWConfig, AutoencoderKl, AutoencoderKlConfig, LatentCodec, VaeTrainConfig, VaeTrainer,
};
use image::{imageops::FilterType, Rgb, RgbImage};

#[derive(Parser, Debug)]
#[command(about = "Train a small KL autoencoder and show its reconstructions")]
struct Args {
    /// Folder of training images (png/jpg/bmp/tif, searched recursively). Without it,
    /// built-in synthetic images are used.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Image size (square; a multiple of the downsampling factor).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Number of synthetic images (without --images).
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Optimisation steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Peak learning rate (AdamW, betas 0.5/0.9 as LDM).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Train the paper's VAE instead of the tiny one.
    #[arg(long)]
    paper: bool,
    /// Write checkpoints here (every 100 steps and at the end).
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// Output PNG (inputs on top, reconstructions below).
    #[arg(long, default_value = "target/vae_reconstructions.png")]
    out: PathBuf,
    /// Seed of the weights, batch order and posterior noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "bmp" | "tif" | "tiff"
            )
        }) {
            out.push(path);
        }
    }
    Ok(())
}

fn load_folder(dir: &Path, size: usize) -> Result<Tensor, Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no images found in {}", dir.display()).into());
    }
    let mut data = Vec::with_capacity(files.len() * 3 * size * size);
    for file in &files {
        let img = image::open(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .resize_exact(size as u32, size as u32, FilterType::Triangle)
            .to_rgb8();
        for c in 0..3 {
            for p in img.pixels() {
                data.push(f32::from(p[c]) / 255.0);
            }
        }
    }
    Ok(Tensor::from_vec(
        data,
        (files.len(), 3, size, size),
        &Device::Cpu,
    )?)
}

/// Inputs on the top row, reconstructions on the bottom row.
fn write_grid(
    inputs: &Tensor,
    recon: &Tensor,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let (n, _, h, w) = inputs.dims4()?;
    let mut grid = RgbImage::new((n * w) as u32, (2 * h) as u32);
    for (row, t) in [inputs, recon].into_iter().enumerate() {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let px = |c: usize| {
                        (v[((i * 3 + c) * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    grid.put_pixel(
                        (i * w + x) as u32,
                        (row * h + y) as u32,
                        Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    grid.save(path)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Reuse freed activations instead of page-faulting them in again.
    diffad::nn::tune_allocator();
    let args = Args::parse();
    let device = Device::Cpu;
    let images = match &args.images {
        Some(dir) => load_folder(dir, args.size)?,
        None => synthetic_images(args.count, args.size, args.seed, &device)?,
    };
    let config = if args.paper {
        AutoencoderKlConfig::diffad()
    } else {
        AutoencoderKlConfig::tiny()
    };
    let vae = AutoencoderKl::new(config, args.seed, &device)?;
    println!(
        "{} images of {}x{}, VAE with {:.2} M parameters (f = {}, {} latent channels)",
        images.dims()[0],
        args.size,
        args.size,
        vae.num_parameters() as f64 / 1e6,
        vae.downsample_factor(),
        vae.latent_channels()
    );
    let train = VaeTrainConfig {
        steps: args.steps,
        batch_size: args.batch,
        optimizer: AdamWConfig {
            lr: args.lr,
            ..AdamWConfig::default()
        },
        warmup_steps: (args.steps / 20).max(1),
        max_grad_norm: Some(1e4),
        discriminator: None,
        checkpoint_every: 100,
        checkpoint_dir: args.checkpoints.clone(),
        seed: args.seed,
        ..VaeTrainConfig::default()
    };
    let mut trainer = VaeTrainer::new(vae, train)?;
    let history = trainer.train(&images, &mut diffad::progress::Bar::new("vae"))?;
    if let (Some(first), Some(last)) = (history.first(), history.last()) {
        println!(
            "loss {:.1} -> {:.1} (reconstruction {:.1} -> {:.1}, KL {:.1})",
            first.loss, last.loss, first.reconstruction, last.reconstruction, last.kl
        );
    }
    let n = images.dims()[0].min(8);
    let inputs = images.narrow(0, 0, n)?;
    let vae = trainer.vae();
    let recon = vae.decode(&vae.encode(&inputs)?)?;
    let a = inputs.flatten_all()?.to_vec1::<f32>()?;
    let b = recon.flatten_all()?.to_vec1::<f32>()?;
    let db = psnr(&a, &b, &vec![true; a.len()])?;
    write_grid(&inputs, &recon, &args.out)?;
    println!(
        "PSNR of D(E(x)) on the first {n} images: {db:.2} dB; wrote {}",
        args.out.display()
    );
    Ok(())
}
