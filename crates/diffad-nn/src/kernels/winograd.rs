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

use crate::kernels::gemm::{gemm, Mat};

/// Most transformed values (`16 · max(C, C_out) · tiles`) per band.
#[cfg(not(test))]
const BUDGET: usize = 1 << 22;
/// The unit tests use bands of one tile row.
#[cfg(test)]
const BUDGET: usize = 1;

/// `U[o][ξ][c] = (G g_{o,c} Gᵀ)[ξ]` for the `(C_out, C, 3, 3)` weight `w` (parallel over
/// output channels; `U_ξ` is then the `(C_out, C)` matrix at offset `ξ·C`, row stride `16·C`).
fn transform_weights<T: WithDType>(w: &[T], c_out: usize, c: usize) -> Vec<T> {
    let mut u = vec![T::zero(); 16 * c_out * c];
    let half = T::from_f64(0.5);
    u.par_chunks_mut(16 * c).enumerate().for_each(|(o, uo)| {
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
                    uo[(i * 4 + j) * c + ci] = v;
                }
            }
        }
    });
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
///
/// Row-wise: the four input rows of a tile row (zero-padded to `2·tw + 2` columns) are
/// combined into `Bᵀ d` rows over the whole width, split into even and odd columns, and the
/// column combinations of `· B` are then contiguous in the tile index.
fn transform_input<T: WithDType>(x: &[T], t: &Tiles, (r0, r1): (usize, usize), v: &mut [T]) {
    let n = (r1 - r0) * t.tw;
    let (hw, wp, half) = (t.h * t.w, 2 * t.tw + 2, t.tw + 1);
    v[..t.c * 16 * n]
        .par_chunks_mut(16 * n)
        .enumerate()
        .for_each(|(ci, vc)| {
            let plane = &x[ci * hw..(ci + 1) * hw];
            let mut d = vec![T::zero(); 4 * wp];
            let mut bd = vec![T::zero(); 4 * wp];
            let mut eo = vec![T::zero(); 2 * half];
            for tr in r0..r1 {
                // The padded rows y = 2·tr - 1 + i, columns x = -1 .. 2·tw.
                for (i, row) in d.chunks_exact_mut(wp).enumerate() {
                    row.fill(T::zero());
                    let y = (2 * tr + i).wrapping_sub(1);
                    if y < t.h {
                        row[1..1 + t.w].copy_from_slice(&plane[y * t.w..(y + 1) * t.w]);
                    }
                }
                // Bᵀ d, row by row over the whole width.
                let (d0, rest) = d.split_at(wp);
                let (d1, rest) = rest.split_at(wp);
                let (d2, d3) = rest.split_at(wp);
                for (k, out) in bd.chunks_exact_mut(wp).enumerate() {
                    for (((o, &a0), (&a1, &a2)), &a3) in
                        out.iter_mut().zip(d0).zip(d1.iter().zip(d2)).zip(d3)
                    {
                        *o = match k {
                            0 => a0 - a2,
                            1 => a1 + a2,
                            2 => a2 - a1,
                            _ => a1 - a3,
                        };
                    }
                }
                let base = (tr - r0) * t.tw;
                for (i, row) in bd.chunks_exact(wp).enumerate() {
                    let (even, odd) = eo.split_at_mut(half);
                    for (k, pair) in row.chunks_exact(2).enumerate() {
                        even[k] = pair[0];
                        odd[k] = pair[1];
                    }
                    // Columns 2·tc .. 2·tc + 3 are even[tc], odd[tc], even[tc+1], odd[tc+1].
                    for j in 0..4 {
                        let out = &mut vc[(i * 4 + j) * n + base..(i * 4 + j) * n + base + t.tw];
                        for (tc, o) in out.iter_mut().enumerate() {
                            let (e0, o0, e1, o1) = (even[tc], odd[tc], even[tc + 1], odd[tc + 1]);
                            *o = match j {
                                0 => e0 - e1,
                                1 => o0 + e1,
                                2 => e1 - o0,
                                _ => o0 - o1,
                            };
                        }
                    }
                }
            }
        });
}

/// `y[o] = Aᵀ M[o] A + bias[o]` for the tiles of tile rows `r0..r1` (row-wise, like
/// [`transform_input`]).
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
            let mut am = vec![T::zero(); 8 * t.tw];
            for tr in r0..r1 {
                let base = (tr - r0) * t.tw;
                let e =
                    |i: usize, j: usize| &mo[(i * 4 + j) * n + base..(i * 4 + j) * n + base + t.tw];
                // Aᵀ m: rows a = 0, 1 of four columns j, each a vector over the tiles.
                for (aj, out) in am.chunks_exact_mut(t.tw).enumerate() {
                    let (a, j) = (aj / 4, aj % 4);
                    let (m0, m1, m2, m3) = (e(0, j), e(1, j), e(2, j), e(3, j));
                    for (tc, o) in out.iter_mut().enumerate() {
                        *o = if a == 0 {
                            m0[tc] + m1[tc] + m2[tc]
                        } else {
                            m1[tc] - m2[tc] - m3[tc]
                        };
                    }
                }
                for a in 0..2 {
                    let yy = 2 * tr + a;
                    if yy >= t.h {
                        continue;
                    }
                    let r = |j: usize| &am[(a * 4 + j) * t.tw..(a * 4 + j + 1) * t.tw];
                    let (c0, c1, c2, c3) = (r(0), r(1), r(2), r(3));
                    let row = &mut yo[yy * t.w..(yy + 1) * t.w];
                    for (tc, pair) in row.chunks_mut(2).enumerate() {
                        pair[0] = c0[tc] + c1[tc] + c2[tc] + b;
                        if let Some(second) = pair.get_mut(1) {
                            *second = c1[tc] - c2[tc] - c3[tc] + b;
                        }
                    }
                }
            }
        });
}

/// Whether [`conv3x3_into`] is worth using: enough channels for its `C`-deep gemms to run
/// near peak, and enough tiles per image. Measured with `benches/nn.rs` against the im2col
/// path (forward): at batch 1, 1.29x at c128 256x256, 1.53x at c256 128x128, 1.48x at
/// c512 64x64; at batch 8, 1.51x at c256 32x32 and 1.29x at c512 16x16. At 64 channels it
/// was faster at batch 1 but 8% slower at batch 8, and at c1024 8x8 (16 tiles per image)
/// slower, so those stay on im2col.
pub(crate) fn applies(c: usize, c_out: usize, h: usize, w: usize) -> bool {
    c >= 128 && c_out >= 128 && h.div_ceil(2) * w.div_ceil(2) >= 64
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
                // SAFETY: U_ξ is (C_out, C) at row stride 16·C starting at ξ·C; V_ξ is (C, n) at row stride 16·n
                // starting at ξ·n; M_ξ is (C_out, n) at row stride 16·n starting at ξ·n.
                unsafe {
                    gemm(
                        (c_out, n, c),
                        &mut m[xi * n..],
                        16 * n,
                        false,
                        Mat {
                            ptr: u[xi * c..].as_ptr(),
                            rs: (16 * c) as isize,
                            cs: 1,
                        },
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
