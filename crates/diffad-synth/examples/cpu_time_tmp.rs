use std::sync::Arc;
use std::time::Instant;
use diffad_synth::*;
use rand::SeedableRng;
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let cfg = MaskConfig::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 4000;
    let (t, c) = (Instant::now(), cpu());
    for _ in 0..n { std::hint::black_box(anomaly_mask(256, 256, &cfg, &mut rng).unwrap()); }
    println!("masks one thread: {n} in wall {:.2}s cpu {:.2}s -> {:.0} masks per cpu-second", t.elapsed().as_secs_f64(), cpu() - c, n as f64 / (cpu() - c));
    let imgs: Vec<ImageF32> = (0..32).map(|i| ImageF32::from_rgb8(&procedural_texture(PatternKind::ALL[i % 4], 256, 256, i as u64).unwrap()).unwrap()).collect();
    let tex = InMemoryTextures::new((0..16).map(|i| procedural_texture(PatternKind::ALL[i % 4], 256, 256, 100 + i as u64).unwrap()).collect()).unwrap();
    let src: Arc<dyn TextureSource> = Arc::new(tex);
    for p in [1.0f32, 0.5] {
        let s = AnomalySynthesizer::new(SynthConfig { anomaly_probability: p, ..Default::default() }, src.clone(), 0).unwrap();
        let reps = 40;
        let (t, c) = (Instant::now(), cpu());
        for e in 0..reps { std::hint::black_box(s.synthesize_samples(&imgs, None, e, 0).unwrap()); }
        let (wall, cp) = (t.elapsed().as_secs_f64(), cpu() - c);
        println!("samples p={p} (rayon, 2 threads): {} in wall {wall:.2}s cpu {cp:.2}s -> {:.0} samples/s wall, {:.0} samples per cpu-second", reps * 32, (reps * 32) as f64 / wall, (reps * 32) as f64 / cp);
    }
}
