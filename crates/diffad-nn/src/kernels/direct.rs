//! Direct 3x3 convolutions (stride 1, padding 1) in `f32` with AVX-512: the forward pass
//! (which is also the input gradient, a convolution of the output gradient with the
//! flipped, transposed weight) and the weight gradient, with no unfolded columns.
//!
//! With a few dozen channels, the im2col path spends as long building and packing its
//! columns (nine copies of the input) as multiplying them. Here the input rows are read in
//! place: an output tile of `OB` channels × one row × `16·NV` columns lives in `OB·NV`
//! vector registers, and every input value loaded (shifted by `v - 1` columns with a
//! masked load, so that the zero padding costs nothing) is multiplied by `OB` broadcast
//! weights. Images narrower than sixteen columns run their rows together instead (a tile
//! is `16·NV` consecutive positions of the plane, so that an 8x8 map fills whole vectors;
//! each tap's load is shifted by `(u - 1)·W + v - 1` and masked to the lanes whose tap
//! falls inside the image):
//!
//! ```text
//! y[o, i, j] = b[o] + Σ_c Σ_{u,v} w[o, c, u, v] · x[c, i + u - 1, j + v - 1]
//! dW[o, c, u, v] = Σ_b Σ_{i,j} dy[b, o, i, j] · x[b, c, i + u - 1, j + v - 1]
//! ```
//!
//! The weight gradient keeps `OB·9` vector accumulators per input channel (one per tap,
//! sixteen partial sums each) over the whole batch, and sums their lanes at the end.
//! Both are parallel over independent tiles ([`par_for`] tasks), each on one core. Used for
//! `f32` on CPUs with AVX-512F, for the layer sizes where it measured faster than the
//! im2col path ([`applies`]).

use crate::kernels::util::{par_chunks_mut, par_for, Shared};

/// Columns per vector.
const LANES: usize = 16;
/// Most vectors of one row a tile holds.
const MAX_NV: usize = 4;

/// Whether the CPU has AVX-512F (checked once).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a 3x3, stride-1, padding-1 `f32` convolution of `c` to `c_out` channels on
/// `h x w` images takes this path: AVX-512F, and rows of at least sixteen columns or
/// planes of at least 64 positions. Measured single-threaded at batch 8 on a loaded
/// machine (GMAC/s, best of 25): the plane-wise kernel ([`forward_flat`]) 62-68 at c64
/// and c128 to 64 channels on 8x8, where the row-by-row kernel (whose 8-column rows leave
/// half of each vector empty) ran 19-30 and the im2col path 53 (earlier, idle).
pub(crate) fn applies(c: usize, c_out: usize, h: usize, w: usize) -> bool {
    has_avx512() && c > 0 && c_out > 0 && h > 0 && w > 0 && (h * w >= 64 || w >= 16)
}

/// Lane masks of one chunk of up to [`MAX_NV`] vectors starting at column `j0` of a row
/// of `w` columns: `out[k]` the lanes of columns inside the row,
/// `input[k][v]` those whose input column `j + v - 1` is inside the row.
#[derive(Clone, Copy)]
struct Masks {
    out: [u16; MAX_NV],
    input: [[u16; 3]; MAX_NV],
}

impl Masks {
    fn new(j0: usize, w: usize) -> Self {
        let mut m = Self {
            out: [0; MAX_NV],
            input: [[0; 3]; MAX_NV],
        };
        for k in 0..MAX_NV {
            for l in 0..LANES {
                let j = j0 + k * LANES + l;
                if j < w {
                    m.out[k] |= 1 << l;
                }
                for v in 0..3 {
                    if tap_inside(j, v, w) {
                        m.input[k][v] |= 1 << l;
                    }
                }
            }
        }
        m
    }
}

/// Whether tap `d` (0, 1 or 2) of position `i` reads index `i + d - 1` inside `0..n` (the
/// zero padding lies outside).
fn tap_inside(i: usize, d: usize, n: usize) -> bool {
    i + d >= 1 && i + d - 1 < n
}

/// The column chunks of a row of `w` columns: `(j0, masks)` every `16·nv` columns.
fn chunks(w: usize, nv: usize) -> Vec<(usize, Masks)> {
    (0..w)
        .step_by(LANES * nv)
        .map(|j0| (j0, Masks::new(j0, w)))
        .collect()
}

/// Vectors per chunk and output channels per tile for rows of `w` columns and `c_out`
/// output channels: `OB·NV <= 24` accumulators, the block that wastes fewest channels.
fn tile(w: usize, c_out: usize) -> (usize, usize) {
    let nv = w.div_ceil(LANES).min(MAX_NV);
    let choices: &[usize] = match nv {
        4 => &[6, 4],
        3 => &[8, 6, 4],
        2 => &[12, 8, 6, 4],
        _ => &[16, 12, 8, 6, 4],
    };
    let waste = |ob: usize| c_out.div_ceil(ob) * ob - c_out;
    let ob = choices
        .iter()
        .copied()
        .min_by_key(|&ob| (waste(ob) * 8 > c_out.max(4), waste(ob) > 0, usize::MAX - ob))
        .unwrap_or(4);
    (nv, ob)
}

/// `w` `(C_out, C, 3, 3)` repacked per block of `ob` output channels as
/// `[block][c][u·3 + v][ob]` (zero for the channels past `C_out`), so that a tile's
/// broadcasts read consecutive values.
fn pack_weights(w: &[f32], c_out: usize, c: usize, ob: usize) -> Vec<f32> {
    let blocks = c_out.div_ceil(ob);
    let mut p = vec![0f32; blocks * c * 9 * ob];
    for o in 0..c_out {
        let (blk, oo) = (o / ob, o % ob);
        for ci in 0..c {
            for t in 0..9 {
                p[((blk * c + ci) * 9 + t) * ob + oo] = w[(o * c + ci) * 9 + t];
            }
        }
    }
    p
}

/// The weights packed in blocks of `ob` output channels ([`pack_weights`]) and the bias
/// padded with zeros to whole blocks (zero when there is none).
fn pack_operands(
    w: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    c_out: usize,
    ob: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut bias_p = vec![0f32; c_out.div_ceil(ob) * ob];
    if let Some(b) = bias {
        bias_p[..c_out].copy_from_slice(b);
    }
    (pack_weights(w, c_out, c, ob), bias_p)
}

/// One output tile's operands: a sample `x` `(C, H, W)`, its packed weights and bias from
/// the tile's first output channel, and the output at that channel.
struct Tile {
    x: *const f32,
    /// A zero row for the taps above and below the image (the row-by-row kernel only).
    zeros: *const f32,
    c: usize,
    h: usize,
    w: usize,
    weights: *const f32,
    bias: *const f32,
    y: *mut f32,
    valid: usize,
}

/// [`forward`] row by row: a tile is `OB` output channels × one row × `16·NV` columns, and
/// the taps above and below the image read a zero row. Parallel over tiles of (sample,
/// band of rows, block of output channels).
fn forward_rows_path(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (c, h, wd): (usize, usize, usize),
    c_out: usize,
    y: &mut [f32],
) {
    let chw = c * h * wd;
    if chw == 0 || c_out == 0 {
        return;
    }
    let batch = x.len() / chw;
    let (nv, ob) = tile(wd, c_out);
    let (packed, bias_p) = pack_operands(w, bias, c, c_out, ob);
    let blocks = c_out.div_ceil(ob);
    let chunks = chunks(wd, nv);
    // The row that taps outside the image read (zero padding): `W` columns plus a whole
    // last chunk, whose masked loads may reach past `W`.
    let zeros = vec![0f32; wd + LANES * nv];
    // About 2 M multiply-adds per task, so that the hand-offs stay negligible.
    let per_row = (ob * c * 9 * wd).max(1);
    let rows = ((1 << 21) / per_row).clamp(1, h);
    let bands = h.div_ceil(rows);
    let out = Shared(y.as_mut_ptr());
    let hw = h * wd;
    par_for(
        batch * bands * blocks,
        batch * c_out * h * wd * c * 9,
        |t| {
            let (b, rest) = (t / (bands * blocks), t % (bands * blocks));
            let (band, blk) = (rest / blocks, rest % blocks);
            let (i0, i1) = (band * rows, ((band + 1) * rows).min(h));
            let o0 = blk * ob;
            let tile = Tile {
                x: x[b * chw..(b + 1) * chw].as_ptr(),
                zeros: zeros.as_ptr(),
                c,
                h,
                w: wd,
                weights: packed[blk * c * 9 * ob..].as_ptr(),
                bias: bias_p[o0..].as_ptr(),
                // SAFETY: channel o0 of sample b is inside `y`; this task writes only the
                // channels o0..o0 + ob (those below C_out) of rows i0..i1 of sample b.
                y: out.at((b * c_out + o0) * hw),
                valid: (c_out - o0).min(ob),
            };
            for &(j0, masks) in &chunks {
                // SAFETY: `has_avx512` holds (checked by `applies`); the pointers address
                // whole channels of the sample, and the masks keep every access in its row.
                unsafe { rows_tile(ob, nv, &tile, (i0, i1), j0, &masks) };
            }
        },
    );
}

/// Dispatches [`forward_rows`] on the tile shape.
///
/// # Safety
/// As [`forward_rows`].
unsafe fn rows_tile(ob: usize, nv: usize, t: &Tile, rows: (usize, usize), j0: usize, m: &Masks) {
    // SAFETY: forwarded.
    unsafe {
        match (ob, nv) {
            (6, 4) => forward_rows::<6, 4>(t, rows, j0, m),
            (4, 4) => forward_rows::<4, 4>(t, rows, j0, m),
            (8, 3) => forward_rows::<8, 3>(t, rows, j0, m),
            (6, 3) => forward_rows::<6, 3>(t, rows, j0, m),
            (4, 3) => forward_rows::<4, 3>(t, rows, j0, m),
            (12, 2) => forward_rows::<12, 2>(t, rows, j0, m),
            (8, 2) => forward_rows::<8, 2>(t, rows, j0, m),
            (6, 2) => forward_rows::<6, 2>(t, rows, j0, m),
            (4, 2) => forward_rows::<4, 2>(t, rows, j0, m),
            (16, 1) => forward_rows::<16, 1>(t, rows, j0, m),
            (12, 1) => forward_rows::<12, 1>(t, rows, j0, m),
            (8, 1) => forward_rows::<8, 1>(t, rows, j0, m),
            (6, 1) => forward_rows::<6, 1>(t, rows, j0, m),
            _ => forward_rows::<4, 1>(t, rows, j0, m),
        }
    }
}

/// Output rows `i0..i1`, columns `j0..j0 + 16·NV` of `OB` output channels.
///
/// # Safety
/// The CPU has AVX-512F; `t.x` holds `C·H·W` values, `t.weights` `C·9·OB`, `t.bias` `OB`,
/// `t.zeros` `W` zeros, and `t.y` the first `t.valid` of `OB` output channels of `H·W`
/// values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_rows<const OB: usize, const NV: usize>(
    t: &Tile,
    (i0, i1): (usize, usize),
    j0: usize,
    m: &Masks,
) {
    use std::arch::x86_64::*;
    let hw = t.h * t.w;
    for i in i0..i1 {
        // SAFETY (whole body): every pointer below stays inside the buffers of the
        // contract (rows outside the image read the zero row); shifted loads are masked
        // to the columns of their row.
        unsafe {
            // The bias is added after the sum (as the im2col path does), so that the sum
            // of products is rounded at its own scale.
            let mut acc = [[_mm512_setzero_ps(); NV]; OB];
            let outside = |u: usize| i + u == 0 || i + u > t.h;
            for ci in 0..t.c {
                let plane = t.x.add(ci * hw);
                let wc = t.weights.add(ci * 9 * OB);
                for u in 0..3 {
                    let src = if outside(u) {
                        t.zeros
                    } else {
                        plane.add((i + u - 1) * t.w)
                    };
                    for v in 0..3 {
                        let wt = wc.add((u * 3 + v) * OB);
                        let mut wv = [_mm512_setzero_ps(); OB];
                        for (o, r) in wv.iter_mut().enumerate() {
                            *r = _mm512_set1_ps(*wt.add(o));
                        }
                        #[allow(clippy::needless_range_loop)] // `k` indexes `acc[o]` and `m.input`
                        for k in 0..NV {
                            let p = src.wrapping_add(j0 + k * LANES + v).wrapping_sub(1);
                            let xv = _mm512_maskz_loadu_ps(m.input[k][v], p);
                            for o in 0..OB {
                                acc[o][k] = _mm512_fmadd_ps(wv[o], xv, acc[o][k]);
                            }
                        }
                    }
                }
            }
            for (o, row) in acc.iter().enumerate().take(t.valid) {
                let dst = t.y.add(o * hw + i * t.w + j0);
                let b = _mm512_set1_ps(*t.bias.add(o));
                for (k, v) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(dst.add(k * LANES), m.out[k], _mm512_add_ps(*v, b));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_rows<const OB: usize, const NV: usize>(
    _: &Tile,
    _: (usize, usize),
    _: usize,
    _: &Masks,
) {
    unreachable!("the direct kernels need AVX-512 (see `applies`)")
}

/// Lane masks of one chunk of up to [`MAX_NV`] vectors of consecutive positions of a
/// plane, rows run together ([`forward_flat`]): `out[k]` the lanes inside the plane,
/// `input[k][u·3 + v]` those whose tap `(u, v)` reads inside the image (row `i + u - 1`
/// and column `j + v - 1` both in range).
#[derive(Clone, Copy)]
struct FlatMasks {
    out: [u16; MAX_NV],
    input: [[u16; 9]; MAX_NV],
}

/// The chunks `(p0, masks)` of an `h x w` plane taken `16·nv` positions at a time.
fn flat_chunks(h: usize, w: usize, nv: usize) -> Vec<(usize, FlatMasks)> {
    let hw = h * w;
    (0..hw)
        .step_by(LANES * nv)
        .map(|p0| {
            let mut m = FlatMasks {
                out: [0; MAX_NV],
                input: [[0; 9]; MAX_NV],
            };
            for k in 0..nv {
                for l in 0..LANES {
                    let p = p0 + k * LANES + l;
                    if p >= hw {
                        continue;
                    }
                    m.out[k] |= 1 << l;
                    let (i, j) = (p / w, p % w);
                    for u in 0..3 {
                        for v in 0..3 {
                            if tap_inside(i, u, h) && tap_inside(j, v, w) {
                                m.input[k][u * 3 + v] |= 1 << l;
                            }
                        }
                    }
                }
            }
            (p0, m)
        })
        .collect()
}

/// Vectors per chunk and output channels per tile of [`forward_flat`] for planes of `hw`
/// positions and `c_out` output channels: the shape (at most 24 accumulators) that wastes
/// the fewest multiply-adds on channels past `C_out` and positions past the plane, the
/// earlier in [`TILE_SHAPES`] on a tie.
fn flat_tile(hw: usize, c_out: usize) -> (usize, usize) {
    TILE_SHAPES
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|&(rank, (nv, ob))| {
            let cost = c_out.div_ceil(ob) * ob * hw.div_ceil(LANES * nv) * LANES * nv;
            (cost, rank)
        })
        .map_or((1, 16), |(_, shape)| shape)
}

/// The tile shapes `(NV, OB)` of [`forward_flat`], fastest first. One vector of sixteen
/// output channels ran fastest (perf samples of the VAE step at base width 32 with every
/// plane on this kernel, single-threaded on a loaded machine: 4,6 and 3,8 took 12 % and
/// 16 % longer, 2,12 49 %): each tap is then one unaligned vector load and sixteen
/// broadcasts for sixteen multiply-adds. On the idle machine the VAE steps ran 6-15 %
/// slower with their 16- to 64-column rows on this kernel than on the row-by-row one, so
/// it is kept for the narrow images.
const TILE_SHAPES: [(usize, usize); 9] = [
    (1, 16),
    (4, 6),
    (3, 8),
    (2, 12),
    (1, 12),
    (4, 4),
    (3, 6),
    (2, 8),
    (1, 8),
];

/// `y = conv3x3(x, w) + bias` (stride 1, padding 1) for `x` `(B, C, H, W)`, `w`
/// `(C_out, C, 3, 3)`, into `y` `(B, C_out, H, W)` (every element written): row by row
/// ([`forward_rows_path`]) for rows of sixteen columns or more, with the rows run together
/// ([`forward_flat`]) for narrower images.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (c, h, wd): (usize, usize, usize),
    c_out: usize,
    y: &mut [f32],
) {
    if wd >= LANES {
        forward_rows_path(x, w, bias, (c, h, wd), c_out, y);
    } else {
        forward_flat(x, w, bias, (c, h, wd), c_out, y);
    }
}

/// [`forward`] with the rows of each plane run together: a tile is `OB` output channels ×
/// `16·NV` consecutive positions of the plane (several rows of a narrow image); each tap's
/// load is the tile's positions shifted by `(u - 1)·W + v - 1`, masked to the lanes whose
/// tap reads inside the image. Parallel over tasks of (sample, band of chunks, block of
/// output channels).
fn forward_flat(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (c, h, wd): (usize, usize, usize),
    c_out: usize,
    y: &mut [f32],
) {
    let (chw, hw) = (c * h * wd, h * wd);
    if chw == 0 || c_out == 0 {
        return;
    }
    let batch = x.len() / chw;
    let (nv, ob) = flat_tile(hw, c_out);
    let (packed, bias_p) = pack_operands(w, bias, c, c_out, ob);
    let blocks = c_out.div_ceil(ob);
    let chunks = flat_chunks(h, wd, nv);
    // About 2 M multiply-adds per task, so that the hand-offs stay negligible.
    let per_chunk = (ob * c * 9 * LANES * nv).max(1);
    let span = ((1 << 21) / per_chunk).clamp(1, chunks.len());
    let bands = chunks.len().div_ceil(span);
    let out = Shared(y.as_mut_ptr());
    par_for(batch * bands * blocks, batch * c_out * hw * c * 9, |t| {
        let (b, rest) = (t / (bands * blocks), t % (bands * blocks));
        let (band, blk) = (rest / blocks, rest % blocks);
        let mine = &chunks[band * span..((band + 1) * span).min(chunks.len())];
        let o0 = blk * ob;
        let tile = Tile {
            x: x[b * chw..(b + 1) * chw].as_ptr(),
            zeros: std::ptr::null(),
            c,
            h,
            w: wd,
            weights: packed[blk * c * 9 * ob..].as_ptr(),
            bias: bias_p[o0..].as_ptr(),
            // SAFETY: channel o0 of sample b is inside `y`; this task writes only the
            // channels o0..o0 + ob (those below C_out) of its chunks of sample b.
            y: out.at((b * c_out + o0) * hw),
            valid: (c_out - o0).min(ob),
        };
        // SAFETY: `has_avx512` holds (checked by `applies`); the pointers address
        // whole channels of the sample, and the masks keep every access in the plane.
        unsafe { forward_tile(ob, nv, &tile, mine) };
    });
}

/// Dispatches [`forward_chunks`] on the tile shape.
///
/// # Safety
/// As [`forward_chunks`].
unsafe fn forward_tile(ob: usize, nv: usize, t: &Tile, chunks: &[(usize, FlatMasks)]) {
    // SAFETY: forwarded.
    unsafe {
        match (ob, nv) {
            (6, 4) => forward_chunks::<6, 4>(t, chunks),
            (8, 3) => forward_chunks::<8, 3>(t, chunks),
            (12, 2) => forward_chunks::<12, 2>(t, chunks),
            (16, 1) => forward_chunks::<16, 1>(t, chunks),
            (4, 4) => forward_chunks::<4, 4>(t, chunks),
            (6, 3) => forward_chunks::<6, 3>(t, chunks),
            (8, 2) => forward_chunks::<8, 2>(t, chunks),
            (12, 1) => forward_chunks::<12, 1>(t, chunks),
            _ => forward_chunks::<8, 1>(t, chunks),
        }
    }
}

/// The chunks `chunks` of `OB` output channels (see [`forward_flat`]).
///
/// # Safety
/// The CPU has AVX-512F; `t.x` holds `C·H·W` values, `t.weights` `C·9·OB`, `t.bias` `OB`,
/// and `t.y` the first `t.valid` of `OB` output channels of `H·W` values each; `chunks`
/// are [`flat_chunks`] of the plane with `NV` vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_chunks<const OB: usize, const NV: usize>(
    t: &Tile,
    chunks: &[(usize, FlatMasks)],
) {
    use std::arch::x86_64::*;
    let hw = t.h * t.w;
    for &(p0, ref m) in chunks {
        // SAFETY (whole body): the loads are masked to the lanes whose tap reads inside
        // the plane (a masked-off lane is never accessed), the stores to the lanes inside
        // the plane.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; OB];
            for ci in 0..t.c {
                let base = t.x.add(ci * hw + p0);
                let wc = t.weights.add(ci * 9 * OB);
                for u in 0..3 {
                    for v in 0..3 {
                        let tap = u * 3 + v;
                        let src = base.wrapping_add(u * t.w + v).wrapping_sub(t.w + 1);
                        let wt = wc.add(tap * OB);
                        let mut wv = [_mm512_setzero_ps(); OB];
                        for (o, r) in wv.iter_mut().enumerate() {
                            *r = _mm512_set1_ps(*wt.add(o));
                        }
                        #[allow(clippy::needless_range_loop)] // `k` indexes `acc[o]` and `m.input`
                        for k in 0..NV {
                            let xv =
                                _mm512_maskz_loadu_ps(m.input[k][tap], src.wrapping_add(k * LANES));
                            for o in 0..OB {
                                acc[o][k] = _mm512_fmadd_ps(wv[o], xv, acc[o][k]);
                            }
                        }
                    }
                }
            }
            // The bias is added after the sum (as the im2col path does), so that the sum of
            // products is rounded at its own scale.
            for (o, row) in acc.iter().enumerate().take(t.valid) {
                let dst = t.y.add(o * hw + p0);
                let b = _mm512_set1_ps(*t.bias.add(o));
                for (k, v) in row.iter().enumerate() {
                    let p = dst.wrapping_add(k * LANES);
                    _mm512_mask_storeu_ps(p, m.out[k], _mm512_add_ps(*v, b));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_chunks<const OB: usize, const NV: usize>(_: &Tile, _: &[(usize, FlatMasks)]) {
    unreachable!("the direct kernels need AVX-512 (see `applies`)")
}

/// Whether [`weight_grad`] beats the im2col path's weight gradient for rows of `w`
/// columns. Measured single-threaded at batch 8 (GF/s, this kernel / im2col): 84 / 20 at
/// c8 64x64, 87 / 49 at c16 64x64, 65 / 55 at c32 32x32, 68 / 61 at c32 16x16, 84 / 84 at
/// c32 64x64; but 82 / 105 at c64 32x32, 85 / 104 at c64 64x64, 67 / 82 at c64 16x16 and
/// 24 / 41 at c64 8x8.
pub(crate) fn weight_grad_applies(c: usize, c_out: usize, w: usize) -> bool {
    let narrow = c.min(c_out);
    w >= 8 && (narrow <= 16 || (narrow <= 32 && w >= 16))
}

/// Output rows per step of [`weight_grad_rows`].
const DW_ROWS: usize = 4;

/// `dW` `(C_out, C, 3, 3)` of the 3x3, stride-1, padding-1 convolution of `x`
/// `(B, C, H, W)` with output gradient `gy` `(B, C_out, H, W)` (every element written).
/// One task per (sample, output channel), over every input channel, so that the sample
/// stays in the core's cache; each sample's sums go to its own slice of `per_sample`,
/// summed over the samples at the end.
pub(crate) fn weight_grad(
    x: &[f32],
    gy: &[f32],
    (c, h, wd): (usize, usize, usize),
    c_out: usize,
    dw: &mut [f32],
) {
    let chw = c * h * wd;
    if chw == 0 || c_out == 0 {
        dw.fill(0.0);
        return;
    }
    let batch = x.len() / chw;
    let masks: Vec<(usize, Masks)> = chunks(wd, 1);
    // The row that taps outside the image (or output rows past the last) read.
    let zeros = vec![0f32; wd];
    let n_w = c_out * c * 9;
    let mut per_sample = vec![0f32; batch * n_w];
    let out = Shared(per_sample.as_mut_ptr());
    let hw = h * wd;
    par_for(batch * c_out, batch * c_out * hw * c * 9, |t| {
        let (b, o) = (t / c_out, t % c_out);
        for ci in 0..c {
            let g = GradTile {
                x: x[(b * c + ci) * hw..(b * c + ci + 1) * hw].as_ptr(),
                gy: gy[(b * c_out + o) * hw..(b * c_out + o + 1) * hw].as_ptr(),
                zeros: zeros.as_ptr(),
                h,
                w: wd,
            };
            // SAFETY: `has_avx512` holds (checked by `applies`); `g` addresses one plane of
            // `x` and one of `gy`, read with masked loads inside each row.
            let taps = unsafe { weight_grad_rows(&g, &masks) };
            // SAFETY: dW_b[o, ci, ..] is inside `per_sample` and written by this task only.
            let at = b * n_w + (o * c + ci) * 9;
            unsafe { std::ptr::copy_nonoverlapping(taps.as_ptr(), out.at(at), 9) };
        }
    });
    par_chunks_mut(dw, 9, batch * n_w, |k, d| {
        d.fill(0.0);
        for sample in per_sample.chunks_exact(n_w) {
            for (d, v) in d.iter_mut().zip(&sample[k * 9..(k + 1) * 9]) {
                *d += *v;
            }
        }
    });
}

/// One plane of the input `x` `(H, W)` and of the output gradient `gy` `(H, W)`, and a row
/// of `W` zeros.
struct GradTile {
    x: *const f32,
    gy: *const f32,
    zeros: *const f32,
    h: usize,
    w: usize,
}

/// The nine taps `dW[u·3 + v] = Σ_{i,j} gy[i, j] · x[i + u - 1, j + v - 1]` of one pair of
/// planes, [`DW_ROWS`] output rows at a time: every input row loaded serves each output
/// row it reaches (nine vector accumulators, one per tap, summed across lanes at the end).
///
/// # Safety
/// The CPU has AVX-512F; `g.x` and `g.gy` hold `H·W` values, `g.zeros` `W` zeros, and
/// `masks` are the one-vector chunks of a row of `W`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_rows(g: &GradTile, masks: &[(usize, Masks)]) -> [f32; 9] {
    use std::arch::x86_64::*;
    const R: usize = DW_ROWS;
    let mut acc = [_mm512_setzero_ps(); 9];
    // SAFETY (whole body): the pointers stay inside the planes (rows outside the image, of
    // `x` or of `gy`, read the zero row instead); loads are masked to the columns of their
    // row.
    unsafe {
        for &(j0, m) in masks {
            for i0 in (0..g.h).step_by(R) {
                // Output rows i0..i0 + R (zero past H) and input rows i0 - 1..i0 + R + 1.
                let mut gv = [_mm512_setzero_ps(); R];
                for (r, v) in gv.iter_mut().enumerate() {
                    let src = if i0 + r < g.h {
                        g.gy.add((i0 + r) * g.w)
                    } else {
                        g.zeros
                    };
                    *v = _mm512_maskz_loadu_ps(m.out[0], src.wrapping_add(j0));
                }
                for q in 0..R + 2 {
                    let src = if i0 + q == 0 || i0 + q > g.h {
                        g.zeros
                    } else {
                        g.x.add((i0 + q - 1) * g.w)
                    };
                    for v in 0..3 {
                        let p = src.wrapping_add(j0 + v).wrapping_sub(1);
                        let xv = _mm512_maskz_loadu_ps(m.input[0][v], p);
                        // Input row q feeds output row r through the tap u = q - r.
                        for (r, gr) in gv.iter().enumerate() {
                            if q >= r && q - r < 3 {
                                let t = (q - r) * 3 + v;
                                acc[t] = _mm512_fmadd_ps(*gr, xv, acc[t]);
                            }
                        }
                    }
                }
            }
        }
        let mut taps = [0f32; 9];
        for (t, a) in taps.iter_mut().zip(acc) {
            *t = _mm512_reduce_add_ps(a);
        }
        taps
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_grad_rows(_: &GradTile, _: &[(usize, Masks)]) -> [f32; 9] {
    unreachable!("the direct kernels need AVX-512 (see `applies`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(x: &[f32], w: &[f32], bias: &[f32], (c, h, wd): (usize, usize, usize)) -> Vec<f64> {
        let c_out = bias.len();
        let batch = x.len() / (c * h * wd);
        let mut y = vec![0.0; batch * c_out * h * wd];
        for b in 0..batch {
            for o in 0..c_out {
                for i in 0..h {
                    for j in 0..wd {
                        let mut s = f64::from(bias[o]);
                        for ci in 0..c {
                            for u in 0..3 {
                                for v in 0..3 {
                                    let (yy, xx) = (i + u, j + v);
                                    if yy >= 1 && xx >= 1 && yy - 1 < h && xx - 1 < wd {
                                        s += f64::from(w[((o * c + ci) * 3 + u) * 3 + v])
                                            * f64::from(
                                                x[((b * c + ci) * h + yy - 1) * wd + xx - 1],
                                            );
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

    fn direct_dw(
        x: &[f32],
        gy: &[f32],
        (c, h, wd): (usize, usize, usize),
        c_out: usize,
    ) -> Vec<f64> {
        let batch = x.len() / (c * h * wd);
        let mut dw = vec![0.0; c_out * c * 9];
        for b in 0..batch {
            for o in 0..c_out {
                for ci in 0..c {
                    for u in 0..3 {
                        for v in 0..3 {
                            let mut s = 0.0;
                            for i in 0..h {
                                for j in 0..wd {
                                    let (yy, xx) = (i + u, j + v);
                                    if yy >= 1 && xx >= 1 && yy - 1 < h && xx - 1 < wd {
                                        s += f64::from(gy[((b * c_out + o) * h + i) * wd + j])
                                            * f64::from(
                                                x[((b * c + ci) * h + yy - 1) * wd + xx - 1],
                                            );
                                    }
                                }
                            }
                            dw[((o * c + ci) * 3 + u) * 3 + v] += s;
                        }
                    }
                }
            }
        }
        dw
    }

    /// The forward pass and the weight gradient equal the direct sums, for row widths
    /// that fill one to five vectors (with partial last vectors), every tile shape, and
    /// output channel counts that do not divide into blocks.
    #[test]
    fn matches_direct_sums() {
        if !has_avx512() {
            return;
        }
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for (batch, c, c_out, h, wd) in [
            (2, 3, 5, 5, 8),
            (1, 4, 7, 3, 17),
            (2, 2, 13, 4, 32),
            (1, 3, 9, 2, 45),
            (2, 5, 6, 6, 64),
            (1, 2, 3, 3, 80),
            (1, 3, 17, 1, 16),
            (2, 3, 64, 8, 8),
            (1, 2, 20, 5, 3),
            (2, 3, 7, 4, 4),
        ] {
            let x: Vec<f32> = (0..batch * c * h * wd).map(|_| next()).collect();
            let w: Vec<f32> = (0..c_out * c * 9).map(|_| next()).collect();
            let bias: Vec<f32> = (0..c_out).map(|_| next()).collect();
            let gy: Vec<f32> = (0..batch * c_out * h * wd).map(|_| next()).collect();
            let reference = direct(&x, &w, &bias, (c, h, wd));
            let mut y = vec![f32::NAN; batch * c_out * h * wd];
            forward(&x, &w, Some(&bias), (c, h, wd), c_out, &mut y);
            let err = y
                .iter()
                .zip(&reference)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "forward {batch}x{c}x{h}x{wd} -> {c_out}: {err}");
            let reference = direct_dw(&x, &gy, (c, h, wd), c_out);
            let mut dw = vec![f32::NAN; c_out * c * 9];
            weight_grad(&x, &gy, (c, h, wd), c_out, &mut dw);
            let err = dw
                .iter()
                .zip(&reference)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "dW {batch}x{c}x{h}x{wd} -> {c_out}: {err}");
        }
    }
}
