//! Throughput per CPU-second of mask generation and full sample synthesis at
//! 256x256, a measure that stays meaningful on a machine shared with other
//! jobs (wall-clock criterion figures come from `cargo bench --bench synth`).
//!
//! ```text
//! cargo run --release -p diffad-synth --example cpu_throughput
//! ```
//!
//! CPU time is the process's utime + stime from `/proc/self/stat` (Linux);
//! elsewhere only wall time is printed.

use std::sync::Arc;
use std::time::Instant;

use diffad_synth::{
    anomaly_mask, procedural_texture, AnomalySynthesizer, InMemoryTextures, MaskConfig,
    PatternKind, RgbImage, SynthConfig, TextureSource,
};
use rand::SeedableRng;

/// Process CPU seconds (user + system), if `/proc/self/stat` is readable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn report(what: &str, n: usize, wall: f64, cpu: Option<f64>) {
    match cpu {
        Some(c) if c > 0.0 => println!(
            "{what}: {n} in {wall:.2} s wall, {c:.2} s CPU -> {:.0}/s wall, {:.0} per CPU-second",
            n as f64 / wall,
            n as f64 / c
        ),
        _ => println!(
            "{what}: {n} in {wall:.2} s wall -> {:.0}/s",
            n as f64 / wall
        ),
    }
}

fn main() -> Result<(), diffad_synth::Error> {
    let size = 256;
    let config = MaskConfig::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 4000;
    let (t, c) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        std::hint::black_box(anomaly_mask(size, size, &config, &mut rng)?);
    }
    let cpu = c.zip(cpu_seconds()).map(|(a, b)| b - a);
    report("masks, one thread", n, t.elapsed().as_secs_f64(), cpu);

    let normals: Vec<RgbImage> = (0..32)
        .map(|i| {
            RgbImage::from_rgb8(&procedural_texture(
                PatternKind::ALL[i % 4],
                size,
                size,
                i as u64,
            )?)
        })
        .collect::<Result<_, _>>()?;
    let textures = InMemoryTextures::new(
        (0..16)
            .map(|i| procedural_texture(PatternKind::ALL[i % 4], size, size, 100 + i as u64))
            .collect::<Result<_, _>>()?,
    )?;
    let source: Arc<dyn TextureSource> = Arc::new(textures);
    for p in [1.0f32, 0.5] {
        let synth_config = SynthConfig {
            anomaly_probability: p,
            ..SynthConfig::default()
        };
        let synth = AnomalySynthesizer::new(synth_config, source.clone(), 0)?;
        let batches = 40u64;
        let (t, c) = (Instant::now(), cpu_seconds());
        for epoch in 0..batches {
            std::hint::black_box(synth.synthesize_samples(&normals, None, epoch, 0)?);
        }
        let cpu = c.zip(cpu_seconds()).map(|(a, b)| b - a);
        let what = format!(
            "samples, anomaly_probability {p}, in-memory textures, rayon ({} threads)",
            rayon::current_num_threads()
        );
        report(&what, 32 * batches as usize, t.elapsed().as_secs_f64(), cpu);
    }
    Ok(())
}
