//! Comparisons against NumPy/SciPy restatements of DRAEM's code
//! (fixtures from `scripts/make_fixtures.py`).

use diffad_synth::{anomaly_mask, perlin_2d_from_angles, rand_perlin_2d, MaskConfig, Plane};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn perlin_case(case: &Value) -> (Plane, Vec<f32>) {
    let h = case["height"].as_u64().unwrap() as usize;
    let w = case["width"].as_u64().unwrap() as usize;
    let res = (
        case["res"][0].as_u64().unwrap() as usize,
        case["res"][1].as_u64().unwrap() as usize,
    );
    let noise = perlin_2d_from_angles(h, w, res, &floats(&case["angles"])).unwrap();
    (noise, floats(&case["noise"]))
}

#[test]
fn perlin_matches_draem_numpy_for_the_same_angles() {
    let fx = fixture("perlin.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for (k, case) in cases.iter().enumerate() {
        let (ours, reference) = perlin_case(case);
        assert_eq!(ours.as_slice().len(), reference.len());
        let max_err = ours
            .as_slice()
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err < 2e-6, "case {k}: max |ours - numpy| = {max_err}");
    }
}

#[test]
fn rotation_matches_scipy_bilinear_rotate() {
    let fx = fixture("perlin.json");
    let rot = &fx["rotation"];
    let case = &fx["cases"][rot["case"].as_u64().unwrap() as usize];
    let (noise, _) = perlin_case(case);
    let degrees = rot["degrees"].as_f64().unwrap() as f32;
    let reference = floats(&rot["rotated"]);
    // scipy.ndimage.rotate turns the content counter-clockwise on screen for
    // positive angles; ours turns it clockwise, hence the sign.
    let ours = noise.rotated(-degrees);
    let max_err = ours
        .as_slice()
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err < 1e-4, "max |ours - scipy| = {max_err}");
}

/// Two-sample Kolmogorov-Smirnov statistic.
fn ks_statistic(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[test]
fn mask_coverage_distribution_matches_draem_procedure() {
    let fx = fixture("mask_coverage.json");
    let size = fx["size"].as_u64().unwrap() as usize;
    let mut reference: Vec<f64> = fx["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let n = reference.len();
    let config = MaskConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut ours: Vec<f64> = (0..n)
        .map(|_| {
            let m = anomaly_mask(size, size, &config, &mut rng).unwrap();
            assert!(m.as_slice().iter().all(|&v| v == 0.0 || v == 1.0));
            m.coverage()
        })
        .collect();
    let empty = |c: &[f64]| c.iter().filter(|&&v| v == 0.0).count() as f64 / c.len() as f64;
    let mean = |c: &[f64]| c.iter().sum::<f64>() / c.len() as f64;
    let (e_ours, e_ref) = (empty(&ours), empty(&reference));
    // Binomial standard error of the empty fraction is ~0.0035 at n = 4000.
    assert!(
        (e_ours - e_ref).abs() < 0.015,
        "empty fraction {e_ours} vs {e_ref}"
    );
    let (m_ours, m_ref) = (mean(&ours), mean(&reference));
    assert!(
        (m_ours - m_ref).abs() < 0.1 * m_ref,
        "mean coverage {m_ours} vs {m_ref}"
    );
    // KS test at alpha = 0.001: c(alpha) = 1.95.
    let d = ks_statistic(&mut ours, &mut reference);
    let crit = 1.95 * ((2 * n) as f64 / (n * n) as f64).sqrt();
    assert!(d < crit, "KS statistic {d} >= {crit}");
}

#[test]
fn perlin_statistics() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (h, w) = (64, 64);
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for &r in &[1usize, 2, 4, 8, 16, 32] {
        for _ in 0..20 {
            let p = rand_perlin_2d(h, w, (r, r), &mut rng).unwrap();
            let s = p.as_slice();
            for y in 0..h {
                for x in 0..w {
                    let v = s[y * w + x];
                    assert!(v.abs() <= 1.0 + 1e-5, "|{v}| > 1");
                    // Smooth: the slope is bounded by ~2.5 per lattice cell.
                    if x + 1 < w {
                        let dx = (s[y * w + x + 1] - v).abs();
                        assert!(dx <= 3.0 * r as f32 / w as f32, "jump {dx} at res {r}");
                    }
                    if y + 1 < h {
                        let dy = (s[(y + 1) * w + x] - v).abs();
                        assert!(dy <= 3.0 * r as f32 / h as f32, "jump {dy} at res {r}");
                    }
                    // Zero on the lattice points.
                    if y % (h / r) == 0 && x % (w / r) == 0 {
                        assert!(v.abs() < 1e-6);
                    }
                    sum += f64::from(v);
                    count += 1;
                }
            }
        }
    }
    let mean = sum / count as f64;
    assert!(mean.abs() < 0.02, "mean {mean}");
}
