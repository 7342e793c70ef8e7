//! Winograd `F(2x2, 3x3)` for the 3x3, stride-1, padding-1 convolutions that make up most
//! of the VAE, the UNet and the segmenter (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", CVPR 2016).
//!
//! Each 2x2 output tile is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, with `d` the 4x4 input tile
//! (stride 2, zero outside the image) and
//!
//! ```text
//!      | 1  0 -1  0 |        | 1    0    0  |
//! Bᵀ = | 0  1  1  0 |    G = | 1/2  1/2  1/2 |    Aᵀ = | 1  1  1  0 |
//!      | 0 -1  1  0 |        | 1/2 -1/2  1/2 |         | 0  1 -1 -1 |
//!      | 0  1  0 -1 |        | 0    0    1  |
//! ```
//!
//! Summed over input channels, the element-wise product becomes 16 independent gemms
//! `M_ξ = U_ξ · V_ξ` (`U_ξ` `(C_out, C)` from the weights, `V_ξ` `(C, tiles)` from the input),
//! which need 16/36 = 1/2.25 of the multiplications of the direct convolution. Every
//! transform is a handful of additions (and halvings, for `G`), so the result agrees with
//! the direct convolution to rounding. Tiles are processed in bands of tile rows whose
//! transformed data stays in cache.

use candle_core::WithDType;
use rayon::prelude::*;

use crate::conv_kernel::{gemm, Mat};

/// Most transformed values (`16 · max(C, C_out) · tiles`) per band.
#[cfg(not(test))]
const BUDGET: usize = 1 << 22;
/// The unit tests use bands of one tile row.
#[cfg(test)]
const BUDGET: usize = 1;

/// `U[ξ][o][c] = (G g_{o,c} Gᵀ)[ξ]` for the `(C_out, C, 3, 3)` weight `w`.
fn transform_weights<T: WithDType>(w: &[T], c_out: usize, c: usize) -> Vec<T> {
    let mut u = vec![T::zero(); 16 * c_out * c];
    let half = T::from_f64(0.5);
    for o in 0..c_out {
        for ci in 0..c {
            let g = &w[(o * c + ci) * 9..(o * c + ci + 1) * 9];
            // G g: 4x3.
            let mut gg = [[T::zero(); 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = g0;
                gg[1][j] = (g0 + g1 + g2) * half;
                gg[2][j] = (g0 - g1 + g2) * half;
                gg[3][j] = g2;
            }
            // (G g) Gᵀ: 4x4.
            for (i, row) in gg.iter().enumerate() {
                let (a, b, cc) = (row[0], row[1], row[2]);
                let vals = [a, (a + b + cc) * half, (a - b + cc) * half, cc];
                for (j, v) in vals.into_iter().enumerate() {
                    u[((i * 4 + j) * c_out + o) * c + ci] = v;
                }
            }
        }
    }
    u
}

/// Geometry of one Winograd convolution of a `(C, H, W)` sample.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    c: usize,
    h: usize,
    w: usize,
    /// Tiles per row and column: `ceil(W / 2)`, `ceil(H / 2)`.
    tw: usize,
    th: usize,
}

/// `V[c][ξ][t] = (Bᵀ d B)[ξ]` for the tiles of tile rows `r0..r1` of sample `x`.
fn transform_input<T: WithDType>(x: &[T], t: &Tiles, (r0, r1): (usize, usize), v: &mut [T]) {
    let n = (r1 - r0) * t.tw;
    let hw = t.h * t.w;
    v[..t.c * 16 * n]
        .par_chunks_mut(16 * n)
        .enumerate()
        .for_each(|(ci, vc)| {
            let plane = &x[ci * hw..(ci + 1) * hw];
            let at = |y: isize, xx: isize| -> T {
                if y < 0 || xx < 0 || y >= t.h as isize || xx >= t.w as isize {
                    T::zero()
                } else {
                    plane[y as usize * t.w + xx as usize]
                }
            };
            for tr in r0..r1 {
                for tc in 0..t.tw {
                    let (y0, x0) = (2 * tr as isize - 1, 2 * tc as isize - 1);
                    let mut d = [[T::zero(); 4]; 4];
                    for (i, row) in d.iter_mut().enumerate() {
                        for (j, e) in row.iter_mut().enumerate() {
                            *e = at(y0 + i as isize, x0 + j as isize);
                        }
                    }
                    // Bᵀ d.
                    let mut bd = [[T::zero(); 4]; 4];
                    for j in 0..4 {
                        bd[0][j] = d[0][j] - d[2][j];
                        bd[1][j] = d[1][j] + d[2][j];
                        bd[2][j] = d[2][j] - d[1][j];
                        bd[3][j] = d[1][j] - d[3][j];
                    }
                    let tile = (tr - r0) * t.tw + tc;
                    // (Bᵀ d) B.
                    for (i, r) in bd.iter().enumerate() {
                        let vals = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]];
                        for (j, val) in vals.into_iter().enumerate() {
                            vc[(i * 4 + j) * n + tile] = val;
                        }
                    }
                }
            }
        });
}

/// `y[o] (+)= Aᵀ M[o] A` for the tiles of tile rows `r0..r1`, plus the bias.
fn transform_output<T: WithDType>(
    m: &[T],
    t: &Tiles,
    (r0, r1): (usize, usize),
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let n = (r1 - r0) * t.tw;
    let hw = t.h * t.w;
    y.par_chunks_mut(hw)
        .zip(m.par_chunks(16 * n))
        .enumerate()
        .for_each(|(o, (yo, mo))| {
            let b = bias.map_or(T::zero(), |b| b[o]);
            for tr in r0..r1 {
                for tc in 0..t.tw {
                    let tile = (tr - r0) * t.tw + tc;
                    let e = |i: usize, j: usize| mo[(i * 4 + j) * n + tile];
                    // Aᵀ m: 2x4.
                    let am = [
                        std::array::from_fn::<T, 4, _>(|j| e(0, j) + e(1, j) + e(2, j)),
                        std::array::from_fn::<T, 4, _>(|j| e(1, j) - e(2, j) - e(3, j)),
                    ];
                    for (a, r) in am.iter().enumerate() {
                        let yy = 2 * tr + a;
                        if yy >= t.h {
                            continue;
                        }
                        let vals = [r[0] + r[1] + r[2], r[1] - r[2] - r[3]];
                        for (bb, val) in vals.into_iter().enumerate() {
                            let xx = 2 * tc + bb;
                            if xx < t.w {
                                yo[yy * t.w + xx] = val + b;
                            }
                        }
                    }
                }
            }
        });
}

/// Whether [`conv3x3_into`] is worth using: enough channels for its `C`-deep gemms to run
/// near peak, and enough tiles per sample. Measured with `benches/nn.rs` against the
/// im2col path (forward, batch 1): faster at c256 128x128 (1.19x), c512 64x64 (1.65x) and
/// c512 32x32 (1.09x); slower at c128 256x256 (0.90x), c64 256x256 (0.43x) and, at batch
/// 8, c1024 8x8 (0.68x, 16 tiles per image).
pub(crate) fn applies(c: usize, c_out: usize, h: usize, w: usize) -> bool {
    c >= 256 && c_out >= 256 && h.div_ceil(2) * w.div_ceil(2) >= 64
}

/// `y = conv3x3(x, w) + bias` (stride 1, padding 1) for `x` `(B, C, H, W)`, `w`
/// `(C_out, C, 3, 3)`, into `y` `(B, C_out, H, W)`.
pub(crate) fn conv3x3_into<T: WithDType>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    (c, h, wd): (usize, usize, usize),
    c_out: usize,
    y: &mut [T],
) {
    let chw = c * h * wd;
    if chw == 0 || c_out == 0 {
        return;
    }
    let batch = x.len() / chw;
    let t = Tiles {
        c,
        h,
        w: wd,
        tw: wd.div_ceil(2),
        th: h.div_ceil(2),
    };
    let u = transform_weights(w, c_out, c);
    let rows = (BUDGET / (16 * c.max(c_out) * t.tw)).clamp(1, t.th);
    let n_max = rows * t.tw;
    let mut v = vec![T::zero(); 16 * c * n_max];
    let mut m = vec![T::zero(); 16 * c_out * n_max];
    for b in 0..batch {
        let xs = &x[b * chw..(b + 1) * chw];
        let ys = &mut y[b * c_out * h * wd..(b + 1) * c_out * h * wd];
        for r0 in (0..t.th).step_by(rows) {
            let r1 = (r0 + rows).min(t.th);
            let n = (r1 - r0) * t.tw;
            transform_input(xs, &t, (r0, r1), &mut v);
            for xi in 0..16 {
                // SAFETY: U_ξ is (C_out, C) row-major; V_ξ is (C, n) at row stride 16·n
                // starting at ξ·n; M_ξ is (C_out, n) at row stride 16·n starting at ξ·n.
                unsafe {
                    gemm(
                        (c_out, n, c),
                        &mut m[xi * n..],
                        16 * n,
                        false,
                        Mat::rows(&u, xi * c_out * c, c),
                        Mat {
                            ptr: v[xi * n..].as_ptr(),
                            rs: (16 * n) as isize,
                            cs: 1,
                        },
                    )
                };
            }
            transform_output(&m[..16 * c_out * n], &t, (r0, r1), bias, ys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(x: &[f64], w: &[f64], bias: &[f64], (c, h, wd): (usize, usize, usize)) -> Vec<f64> {
        let c_out = bias.len();
        let batch = x.len() / (c * h * wd);
        let mut y = vec![0.0; batch * c_out * h * wd];
        for b in 0..batch {
            for o in 0..c_out {
                for i in 0..h {
                    for j in 0..wd {
                        let mut s = bias[o];
                        for ci in 0..c {
                            for u in 0..3 {
                                for v in 0..3 {
                                    let (yy, xx) = (i + u, j + v);
                                    if yy >= 1 && xx >= 1 && yy - 1 < h && xx - 1 < wd {
                                        s += w[((o * c + ci) * 3 + u) * 3 + v]
                                            * x[((b * c + ci) * h + yy - 1) * wd + xx - 1];
                                    }
                                }
                            }
                        }
                        y[((b * c_out + o) * h + i) * wd + j] = s;
                    }
                }
            }
        }
        y
    }

    /// Winograd equals the direct convolution (odd and even sizes, one-pixel images,
    /// bands of one tile row).
    #[test]
    fn matches_direct_convolution() {
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for (batch, c, c_out, h, wd) in [
            (2, 3, 4, 5, 7),
            (1, 5, 2, 6, 6),
            (1, 2, 3, 1, 1),
            (2, 4, 4, 2, 3),
            (1, 3, 5, 9, 4),
        ] {
            let x: Vec<f64> = (0..batch * c * h * wd).map(|_| next()).collect();
            let w: Vec<f64> = (0..c_out * c * 9).map(|_| next()).collect();
            let bias: Vec<f64> = (0..c_out).map(|_| next()).collect();
            let mut y = vec![0.0; batch * c_out * h * wd];
            conv3x3_into(&x, &w, Some(&bias), (c, h, wd), c_out, &mut y);
            let reference = direct(&x, &w, &bias, (c, h, wd));
            let err = y
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "{batch}x{c}x{h}x{wd} -> {c_out}: {err}");
        }
    }
}
