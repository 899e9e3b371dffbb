//! k-nearest-neighbour distances, the touch model's hot path.
//!
//! Scoring one stroke compares it with every stroke of the population reference (4,000
//! rows of 27 whitened values) and of the user's template. Stored row by row, each
//! comparison ends in a horizontal sum and a remainder loop (27 is not a multiple of
//! the SIMD width). [`RowBlocks`] stores the rows in blocks of [`LANES`], column by
//! column inside a block, so one pass over a block computes [`LANES`] distances at once
//! with plain element-wise arithmetic the compiler turns into SIMD, and a block none of
//! whose rows can enter the current k nearest is dismissed with one comparison per lane.
//! Profiles are still stored row by row; the blocks are built when a profile is decoded.

/// Rows per block, and the number of distances computed side by side.
pub const LANES: usize = 8;

/// Columns added between two tests of whether a block can still hold a nearer row.
const COLUMNS_PER_CHECK: usize = 7;

/// Rows of `dims` values in blocks of [`LANES`] rows: block `b` holds, for each column
/// `j`, the values of rows `b·LANES … b·LANES + LANES − 1` in column `j`. The last block
/// is padded with zeros; padded rows are never reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowBlocks {
    dims: usize,
    rows: usize,
    data: Vec<f32>,
}

impl RowBlocks {
    /// Blocks of the row-major `rows` (`dims` columns; a trailing partial row is ignored).
    pub fn new(rows: &[f32], dims: usize) -> RowBlocks {
        if dims == 0 {
            return RowBlocks::default();
        }
        let n = rows.len() / dims;
        let blocks = n.div_ceil(LANES);
        let mut data = vec![0.0f32; blocks * dims * LANES];
        for (i, row) in rows.chunks_exact(dims).enumerate() {
            let block = &mut data[(i / LANES) * dims * LANES..][..dims * LANES];
            for (j, &v) in row.iter().enumerate() {
                block[j * LANES + i % LANES] = v;
            }
        }
        RowBlocks {
            dims,
            rows: n,
            data,
        }
    }

    /// Number of (unpadded) rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Mean Euclidean distance from `x` (`dims` values) to its `k` nearest rows, skipping
    /// rows for which `skip(row index)` is true. NaN when no row is left.
    ///
    /// On a processor with AVX2 the same code is compiled for it (eight lanes per
    /// instruction instead of four). Each lane still adds its columns' squares in the same
    /// order with the same (unfused) operations, so both versions return the same
    /// number, bit for bit.
    pub fn mean_knn_distance(&self, x: &[f32], k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `knn_avx2` only requires AVX2, which the processor was just found
            // to have.
            return unsafe { self.knn_avx2(x, k, skip) };
        }
        self.knn(x, k, skip)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn knn_avx2(&self, x: &[f32], k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        self.knn(x, k, skip)
    }

    /// [`RowBlocks::mean_knn_distance`] for the processor the crate is compiled for;
    /// inlined into the AVX2 version so that it is compiled again with AVX2.
    #[inline(always)]
    fn knn(&self, x: &[f32], k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        debug_assert_eq!(x.len(), self.dims);
        let k = k.max(1);
        // The k smallest squared distances so far, ascending.
        let mut best: Vec<f32> = Vec::with_capacity(k + 1);
        if self.dims == 0 {
            return f64::NAN;
        }
        for (b, block) in self.data.chunks_exact(self.dims * LANES).enumerate() {
            let mut acc = [0.0f32; LANES];
            // Once k rows are held, a block whose every distance is no nearer than the
            // k-th is dismissed (the usual case after the first few blocks). Partial sums
            // of squares only grow, so the test is made every few columns and most
            // blocks are dismissed before their last column is read.
            let mut dismissed = false;
            for (columns, xs) in block
                .chunks(LANES * COLUMNS_PER_CHECK)
                .zip(x.chunks(COLUMNS_PER_CHECK))
            {
                for (column, &xj) in columns.chunks_exact(LANES).zip(xs) {
                    for l in 0..LANES {
                        let t = column[l] - xj;
                        acc[l] += t * t;
                    }
                }
                if best.len() == k && acc.iter().all(|&s| s >= best[k - 1]) {
                    dismissed = true;
                    break;
                }
            }
            if dismissed {
                continue;
            }
            let first = b * LANES;
            let valid = (self.rows - first).min(LANES);
            for (l, &s) in acc[..valid].iter().enumerate() {
                if skip(first + l) {
                    continue;
                }
                if best.len() < k || s < best[k - 1] {
                    // Insert after any equal value, shifting by hand: a few values, and
                    // `Vec::insert`'s call to `memmove` cost more than the move.
                    if best.len() == k {
                        best.pop();
                    }
                    best.push(s);
                    let mut at = best.len() - 1;
                    while at > 0 && best[at - 1] > s {
                        best[at] = best[at - 1];
                        at -= 1;
                    }
                    best[at] = s;
                }
            }
        }
        if best.is_empty() {
            return f64::NAN;
        }
        best.iter().map(|&s| (s as f64).sqrt()).sum::<f64>() / best.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: every distance, sorted.
    fn naive(x: &[f32], rows: &[f32], d: usize, k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        let mut ds: Vec<f64> = rows
            .chunks_exact(d)
            .enumerate()
            .filter(|(i, _)| !skip(*i))
            .map(|(_, r)| {
                r.iter()
                    .zip(x)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        ds.sort_by(f64::total_cmp);
        ds.truncate(k.max(1));
        if ds.is_empty() {
            return f64::NAN;
        }
        ds.iter().sum::<f64>() / ds.len() as f64
    }

    #[test]
    fn small_example() {
        let rows = RowBlocks::new(&[0.0, 0.0, 3.0, 4.0, 6.0, 8.0], 2);
        assert_eq!(rows.rows(), 3);
        let d = rows.mean_knn_distance(&[0.0, 0.0], 2, |_| false);
        assert!((d - 2.5).abs() < 1e-9, "{d}");
        let d = rows.mean_knn_distance(&[0.0, 0.0], 1, |i| i == 0);
        assert!((d - 5.0).abs() < 1e-9, "{d}");
        assert!(rows.mean_knn_distance(&[0.0, 0.0], 1, |_| true).is_nan());
        // More neighbours asked for than rows: the mean over all rows, no padded row.
        let d = rows.mean_knn_distance(&[0.0, 0.0], 10, |_| false);
        assert!((d - 5.0).abs() < 1e-9, "{d}");
        assert!(RowBlocks::new(&[], 3)
            .mean_knn_distance(&[0.0; 3], 2, |_| false)
            .is_nan());
        assert!(RowBlocks::new(&[1.0], 0)
            .mean_knn_distance(&[], 2, |_| false)
            .is_nan());
    }

    #[test]
    fn matches_the_plain_definition() {
        // Sizes around the block width, 27 columns as in the model, some rows skipped.
        let mut state = 12345u64;
        let mut draw = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        let d = 27;
        for n in [1usize, 7, 8, 9, 17, 300] {
            let rows: Vec<f32> = (0..n * d).map(|_| draw()).collect();
            let blocks = RowBlocks::new(&rows, d);
            for q in 0..5 {
                let x: Vec<f32> = (0..d).map(|_| draw()).collect();
                for k in [1usize, 5, 20] {
                    let skip = |i: usize| (i + q) % 7 == 0;
                    let want = naive(&x, &rows, d, k, skip);
                    let got = blocks.mean_knn_distance(&x, k, skip);
                    // The dispatched (AVX2 where available) and portable versions agree.
                    assert_eq!(got.to_bits(), blocks.knn(&x, k, skip).to_bits());
                    if want.is_nan() {
                        assert!(got.is_nan(), "n {n} k {k}: {got}");
                    } else {
                        assert!(
                            (got - want).abs() < 1e-4 * want,
                            "n {n} k {k}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
