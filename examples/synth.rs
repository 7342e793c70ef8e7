//! Writes a PNG grid showing DRAEM-style simulated anomalies: one row per
//! sample with the normal image `x`, the augmented texture `T`, the mask `M`
//! and the result `x_a`.
//!
//! ```text
//! # built-in procedural "normal" images and textures, no files needed:
//! cargo run --release --example synth
//! # a folder of normal images (e.g. MVTec's <class>/train/good), DTD textures:
//! cargo run --release --example synth -- --images mvtec/bottle/train/good \
//!     --textures dtd/images --foreground --out target/synth_bottle.png
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use diffad::synth::{
    procedural_texture, AnomalySynthesizer, AutoForeground, FolderOptions, FolderTextures,
    ForegroundMode, PatternKind, ProceduralTextures, RgbImage as SynthImage, SynthConfig,
    TextureSource,
};
use image::{imageops, Rgb, RgbImage};

#[derive(Parser, Debug)]
#[command(about = "Write a grid (normal, texture, mask, x_a) of simulated anomalies")]
struct Args {
    /// Folder of normal images (searched recursively for jpg/png). Without
    /// it, normal images come from the built-in procedural generator.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Folder of anomaly textures (e.g. DTD `images/`). Without it, the
    /// built-in procedural texture source is used.
    #[arg(long)]
    textures: Option<PathBuf>,
    /// Output PNG.
    #[arg(long, default_value = "target/synth_grid.png")]
    out: PathBuf,
    /// Number of rows (samples).
    #[arg(long, default_value_t = 6)]
    rows: usize,
    /// Image size (square).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Restrict anomalies to an automatic foreground mask (object classes).
    #[arg(long)]
    foreground: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let size = args.size;
    let normals: Vec<SynthImage> = match &args.images {
        Some(dir) => {
            let folder = FolderTextures::open(dir, FolderOptions::default())?;
            folder
                .files()
                .iter()
                .cycle()
                .take(args.rows)
                .map(|p| SynthImage::open(p)?.resize(size, size))
                .collect::<Result<_, _>>()?
        }
        None => (0..args.rows)
            .map(|i| {
                let kind = PatternKind::ALL[i % PatternKind::ALL.len()];
                SynthImage::from_rgb8(&procedural_texture(kind, size, size, args.seed + i as u64)?)
            })
            .collect::<Result<_, _>>()?,
    };
    let source: Arc<dyn TextureSource> = match &args.textures {
        Some(dir) => Arc::new(FolderTextures::open(dir, FolderOptions::default())?),
        None => Arc::new(ProceduralTextures::default()),
    };
    // Every row shows an anomaly; everything else is DRAEM's default.
    let config = SynthConfig {
        anomaly_probability: 1.0,
        foreground: if args.foreground {
            ForegroundMode::Auto(AutoForeground::default())
        } else {
            ForegroundMode::None
        },
        ..SynthConfig::default()
    };
    let synth = AnomalySynthesizer::new(config, source, args.seed)?;
    let samples = synth.synthesize_samples(&normals, None, 0, 0)?;

    let (s, gap) = (size as u32, 4u32);
    let mut grid = RgbImage::from_pixel(
        4 * s + 5 * gap,
        args.rows as u32 * (s + gap) + gap,
        Rgb([255; 3]),
    );
    for (row, sample) in samples.iter().enumerate() {
        let y = i64::from(gap + row as u32 * (s + gap));
        let mask = image::DynamicImage::ImageLuma8(sample.mask.to_luma8()).to_rgb8();
        let texture = sample
            .texture
            .clone()
            .unwrap_or_else(|| RgbImage::from_pixel(s, s, Rgb([128; 3])));
        let tiles = [
            sample.normal.to_rgb8(),
            texture,
            mask,
            sample.augmented.to_rgb8(),
        ];
        for (col, tile) in tiles.iter().enumerate() {
            imageops::replace(&mut grid, tile, i64::from(gap + col as u32 * (s + gap)), y);
        }
        println!(
            "row {row}: label {}, coverage {:.3}, beta {:?}, augmenters {:?}",
            sample.label,
            sample.mask.coverage(),
            sample.beta,
            sample.augmenters
        );
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Atomic write: temporary file, then rename.
    let tmp = args.out.with_extension("png.tmp");
    grid.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "wrote {} (columns: normal x, texture T, mask M, x_a)",
        args.out.display()
    );
    Ok(())
}
