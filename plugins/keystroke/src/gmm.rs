//! A diagonal Gaussian mixture over per-keystroke timing vectors, and the statistics of a
//! window against it (the "GMM supervector" of speaker verification, Reynolds et al. 2000;
//! Campbell et al. 2006).
//!
//! The window-level distributions of [`crate::plda`] summarise each timing separately; the
//! mixture sees them jointly. Learned once on the population's keystrokes, its components
//! are typical local situations (a quick overlapping digraph, a slow key after a pause,
//! …). A window is then described by where its keystrokes fall within each component:
//! per component, the posterior-weighted mean offset of its keystrokes from the
//! component's mean, in the component's standard deviations, shrunk towards 0 by
//! [`RELEVANCE`] keystrokes (a component the window hardly visits says little).

use serde::{Deserialize, Serialize};

use crate::free::Derived;

/// Weight, in keystrokes, of "no offset" in a component's statistic (MAP relevance factor).
pub const RELEVANCE: f64 = 2.0;
/// Smallest variance of a component, as a share of the data's variance in that dimension.
const VARIANCE_FLOOR: f64 = 1e-3;
const KMEANS_ITERATIONS: usize = 10;
const EM_ITERATIONS: usize = 100;
/// EM stops when the mean log-likelihood per point improves by less than this.
const EM_TOLERANCE: f64 = 1e-6;

/// `components` Gaussians with diagonal covariance in `dims` dimensions (means and
/// variances row-major, one row per component).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    pub dims: usize,
    #[serde(with = "crate::pack::floats")]
    pub weights: Vec<f64>,
    #[serde(with = "crate::pack::floats")]
    pub means: Vec<f64>,
    #[serde(with = "crate::pack::floats")]
    pub variances: Vec<f64>,
    /// What scoring needs in the layout it reads fastest, built at the first
    /// [`Mixture::statistics`] (a mixture is not changed once it is used).
    #[serde(skip)]
    pub prepared: Derived<Prepared>,
}

impl Mixture {
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// A mixture of no components in `dims` dimensions: a placeholder until one is fitted
    /// (it fails [`Mixture::is_valid`] for any positive number of components).
    pub fn unfitted(dims: usize) -> Mixture {
        Mixture {
            dims,
            weights: Vec::new(),
            means: Vec::new(),
            variances: Vec::new(),
            prepared: Derived::default(),
        }
    }

    /// Fits `components` Gaussians to `points` (`dims` values each, flattened) by k-means
    /// then EM. Deterministic: k-means starts from points evenly spaced through the data.
    /// `None` with fewer than 10 points per component or non-finite values.
    // Component-by-dimension arrays read best with explicit indices.
    #[allow(clippy::needless_range_loop)]
    pub fn fit(points: &[f64], dims: usize, components: usize) -> Option<Mixture> {
        let n = points.len() / dims.max(1);
        if dims == 0 || components == 0 || n < 10 * components || points.len() != n * dims {
            return None;
        }
        if !points.iter().all(|v| v.is_finite()) {
            return None;
        }
        let point = |i: usize| &points[i * dims..(i + 1) * dims];
        let mut floor = vec![0.0; dims];
        for j in 0..dims {
            let m = (0..n).map(|i| point(i)[j]).sum::<f64>() / n as f64;
            let var = (0..n).map(|i| (point(i)[j] - m).powi(2)).sum::<f64>() / n as f64;
            floor[j] = (var * VARIANCE_FLOOR).max(1e-9);
        }
        // k-means for the starting means.
        let mut means: Vec<f64> = (0..components)
            .flat_map(|c| point((2 * c + 1) * n / (2 * components)).to_vec())
            .collect();
        let mut nearest = vec![0usize; n];
        for _ in 0..KMEANS_ITERATIONS {
            for (i, best) in nearest.iter_mut().enumerate() {
                let x = point(i);
                *best = (0..components)
                    .map(|c| {
                        let m = &means[c * dims..(c + 1) * dims];
                        let d: f64 = x.iter().zip(m).map(|(a, b)| (a - b).powi(2)).sum();
                        (c, d)
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(c, _)| c);
            }
            let mut sums = vec![0.0; components * dims];
            let mut counts = vec![0.0; components];
            for (i, &c) in nearest.iter().enumerate() {
                counts[c] += 1.0;
                for (s, v) in sums[c * dims..(c + 1) * dims].iter_mut().zip(point(i)) {
                    *s += v;
                }
            }
            for c in 0..components {
                // An empty cluster keeps its mean.
                if counts[c] > 0.0 {
                    for j in 0..dims {
                        means[c * dims + j] = sums[c * dims + j] / counts[c];
                    }
                }
            }
        }
        let mut weights = vec![0.0f64; components];
        let mut variances = vec![0.0; components * dims];
        for (i, &c) in nearest.iter().enumerate() {
            weights[c] += 1.0;
            for (j, v) in point(i).iter().enumerate() {
                variances[c * dims + j] += (v - means[c * dims + j]).powi(2);
            }
        }
        for c in 0..components {
            for j in 0..dims {
                let k = c * dims + j;
                variances[k] = (variances[k] / weights[c].max(1.0)).max(floor[j]);
            }
            weights[c] = weights[c].max(1.0) / n as f64;
        }
        let mut mixture = Mixture {
            dims,
            weights,
            means,
            variances,
            prepared: Derived::default(),
        };
        // EM.
        let mut previous = f64::NEG_INFINITY;
        let mut gamma = vec![0.0; components];
        for _ in 0..EM_ITERATIONS {
            let mut n_c = vec![0.0; components];
            let mut first = vec![0.0; components * dims];
            let mut second = vec![0.0; components * dims];
            let mut loglik = 0.0;
            // Fresh each iteration: EM changes the mixture (its cache stays unused).
            let prepared = Prepared::of(&mixture);
            for i in 0..n {
                let x = point(i);
                loglik += prepared.posteriors(x, &mut gamma);
                for (c, &g) in gamma.iter().enumerate() {
                    if g < 1e-12 {
                        continue;
                    }
                    n_c[c] += g;
                    for (j, &v) in x.iter().enumerate() {
                        first[c * dims + j] += g * v;
                        second[c * dims + j] += g * v * v;
                    }
                }
            }
            for c in 0..components {
                // A component nobody visits keeps its place (with a negligible weight).
                if n_c[c] < 1e-6 {
                    mixture.weights[c] = 1e-12;
                    continue;
                }
                mixture.weights[c] = n_c[c] / n as f64;
                for j in 0..dims {
                    let k = c * dims + j;
                    let m = first[k] / n_c[c];
                    mixture.means[k] = m;
                    mixture.variances[k] = (second[k] / n_c[c] - m * m).max(floor[j]);
                }
            }
            let mean_loglik = loglik / n as f64;
            if mean_loglik - previous < EM_TOLERANCE {
                break;
            }
            previous = mean_loglik;
        }
        mixture.is_valid(dims, components).then_some(mixture)
    }

    /// Fills `gamma` with the posterior of each component for `x`; returns `ln p(x)`.
    pub fn posteriors(&self, x: &[f64], gamma: &mut [f64]) -> f64 {
        Prepared::of(self).posteriors(x, gamma)
    }

    /// Per component and dimension: `(Σᵢ γᵢ·(xᵢ − m)) / (Σᵢ γᵢ + RELEVANCE) / σ` over the
    /// window's points (`dims` values each, flattened).
    ///
    /// On a processor with AVX2 the same code is compiled for it; the operations and their
    /// order are the same (no fused multiply-add), so both versions return the same bits.
    pub fn statistics(&self, points: &[f64]) -> Vec<f64> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `statistics_avx2` only requires AVX2, which the processor was just
            // found to have.
            return unsafe { self.statistics_avx2(points) };
        }
        self.statistics_portable(points)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn statistics_avx2(&self, points: &[f64]) -> Vec<f64> {
        self.statistics_portable(points)
    }

    /// [`Mixture::statistics`] for the processor the crate is compiled for; inlined into
    /// the AVX2 version so that it is compiled again with AVX2.
    #[inline(always)]
    fn statistics_portable(&self, points: &[f64]) -> Vec<f64> {
        let d = self.dims;
        let k = self.components();
        let p = self.prepared.get_or_init(|| Prepared::of(self));
        let mut gamma = vec![0.0; k];
        let mut counts = vec![0.0; k];
        // Σᵢ γᵢ·xᵢ, dimension-major like `Prepared` (the inner loops run over components).
        let mut first = vec![0.0; d * k];
        for x in points.chunks_exact(d) {
            p.posteriors(x, &mut gamma);
            for (c, g) in counts.iter_mut().zip(&gamma) {
                *c += g;
            }
            for (j, &xj) in x.iter().enumerate() {
                for (f, &g) in first[j * k..(j + 1) * k].iter_mut().zip(&gamma) {
                    *f += g * xj;
                }
            }
        }
        let mut out = vec![0.0; k * d];
        for c in 0..k {
            for j in 0..d {
                let i = c * d + j;
                let offset = first[j * k + c] - counts[c] * self.means[i];
                out[i] = offset / ((counts[c] + RELEVANCE) * self.variances[i].sqrt());
            }
        }
        out
    }

    /// The shapes fit, weights are positive and variances positive and finite.
    pub fn is_valid(&self, dims: usize, components: usize) -> bool {
        self.dims == dims
            && self.weights.len() == components
            && self.means.len() == components * dims
            && self.variances.len() == components * dims
            && self.weights.iter().all(|&w| w > 0.0 && w <= 1.0)
            && self.means.iter().all(|m| m.is_finite())
            && self.variances.iter().all(|&v| v.is_finite() && v >= 1e-12)
    }
}

/// A mixture laid out for posteriors: per component its log normaliser `ln w − ½Σ ln 2πσ²`,
/// and means and inverse variances dimension-major, so that the inner loops run over the
/// components (contiguous, vectorised) instead of over a handful of dimensions.
#[derive(Clone, Debug)]
pub struct Prepared {
    constants: Vec<f64>,
    means: Vec<f64>,
    inverse: Vec<f64>,
}

impl Prepared {
    fn of(m: &Mixture) -> Prepared {
        let (d, k) = (m.dims, m.components());
        let constants = (0..k)
            .map(|c| {
                let v = &m.variances[c * d..(c + 1) * d];
                m.weights[c].ln()
                    - 0.5
                        * v.iter()
                            .map(|&vj| (std::f64::consts::TAU * vj).ln())
                            .sum::<f64>()
            })
            .collect();
        let transpose = |a: &[f64], f: fn(f64) -> f64| {
            (0..d * k)
                .map(|i| f(a[(i % k) * d + i / k]))
                .collect::<Vec<f64>>()
        };
        Prepared {
            constants,
            means: transpose(&m.means, |v| v),
            inverse: transpose(&m.variances, |v| 1.0 / v),
        }
    }

    #[inline(always)]
    fn posteriors(&self, x: &[f64], gamma: &mut [f64]) -> f64 {
        let k = self.constants.len();
        gamma.copy_from_slice(&self.constants);
        for (j, &xj) in x.iter().enumerate() {
            let means = &self.means[j * k..(j + 1) * k];
            let inverse = &self.inverse[j * k..(j + 1) * k];
            for ((g, &m), &inv) in gamma.iter_mut().zip(means).zip(inverse) {
                let diff = xj - m;
                *g -= 0.5 * diff * diff * inv;
            }
        }
        let best = gamma.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for g in gamma.iter_mut() {
            // e⁻²⁰ ≈ 2·10⁻⁹ beside the best component's 1: not worth an `exp`.
            let z = *g - best;
            *g = if z < -20.0 { 0.0 } else { z.exp() };
            total += *g;
        }
        let scale = 1.0 / total;
        gamma.iter_mut().for_each(|g| *g *= scale);
        best + total.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Box–Muller normal deviate.
    fn normal(seed: &mut u64) -> f64 {
        let u = lcg(seed).max(1e-12);
        let v = lcg(seed);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    #[test]
    fn recovers_two_separated_clusters() {
        // 70 % around (0, 0) with sd 1, 30 % around (8, −4) with sd 0.5 and 2.
        let mut seed = 7;
        let mut points = Vec::new();
        for i in 0..2000 {
            if i % 10 < 7 {
                points.extend([normal(&mut seed), normal(&mut seed)]);
            } else {
                points.extend([
                    8.0 + 0.5 * normal(&mut seed),
                    -4.0 + 2.0 * normal(&mut seed),
                ]);
            }
        }
        let m = Mixture::fit(&points, 2, 2).expect("fits");
        let big = if m.weights[0] > m.weights[1] { 0 } else { 1 };
        let small = 1 - big;
        assert!((m.weights[big] - 0.7).abs() < 0.03, "{:?}", m.weights);
        assert!(m.means[big * 2].abs() < 0.15 && m.means[big * 2 + 1].abs() < 0.15);
        assert!((m.means[small * 2] - 8.0).abs() < 0.15);
        assert!((m.variances[small * 2] - 0.25).abs() < 0.06);
        assert!((m.variances[small * 2 + 1] - 4.0).abs() < 0.6);
        // A point at a cluster's centre belongs to it.
        let mut gamma = [0.0; 2];
        m.posteriors(&[8.0, -4.0], &mut gamma);
        assert!(gamma[small] > 0.999);
        assert!((gamma.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn statistics_are_shrunk_offsets_in_standard_deviations() {
        // One component: mean 1, variance 4 (σ 2). Three points at 3 ⇒ offsets 2 each
        // ⇒ (3·2)/(3 + RELEVANCE)/2.
        let m = Mixture {
            dims: 1,
            weights: vec![1.0],
            means: vec![1.0],
            variances: vec![4.0],
            prepared: Derived::default(),
        };
        let s = m.statistics(&[3.0, 3.0, 3.0]);
        assert!(
            (s[0] - 6.0 / (3.0 + RELEVANCE) / 2.0).abs() < 1e-12,
            "{s:?}"
        );
        // No points: no offset.
        assert_eq!(m.statistics(&[]), vec![0.0]);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn posteriors_and_statistics_match_a_direct_computation() {
        // 3 dimensions, 2 components (unequal, so a swapped index cannot pass), means and
        // variances component-major.
        let m = Mixture {
            dims: 3,
            weights: vec![0.3, 0.7],
            means: vec![0.0, 1.0, 2.0, 3.0, -1.0, 0.5],
            variances: vec![1.0, 2.0, 0.5, 0.5, 1.0, 3.0],
            prepared: Derived::default(),
        };
        let points = [0.5, 0.8, 1.5, 2.5, -0.5, 1.0, 1.5, 0.0, 1.0, 3.2, -1.3, 0.2];
        let mut counts = [0.0; 2];
        let mut sums = [0.0; 6];
        for x in points.chunks_exact(3) {
            let logs: Vec<f64> = (0..2)
                .map(|c| {
                    m.weights[c].ln()
                        - 0.5
                            * (0..3)
                                .map(|j| {
                                    let v = m.variances[c * 3 + j];
                                    (std::f64::consts::TAU * v).ln()
                                        + (x[j] - m.means[c * 3 + j]).powi(2) / v
                                })
                                .sum::<f64>()
                })
                .collect();
            let total: f64 = logs.iter().map(|l| l.exp()).sum();
            let gamma: Vec<f64> = logs.iter().map(|l| l.exp() / total).collect();
            let mut got = [0.0; 2];
            let lnp = m.posteriors(x, &mut got);
            assert!((lnp - total.ln()).abs() < 1e-12);
            for c in 0..2 {
                assert!((got[c] - gamma[c]).abs() < 1e-12, "{got:?} {gamma:?}");
                counts[c] += gamma[c];
                for j in 0..3 {
                    sums[c * 3 + j] += gamma[c] * (x[j] - m.means[c * 3 + j]);
                }
            }
        }
        let s = m.statistics(&points);
        assert_eq!(s, m.statistics_portable(&points), "AVX2 and portable agree");
        for c in 0..2 {
            for j in 0..3 {
                let i = c * 3 + j;
                let expected = sums[i] / ((counts[c] + RELEVANCE) * m.variances[i].sqrt());
                assert!((s[i] - expected).abs() < 1e-12, "{i}: {} {expected}", s[i]);
            }
        }
    }

    #[test]
    fn refuses_too_little_or_non_finite_data() {
        assert!(Mixture::fit(&[1.0, 2.0, 3.0], 1, 2).is_none());
        let mut points: Vec<f64> = (0..100).map(|i| i as f64).collect();
        assert!(Mixture::fit(&points, 1, 2).is_some());
        points[5] = f64::NAN;
        assert!(Mixture::fit(&points, 1, 2).is_none());
        // Identical points: variances stay at a positive floor, not zero.
        let m = Mixture::fit(&[2.0; 100], 1, 2).expect("fits");
        assert!(m.variances.iter().all(|&v| v > 0.0));
    }
}
