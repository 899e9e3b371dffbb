//! k-nearest-neighbour distances, the touch model's hot path.
//!
//! Scoring one stroke compares it with every stroke of the population reference (4,000
//! rows of 27 whitened values) and of the user's template. Stored row by row, each
//! comparison ends in a horizontal sum and a remainder loop (27 is not a multiple of
//! the SIMD width). [`RowBlocks`] stores the rows in blocks of [`LANES`], column by
//! column inside a block, so one pass over a block computes [`LANES`] distances at once
//! with plain element-wise arithmetic the compiler turns into SIMD, and a block none of
//! whose rows can enter the current k nearest is dismissed with one comparison per lane,
//! often after its first few columns. The blocks are grouped into clusters of nearby
//! rows and searched nearest cluster first, so the k-th best distance is close to its
//! final value early and most blocks are dismissed at the first check (on the
//! benchmark's strokes, blocks read to the end fell from 16 % to 6 %). A cluster whose
//! centre is farther from the query than its radius plus the k-th best distance cannot
//! hold a nearer row (triangle inequality) and is skipped whole; the bound is computed
//! in f64 with a margin far above the f32 sums' rounding (phone pipeline ≈ +3 %).
//!
//! The answer is exact and does not depend on any of this: each row's squared distance
//! is summed in f32 column by column, as a plain loop would (test), and the k smallest
//! are kept. Profiles are still stored row by row; the blocks are built when a profile
//! is decoded (≈ 6 ms for 4,000 rows, most of it the clustering).

/// Rows per block, and the number of distances computed side by side.
pub const LANES: usize = 8;

/// Columns added between two tests of whether a block can still hold a nearer row.
const COLUMNS_PER_CHECK: usize = 7;

/// Rows of `dims` values in blocks of [`LANES`] rows: block `b` holds, for each column
/// `j`, the values of its rows in column `j`. Rows are grouped into clusters of nearby
/// rows (a few rounds of k-means at build time), each cluster in whole blocks (padded
/// with zero rows that are never reported), so a query can visit the clusters nearest to
/// it first: the k-th best distance is then small from the start and most other blocks
/// are dismissed early. Each row's distance is computed the same way whatever the
/// order, so the result does not depend on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowBlocks {
    dims: usize,
    rows: usize,
    data: Vec<f32>,
    /// Per stored row (block by block, lane by lane): its index in the rows given, or
    /// `PADDING`.
    index: Vec<u32>,
    /// Cluster centres, `dims` values each.
    centres: Vec<f32>,
    /// Per cluster, its blocks `start..end`.
    clusters: Vec<(u32, u32)>,
    /// Per cluster, the largest distance from its centre to one of its rows (f64).
    radii: Vec<f64>,
}

/// Marks a padded slot in [`RowBlocks::index`].
const PADDING: u32 = u32::MAX;

/// About this many rows per cluster (and at most [`MAX_CLUSTERS`] clusters).
const ROWS_PER_CLUSTER: usize = 128;
const MAX_CLUSTERS: usize = 64;
/// k-means rounds at build time: the clusters only order the search, so rough is enough.
const KMEANS_ROUNDS: usize = 3;

impl RowBlocks {
    /// Blocks of the row-major `rows` (`dims` columns; a trailing partial row is ignored).
    pub fn new(rows: &[f32], dims: usize) -> RowBlocks {
        if dims == 0 {
            return RowBlocks::default();
        }
        let n = rows.len() / dims;
        let row = |i: usize| &rows[i * dims..][..dims];
        let (centres, member) = clusters_of(rows, dims);
        let count = centres.len() / dims;
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); count];
        for (i, &c) in member.iter().enumerate() {
            groups[c].push(i as u32);
        }
        let blocks: usize = groups.iter().map(|g| g.len().div_ceil(LANES)).sum();
        let mut data = vec![0.0f32; blocks * dims * LANES];
        let mut index = vec![PADDING; blocks * LANES];
        let mut clusters = Vec::with_capacity(count);
        let mut kept_centres = Vec::with_capacity(centres.len());
        let mut radii = Vec::with_capacity(count);
        let mut next = 0usize;
        for (c, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let start = next;
            for chunk in group.chunks(LANES) {
                let block = &mut data[next * dims * LANES..][..dims * LANES];
                for (l, &i) in chunk.iter().enumerate() {
                    index[next * LANES + l] = i;
                    for (j, &v) in row(i as usize).iter().enumerate() {
                        block[j * LANES + l] = v;
                    }
                }
                next += 1;
            }
            clusters.push((start as u32, next as u32));
            let centre = &centres[c * dims..][..dims];
            radii.push(
                group
                    .iter()
                    .map(|&i| exact_distance(centre, row(i as usize)))
                    .fold(0.0, f64::max),
            );
            kept_centres.extend_from_slice(centre);
        }
        RowBlocks {
            dims,
            rows: n,
            data,
            index,
            centres: kept_centres,
            clusters,
            radii,
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
        // Clusters nearest the query first.
        let mut order: Vec<(f64, usize)> = self
            .centres
            .chunks_exact(self.dims)
            .map(|centre| exact_distance(centre, x))
            .zip(0..)
            .collect();
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for &(centre_distance, c) in &order {
            // Triangle inequality: no row of the cluster is nearer than the distance to
            // its centre less its radius. With a margin far above f32 rounding, a cluster
            // beyond the k-th best is skipped whole (its rows could not have entered).
            // Both f64 distances are off by a few 1e-15 of themselves: for huge values
            // (a crafted profile's) that can exceed the difference, hence the last term.
            if best.len() == k {
                let radius = self.radii[c];
                let near = (centre_distance - radius - 1e-12 * (centre_distance + radius)).max(0.0);
                if near * near > (best[k - 1] as f64) * (1.0 + 1e-3) + 1e-9 {
                    continue;
                }
            }
            let (start, end) = self.clusters[c];
            for b in start as usize..end as usize {
                let block = &self.data[b * self.dims * LANES..][..self.dims * LANES];
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
                let slots = &self.index[b * LANES..][..LANES];
                for (&s, &i) in acc.iter().zip(slots) {
                    if i == PADDING || skip(i as usize) {
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
        }
        if best.is_empty() {
            return f64::NAN;
        }
        best.iter().map(|&s| (s as f64).sqrt()).sum::<f64>() / best.len() as f64
    }
}

/// Euclidean distance in f64 (for bounds, not for the distances reported).
fn exact_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Rough k-means: the centres (`dims` values each) and each row's cluster. Starts from
/// evenly spaced rows, so the result is the same for the same rows.
fn clusters_of(rows: &[f32], dims: usize) -> (Vec<f32>, Vec<usize>) {
    let n = rows.len() / dims;
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let count = (n / ROWS_PER_CLUSTER).clamp(1, MAX_CLUSTERS);
    let row = |i: usize| &rows[i * dims..][..dims];
    let mut centres: Vec<f32> = (0..count)
        .flat_map(|c| row(c * n / count).iter().copied())
        .collect();
    let nearest = |centres: &[f32], x: &[f32]| {
        centres
            .chunks_exact(dims)
            .map(|c| squared_distance(c, x))
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(c, _)| c)
    };
    let mut member: Vec<usize> = (0..n).map(|i| nearest(&centres, row(i))).collect();
    for _ in 0..KMEANS_ROUNDS {
        let mut sums = vec![0.0f64; count * dims];
        let mut sizes = vec![0usize; count];
        for (i, &c) in member.iter().enumerate() {
            sizes[c] += 1;
            for (s, &v) in sums[c * dims..][..dims].iter_mut().zip(row(i)) {
                *s += v as f64;
            }
        }
        for c in 0..count {
            if sizes[c] > 0 {
                for j in 0..dims {
                    centres[c * dims + j] = (sums[c * dims + j] / sizes[c] as f64) as f32;
                }
            }
        }
        member = (0..n).map(|i| nearest(&centres, row(i))).collect();
    }
    (centres, member)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean of the `k` smallest of `distances` (NaN when there are none).
    fn mean_of_smallest(mut distances: Vec<f64>, k: usize) -> f64 {
        distances.sort_by(f64::total_cmp);
        distances.truncate(k.max(1));
        if distances.is_empty() {
            return f64::NAN;
        }
        distances.iter().sum::<f64>() / distances.len() as f64
    }

    /// The plain definition: every distance in f64.
    fn naive(x: &[f32], rows: &[f32], d: usize, k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        let distances = rows
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
        mean_of_smallest(distances, k)
    }

    /// Every squared distance summed in f32 column by column, as the blocks do.
    fn plain_f32(x: &[f32], rows: &[f32], d: usize, k: usize, skip: impl Fn(usize) -> bool) -> f64 {
        let distances = rows
            .chunks_exact(d)
            .enumerate()
            .filter(|(i, _)| !skip(*i))
            .map(|(_, r)| {
                let mut acc = 0.0f32;
                for (a, b) in r.iter().zip(x) {
                    let t = a - b;
                    acc += t * t;
                }
                (acc as f64).sqrt()
            })
            .collect();
        mean_of_smallest(distances, k)
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
        for n in [1usize, 7, 8, 9, 17, 300, 1000] {
            let rows: Vec<f32> = (0..n * d).map(|_| draw()).collect();
            let blocks = RowBlocks::new(&rows, d);
            for q in 0..5 {
                let x: Vec<f32> = (0..d).map(|_| draw()).collect();
                for k in [1usize, 5, 20] {
                    let skip = |i: usize| (i + q) % 7 == 0;
                    let want = naive(&x, &rows, d, k, skip);
                    let got = blocks.mean_knn_distance(&x, k, skip);
                    // Same bits as the plain f32 sums: neither the layout, nor the
                    // cluster order, nor early dismissal changes the answer.
                    assert_eq!(got.to_bits(), plain_f32(&x, &rows, d, k, skip).to_bits());
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
        // Tight, well separated groups (as strokes of a few kinds are): most clusters are
        // then beyond the k-th best and skipped whole, and the answer is still the same.
        let n = 2048;
        let centre = |g: usize, j: usize| ((g * 7 + j * 3) % 11) as f32 * 10.0;
        let rows: Vec<f32> = (0..n * d)
            .map(|i| centre((i / d) % 16, i % d) + 0.3 * draw())
            .collect();
        let blocks = RowBlocks::new(&rows, d);
        for q in 0..20 {
            let x: Vec<f32> = (0..d).map(|j| centre(q % 16, j) + 0.5 * draw()).collect();
            for k in [1usize, 5, 20] {
                let skip = |i: usize| (i + q) % 5 == 0;
                let got = blocks.mean_knn_distance(&x, k, skip);
                assert_eq!(got.to_bits(), plain_f32(&x, &rows, d, k, skip).to_bits());
            }
        }
    }
}
