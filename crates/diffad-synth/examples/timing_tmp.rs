use std::sync::Arc;
use std::time::Instant;
use diffad_synth::*;
use rand::SeedableRng;
fn main() {
    let cfg = MaskConfig::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n { std::hint::black_box(anomaly_mask(256, 256, &cfg, &mut rng).unwrap()); }
    println!("masks/s one thread: {:.0}", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for _ in 0..n { std::hint::black_box(rand_perlin_2d(256, 256, (8, 8), &mut rng).unwrap()); }
    println!("perlin/s: {:.0}", n as f64 / t.elapsed().as_secs_f64());
    let imgs: Vec<ImageF32> = (0..32).map(|i| ImageF32::from_rgb8(&procedural_texture(PatternKind::ALL[i % 4], 256, 256, i as u64).unwrap()).unwrap()).collect();
    let tex = InMemoryTextures::new((0..16).map(|i| procedural_texture(PatternKind::ALL[i % 4], 256, 256, 100 + i as u64).unwrap()).collect()).unwrap();
    for (name, src) in [("memory", Arc::new(tex) as Arc<dyn TextureSource>), ("procedural", Arc::new(ProceduralTextures::default())), ("selfaug", Arc::new(SelfAugmentation::default()))] {
        let s = AnomalySynthesizer::new(SynthConfig { anomaly_probability: 1.0, ..Default::default() }, src, 0).unwrap();
        let t = Instant::now();
        let reps = 8;
        for e in 0..reps { std::hint::black_box(s.synthesize_samples(&imgs, None, e, 0).unwrap()); }
        println!("{name}: all-anomalous samples/s (rayon): {:.0}", (reps * 32) as f64 / t.elapsed().as_secs_f64());
    }
    for kind in AugmenterKind::ALL {
        let base = procedural_texture(PatternKind::Cellular, 256, 256, 5).unwrap();
        let t = Instant::now();
        for _ in 0..200 { let mut img = base.clone(); kind.apply(&mut img, &mut rng); std::hint::black_box(img); }
        println!("{kind:?}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 200.0);
    }
    for kind in PatternKind::ALL {
        let t = Instant::now();
        for i in 0..50 { std::hint::black_box(procedural_texture(kind, 256, 256, i).unwrap()); }
        println!("{kind:?}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 50.0);
    }
}
