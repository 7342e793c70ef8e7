//! Perlin noise with the semantics of DRAEM's `rand_perlin_2d_np`.
//!
//! For an output of `H x W` pixels and a lattice resolution `(r_0, r_1)`
//! (cells along rows and columns), DRAEM draws `(r_0 + 1) x (r_1 + 1)` unit
//! gradients `g = (cos theta, sin theta)` with `theta ~ U[0, 2 pi)`, and for
//! the pixel at fractional cell position `(f_0, f_1)` in cell `(c_0, c_1)`:
//!
//! ```text
//! n00 = (f0,     f1    ) . g[c0    ][c1    ]
//! n10 = (f0 - 1, f1    ) . g[c0 + 1][c1    ]
//! n01 = (f0,     f1 - 1) . g[c0    ][c1 + 1]
//! n11 = (f0 - 1, f1 - 1) . g[c0 + 1][c1 + 1]
//! t   = fade(f) = 6 f^5 - 15 f^4 + 10 f^3          (per axis)
//! out = sqrt(2) * lerp(lerp(n00, n10, t0), lerp(n01, n11, t0), t1)
//! ```
//!
//! DRAEM requires `H` and `W` to be multiples of the resolution. Here any size
//! works: the lattice is laid over the padded size `ceil(H / r_0) * r_0` (and
//! likewise for `W`) and the top-left `H x W` pixels are kept, which is what
//! anomalib does to allow arbitrary sizes. For multiples the output equals
//! DRAEM's exactly (up to `f32` rounding; the tests compare against NumPy).
//!
//! Fractional positions are computed as `(i mod d) / d` with `d` the cell size
//! in pixels, which equals NumPy's `(i * r / H) % 1` wherever that is exact
//! (all power-of-two sizes).

use rand::{Rng, RngCore};

use crate::error::{check_size, Error, Result};
use crate::image::Plane;

/// DRAEM's fade curve `6t^5 - 15t^4 + 10t^3`.
#[inline]
pub fn fade(t: f32) -> f32 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

/// Perlin noise of `height x width` pixels on a `res = (rows, cols)` lattice,
/// with the gradient angles (radians) given row-major, `(res.0 + 1) * (res.1 + 1)`
/// of them. This is the deterministic core of [`rand_perlin_2d`], exposed so
/// that tests can feed the same angles to DRAEM's NumPy code.
pub fn perlin_2d_from_angles(
    height: usize,
    width: usize,
    res: (usize, usize),
    angles: &[f32],
) -> Result<Plane> {
    check_size(height, width)?;
    let (r0, r1) = res;
    if r0 == 0 || r1 == 0 {
        return Err(Error::InvalidConfig {
            field: "perlin resolution",
            reason: format!("resolution {res:?} must be positive on both axes"),
        });
    }
    let expected = (r0 + 1) * (r1 + 1);
    if angles.len() != expected {
        return Err(Error::BufferLength {
            shape: vec![r0 + 1, r1 + 1],
            expected,
            found: angles.len(),
        });
    }
    let mut out = vec![0.0f32; height * width];
    fill_perlin(height, width, res, angles, &mut out);
    Plane::from_vec(height, width, out)
}

/// The arithmetic of [`perlin_2d_from_angles`] into `out` (`height * width`
/// values); arguments already validated.
pub(crate) fn fill_perlin(
    height: usize,
    width: usize,
    res: (usize, usize),
    angles: &[f32],
    out: &mut [f32],
) {
    let (r0, r1) = res;
    let grads: Vec<(f32, f32)> = angles.iter().map(|&a| (a.cos(), a.sin())).collect();
    let g = |a: usize, b: usize| grads[a * (r1 + 1) + b];

    // Cell sizes on the padded lattice.
    let d0 = height.div_ceil(r0);
    let d1 = width.div_ceil(r1);
    // Per-offset fractional position and fade along the column axis.
    let f1s: Vec<f32> = (0..d1).map(|k| k as f32 / d1 as f32).collect();
    let t1s: Vec<f32> = f1s.iter().map(|&f| fade(f)).collect();

    let sqrt2 = std::f32::consts::SQRT_2;
    for (i, row) in out.chunks_exact_mut(width).enumerate() {
        let c0 = i / d0;
        let f0 = (i % d0) as f32 / d0 as f32;
        let t0 = fade(f0);
        for (c1, cell) in row.chunks_mut(d1).enumerate() {
            let (g00, g10, g01, g11) = (g(c0, c1), g(c0 + 1, c1), g(c0, c1 + 1), g(c0 + 1, c1 + 1));
            // Along a row inside one cell every ramp is affine in f1:
            //   n0 = lerp(n00, n10, t0) = p0 + f1 q0,
            //   n1 = lerp(n01, n11, t0) = p1 + (f1 - 1) q1.
            let p0 = (1.0 - t0) * (f0 * g00.0) + t0 * ((f0 - 1.0) * g10.0);
            let q0 = (1.0 - t0) * g00.1 + t0 * g10.1;
            let p1 = (1.0 - t0) * (f0 * g01.0) + t0 * ((f0 - 1.0) * g11.0);
            let q1 = (1.0 - t0) * g01.1 + t0 * g11.1;
            for ((v, &f1), &t1) in cell.iter_mut().zip(&f1s).zip(&t1s) {
                let n0 = p0 + f1 * q0;
                let n1 = p1 + (f1 - 1.0) * q1;
                *v = sqrt2 * (n0 + t1 * (n1 - n0));
            }
        }
    }
}

/// DRAEM's `rand_perlin_2d_np(shape, res)`: gradient angles drawn uniformly
/// in `[0, 2 pi)` from `rng` (row-major, as `np.random.rand(r0 + 1, r1 + 1)`),
/// then [`perlin_2d_from_angles`]. Output lies in `[-1, 1]` (|value| <= sqrt(2)
/// times a convex combination of ramps bounded by `1/sqrt(2)`), mean 0.
pub fn rand_perlin_2d<R: RngCore + ?Sized>(
    height: usize,
    width: usize,
    res: (usize, usize),
    rng: &mut R,
) -> Result<Plane> {
    perlin_2d_from_angles(height, width, res, &draw_angles(res, rng))
}

/// `(res.0 + 1) * (res.1 + 1)` gradient angles `2 pi U[0, 1)`, row-major.
pub(crate) fn draw_angles<R: RngCore + ?Sized>(res: (usize, usize), rng: &mut R) -> Vec<f32> {
    (0..(res.0 + 1) * (res.1 + 1))
        .map(|_| (std::f64::consts::TAU * rng.random::<f64>()) as f32)
        .collect()
}

/// Fractal (multi-octave) Perlin noise as DRAEM's `rand_perlin_2d_octaves`:
/// `sum_k persistence^k * perlin(res * 2^k)` for `k < octaves`.
pub fn fractal_perlin_2d<R: RngCore + ?Sized>(
    height: usize,
    width: usize,
    res: (usize, usize),
    octaves: usize,
    persistence: f32,
    rng: &mut R,
) -> Result<Plane> {
    if octaves == 0 {
        return Err(Error::InvalidConfig {
            field: "octaves",
            reason: "at least one octave is needed".into(),
        });
    }
    let mut total = Plane::filled(height, width, 0.0)?;
    let mut amplitude = 1.0f32;
    for k in 0..octaves {
        let f = 1usize << k;
        let layer = rand_perlin_2d(height, width, (res.0 * f, res.1 * f), rng)?;
        for (t, v) in total.as_mut_slice().iter_mut().zip(layer.as_slice()) {
            *t += amplitude * v;
        }
        amplitude *= persistence;
    }
    Ok(total)
}
