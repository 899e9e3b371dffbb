//! Whole-window embedding with a PLDA score: the second opinion of the free-text model.
//!
//! The per-id comparison in [`crate::free`] needs the query to share keys and n-grams with
//! the gallery; two 50-key sentences share few digraphs. This module instead describes a
//! whole window by one fixed-length vector and learns from the population which
//! directions of that vector tell people apart:
//!
//! * per timing type (`ln` hold, `ln` down-down, `asinh(x/20 ms)` up-down and up-up of
//!   consecutive keys): the deciles 10–90 %, the mean and the standard deviation
//!   (4 × 11 values), and the share of overlapping keys (1);
//! * for the [`TOP_KEYS`] key ids most frequent in the population: the key's hold, the
//!   down-down and up-down latencies into it and out of it (5 timings per key), each shrunk
//!   towards "this window's median of that type plus the population's offset of that
//!   key" with the weight of [`SHRINK`] occurrences — a key the window lacks gets that
//!   prediction instead of a gap — and the square root of the key's share of the
//!   window's keystrokes (how often a person reaches for backspace or shift is theirs,
//!   not the text's; the root evens out the spread of a count, which grows with its mean;
//!   the share of a keyed-hash id is no more than a profile's per-id counts already hold);
//! * **residuals** (5 × 11 values): the same distribution summary of each timing *minus
//!   the population's mean for the same key, digraph or trigraph* — holds per key,
//!   down-down, up-down and up-up per digraph, the duration of each trigraph — over the
//!   ids the population has seen at least [`MIN_COUNT`] times. The raw distributions
//!   above mix the person with the text (a sentence of awkward digraphs is slow for
//!   everyone); the residuals keep how this person departs from everyone on whatever
//!   text was typed;
//! * **mixture statistics** ([`COMPONENTS`] × [`LOCAL`] values, [`crate::gmm`]): each
//!   keystroke as a local vector (its hold residual, the previous key's, the down-down
//!   and up-down residuals into it, its raw hold, down-down and up-down), placed in a
//!   Gaussian mixture learned on the population's keystrokes; per component, where the
//!   window's keystrokes sit relative to it. This sees the timings jointly, where the
//!   summaries see each alone.
//!
//! The 332 values are scaled by their population spread and reduced by LDA to [`DIMS`]
//! directions in which the within-user scatter is white; each vector is then scaled to
//! length √DIMS ("length normalisation", Garcia-Romero & Espy-Wilson 2011: it makes the
//! heavy-tailed vectors nearly Gaussian), and a second LDA on the normalised vectors
//! leaves a two-covariance model: per direction, a user's true position varies between
//! users with variance `b` and a window scatters around it with variance 1. The score of a
//! query `q` against a gallery mean `g` of `n` windows is the model's log-likelihood ratio
//! "same user" against "different users", summed over the directions (closed form,
//! [`Embedding::llr`]).
//!
//! Everything is learned from the population's users only (key ids are the same keyed
//! hashes as elsewhere, and the tables hold per-id mean timings, so nothing names a
//! character). The free-text model fuses this LLR with its S-normed per-id score by a
//! logistic calibration learned on the population with embeddings cross-fitted on the
//! other half of it (see [`crate::free::build_population`]).
//!
//! Measured on the Aalto subset (G = 5, docs/results.md): the per-id score alone 4.8 %
//! mean EER; fused with this score 2.7 % before the residuals and mixture statistics
//! were added, 2.05 % with them (this score alone: 3.4 % before, 2.3 % after, in the
//! Python study), 1.95 % with the keys' shares.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::buckets::Buckets;
use crate::free::{id, percentile, Derived};
use crate::gmm::Mixture;
use crate::stats::asinh;
use crate::timing::Keystroke;
use habitus_plugin::PluginError;

/// Key ids with their own values in the vector (the most frequent in the population).
pub const TOP_KEYS: usize = 20;
/// Timings per key: hold, down-down in, up-down out, down-down out, up-down in.
const PER_KEY: usize = 5;
/// Values per key: its timings and (the root of) its share of the window.
const VALUES_PER_KEY: usize = PER_KEY + 1;
/// Deciles 10–90 % per timing type.
const QUANTILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Values summarising one distribution: the deciles, the mean and the standard deviation.
const SUMMARY: usize = QUANTILES.len() + 2;
/// Timing types summarised as distributions (hold, down-down, up-down, up-up).
const DISTRIBUTIONS: usize = 4;
/// Residual distributions (hold, down-down, up-down, up-up, trigraph duration).
const RESIDUALS: usize = 5;
/// Fewest population occurrences of a key, digraph or trigraph for its mean to be kept.
pub const MIN_COUNT: u64 = 15;
/// Components of the keystroke mixture.
pub const COMPONENTS: usize = 16;
/// Values of a keystroke's local vector.
pub const LOCAL: usize = 7;
/// Most local vectors the mixture is fitted on (evenly strided beyond that).
const MAX_MIXTURE_POINTS: usize = 200_000;
/// Values that do not depend on the number of keys.
const FIXED_INPUTS: usize = DISTRIBUTIONS * SUMMARY + 1 + RESIDUALS * SUMMARY + COMPONENTS * LOCAL;
/// Length of the window vector.
pub const INPUTS: usize = FIXED_INPUTS + TOP_KEYS * VALUES_PER_KEY;
/// Directions kept by each LDA stage.
pub const DIMS: usize = 150;
/// Weight, in occurrences, of the predicted value of a key's timing.
const SHRINK: f64 = 2.0;
/// Fewest keystrokes a window needs for a vector.
pub const MIN_STROKES: usize = 5;
/// Smallest between-user variance kept per direction.
const MIN_BETWEEN: f64 = 1e-4;
/// Largest between-user variance a stored embedding may claim (learned ones are below
/// 100: the within-user scatter is white, and users are not 10⁴ windows' spread apart).
const MAX_BETWEEN: f64 = 1e8;

/// Timing type of each per-key value: 0 hold, 1 down-down, 2 up-down.
const KEY_TYPE: [usize; PER_KEY] = [0, 1, 2, 1, 2];

/// Id kinds of the population's typical timings (the same hashing as [`crate::free`]).
const HOLD: u64 = 0;
const DOWN_DOWN: u64 = 1;
const UP_DOWN: u64 = 2;
const UP_UP: u64 = 3;
const TRIGRAPH: u64 = 4;

/// An affine map `y = (x − mean)·matrix` (`matrix` row-major, `mean.len()` rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    #[serde(with = "crate::pack::floats")]
    pub mean: Vec<f64>,
    #[serde(with = "crate::pack::floats")]
    pub matrix: Vec<f64>,
}

impl Stage {
    fn outputs(&self) -> usize {
        self.matrix.len() / self.mean.len().max(1)
    }

    /// `(x − mean)·matrix`. On a processor with AVX2 the same code is compiled for it
    /// (four lanes per instruction instead of two); each output still adds its terms in
    /// the same order with the same unfused operations, so both return the same bits.
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `apply_avx2` only requires AVX2, which the processor was just found
            // to have.
            return unsafe { self.apply_avx2(x) };
        }
        self.apply_portable(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, x: &[f64]) -> Vec<f64> {
        self.apply_portable(x)
    }

    /// [`Stage::apply`] for the processor the crate is compiled for; inlined into the AVX2
    /// version so that it is compiled again with AVX2.
    #[inline(always)]
    fn apply_portable(&self, x: &[f64]) -> Vec<f64> {
        let outputs = self.outputs();
        let mut y = vec![0.0; outputs];
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(xi, mi)| xi - mi).collect();
        // Four rows per pass over `y`: a quarter of the loads and stores of `y`, which
        // were the cost (each output still adds its terms in row order, so the result is
        // the same to the bit).
        let rows = self.mean.len().min(x.len());
        let quads = rows / 4;
        for q in 0..quads {
            let i = 4 * q;
            let block = &self.matrix[i * outputs..(i + 4) * outputs];
            let (r0, rest) = block.split_at(outputs);
            let (r1, rest) = rest.split_at(outputs);
            let (r2, r3) = rest.split_at(outputs);
            let (d0, d1, d2, d3) = (d[i], d[i + 1], d[i + 2], d[i + 3]);
            for ((((yj, &a0), &a1), &a2), &a3) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *yj = *yj + d0 * a0 + d1 * a1 + d2 * a2 + d3 * a3;
            }
        }
        for (i, &di) in d.iter().enumerate().take(rows).skip(4 * quads) {
            let row = &self.matrix[i * outputs..(i + 1) * outputs];
            for (yj, &a) in y.iter_mut().zip(row) {
                *yj += di * a;
            }
        }
        y
    }
}

/// What the population taught about describing a window (before any scaling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowFeatures {
    /// Key ids (keyed hashes) with their own values, most frequent first.
    pub keys: Vec<u32>,
    /// Per key, [`PER_KEY`] population offsets from the type's median.
    #[serde(with = "crate::pack::floats")]
    pub offsets: Vec<f64>,
    /// Population medians of hold, down-down and up-down: the typical value of an id
    /// missing from `typical`.
    #[serde(with = "crate::pack::floats")]
    pub medians: Vec<f64>,
    /// Population mean timing per id seen at least [`MIN_COUNT`] times, sorted by id.
    #[serde(with = "crate::pack::table")]
    pub typical: Vec<(u64, f64)>,
    pub mixture: Mixture,
    /// `typical`'s ids by their top bits (derived, never stored).
    #[serde(skip)]
    pub typical_buckets: Derived<Buckets>,
}

/// What the population taught: how to describe a window, how to scale it, the two LDA
/// stages and the between-user variance per direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub features: WindowFeatures,
    /// Spread of each window value over the population.
    #[serde(with = "crate::pack::floats")]
    pub scale: Vec<f64>,
    pub first: Stage,
    pub second: Stage,
    /// Between-user variance per direction of the second stage.
    #[serde(with = "crate::pack::floats")]
    pub between: Vec<f64>,
}

/// Per-window timing series (ms-based, transformed).
struct Series {
    hold: Vec<f64>,
    dd: Vec<f64>,
    ud: Vec<f64>,
    uu: Vec<f64>,
    /// `ln` duration of each trigraph (first key down to third key down).
    tri: Vec<f64>,
}

fn series(strokes: &[Keystroke]) -> Series {
    // Differences in f64, not i64: timestamps near 2⁶³ µs would overflow (exact below 2⁵³ µs,
    // 285 years).
    let ms = |later: u64, earlier: u64| (later as f64 - earlier as f64) / 1000.0;
    let hold = strokes
        .iter()
        .map(|s| ms(s.up_us, s.down_us).max(1.0).ln())
        .collect();
    let pairs = strokes.windows(2);
    let dd = pairs
        .clone()
        .map(|p| ms(p[1].down_us, p[0].down_us).max(1.0).ln())
        .collect();
    let ud = pairs
        .clone()
        .map(|p| asinh(ms(p[1].down_us, p[0].up_us) / 20.0))
        .collect();
    let uu = pairs
        .map(|p| asinh(ms(p[1].up_us, p[0].up_us) / 20.0))
        .collect();
    let tri = strokes
        .windows(3)
        .map(|t| ms(t[2].down_us, t[0].down_us).max(1.0).ln())
        .collect();
    Series {
        hold,
        dd,
        ud,
        uu,
        tri,
    }
}

/// `(id, value)` of every timing of a window whose population mean may be tabled.
fn identified(strokes: &[Keystroke], s: &Series) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(strokes.len() * 5);
    for (i, k) in strokes.iter().enumerate() {
        out.push((id(HOLD, &[k.key]), s.hold[i]));
        if i > 0 {
            let pair = [strokes[i - 1].key, k.key];
            out.push((id(DOWN_DOWN, &pair), s.dd[i - 1]));
            out.push((id(UP_DOWN, &pair), s.ud[i - 1]));
            out.push((id(UP_UP, &pair), s.uu[i - 1]));
        }
        if i > 1 {
            let triple = [strokes[i - 2].key, strokes[i - 1].key, k.key];
            out.push((id(TRIGRAPH, &triple), s.tri[i - 2]));
        }
    }
    out
}

/// `v` in [`f64::total_cmp`] order. Sorted as integers with the same order (the sign bit
/// flipped, and for negative values every other bit too): integer comparisons are what
/// the standard library's sorting networks are fastest at, and nine of these sorts run
/// per window.
fn sorted(v: &[f64]) -> Vec<f64> {
    let key = |x: f64| {
        let b = x.to_bits();
        b ^ (((b as i64 >> 63) as u64) | (1 << 63))
    };
    let unkey = |k: u64| {
        let b = if k >> 63 == 1 { k ^ (1 << 63) } else { !k };
        f64::from_bits(b)
    };
    let mut keys: Vec<u64> = v.iter().map(|&x| key(x)).collect();
    keys.sort_unstable();
    keys.into_iter().map(unkey).collect()
}

/// Deciles, mean and standard deviation of `v`; zeros for fewer than 3 values (no
/// distribution to speak of: "like everyone", after centring).
fn summary(v: &[f64], x: &mut Vec<f64>) {
    if v.len() < 3 {
        x.extend([0.0; SUMMARY]);
        return;
    }
    let sv = sorted(v);
    x.extend(QUANTILES.iter().map(|&p| percentile(&sv, p)));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64;
    x.push(mean);
    x.push(var.sqrt());
}

/// The per-key values of key `k` (positions `at`) before shrinking: sums and counts.
fn key_sums(s: &Series, at: &[usize]) -> [(f64, f64); PER_KEY] {
    let last = s.hold.len() - 1;
    let mut out = [(0.0, 0.0); PER_KEY];
    let mut add = |j: usize, v: f64| {
        out[j].0 += v;
        out[j].1 += 1.0;
    };
    for &i in at {
        add(0, s.hold[i]);
        if i > 0 {
            add(1, s.dd[i - 1]);
            add(4, s.ud[i - 1]);
        }
        if i < last {
            add(2, s.ud[i]);
            add(3, s.dd[i]);
        }
    }
    out
}

fn positions(strokes: &[Keystroke], key: u32) -> Vec<usize> {
    strokes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.key == key)
        .map(|(i, _)| i)
        .collect()
}

/// Timings relative to the population's typical value of the same id.
struct Residuals {
    /// Per keystroke (a key the population has not tabled: its median hold).
    hold: Vec<f64>,
    /// Per digraph (untabled: the median), for the local vectors.
    dd_local: Vec<f64>,
    ud_local: Vec<f64>,
    /// Tabled digraphs and trigraphs only, for the distributions.
    dd: Vec<f64>,
    ud: Vec<f64>,
    uu: Vec<f64>,
    tri: Vec<f64>,
}

impl WindowFeatures {
    /// A search within the id's bucket, not a hash map: the table comes with every
    /// profile, and a crafted one must not be able to make lookups slow (ids chosen to
    /// collide; see [`crate::buckets`]).
    fn typical(&self, id: u64) -> Option<f64> {
        let table = &self.typical;
        let r = self
            .typical_buckets
            .get_or_init(|| Buckets::new(|i| table[i].0, table.len()))
            .range(id);
        table[r.clone()]
            .binary_search_by_key(&id, |e| e.0)
            .ok()
            .map(|i| table[r.start + i].1)
    }

    fn residuals(&self, strokes: &[Keystroke], s: &Series) -> Residuals {
        let hold = strokes
            .iter()
            .zip(&s.hold)
            .map(|(k, h)| h - self.typical(id(HOLD, &[k.key])).unwrap_or(self.medians[0]))
            .collect();
        let mut r = Residuals {
            hold,
            dd_local: Vec::with_capacity(s.dd.len()),
            ud_local: Vec::with_capacity(s.dd.len()),
            dd: Vec::new(),
            ud: Vec::new(),
            uu: Vec::new(),
            tri: Vec::new(),
        };
        for (i, p) in strokes.windows(2).enumerate() {
            let pair = [p[0].key, p[1].key];
            let dd = self.typical(id(DOWN_DOWN, &pair));
            let ud = self.typical(id(UP_DOWN, &pair));
            r.dd_local.push(s.dd[i] - dd.unwrap_or(self.medians[1]));
            r.ud_local.push(s.ud[i] - ud.unwrap_or(self.medians[2]));
            if let Some(m) = dd {
                r.dd.push(s.dd[i] - m);
            }
            if let Some(m) = ud {
                r.ud.push(s.ud[i] - m);
            }
            if let Some(m) = self.typical(id(UP_UP, &pair)) {
                r.uu.push(s.uu[i] - m);
            }
        }
        for (i, t) in strokes.windows(3).enumerate() {
            if let Some(m) = self.typical(id(TRIGRAPH, &[t[0].key, t[1].key, t[2].key])) {
                r.tri.push(s.tri[i] - m);
            }
        }
        r
    }

    /// Each keystroke after the first as [`LOCAL`] values (flattened).
    fn local_vectors(s: &Series, r: &Residuals) -> Vec<f64> {
        let mut out = Vec::with_capacity(s.dd.len() * LOCAL);
        for i in 1..s.hold.len() {
            out.extend([
                r.hold[i],
                r.hold[i - 1],
                r.dd_local[i - 1],
                r.ud_local[i - 1],
                s.hold[i],
                s.dd[i - 1],
                s.ud[i - 1],
            ]);
        }
        out
    }

    /// The window vector (unscaled), or `None` for a window under [`MIN_STROKES`] keys.
    fn vector(&self, strokes: &[Keystroke]) -> Option<Vec<f64>> {
        if strokes.len() < MIN_STROKES {
            return None;
        }
        let s = series(strokes);
        let mut x = Vec::with_capacity(self.inputs());
        let mut medians = [0.0; 3];
        for (t, v) in [&s.hold, &s.dd, &s.ud, &s.uu].into_iter().enumerate() {
            summary(v, &mut x);
            if t < 3 {
                medians[t] = x[x.len() - SUMMARY + QUANTILES.len() / 2];
            }
        }
        // Up-down < 0 ⇔ the next key went down before this one came up.
        x.push(s.ud.iter().filter(|&&u| u < 0.0).count() as f64 / s.ud.len() as f64);
        for (k, &key) in self.keys.iter().enumerate() {
            let at = positions(strokes, key);
            let sums = key_sums(&s, &at);
            for (j, (sum, n)) in sums.into_iter().enumerate() {
                let prior = medians[KEY_TYPE[j]] + self.offsets[k * PER_KEY + j];
                x.push((sum + SHRINK * prior) / (n + SHRINK));
            }
            // The root: a count's spread grows with its mean, the LDA assumes one spread.
            x.push((at.len() as f64 / strokes.len() as f64).sqrt());
        }
        let r = self.residuals(strokes, &s);
        for v in [&r.hold, &r.dd, &r.ud, &r.uu, &r.tri] {
            summary(v, &mut x);
        }
        x.extend(self.mixture.statistics(&Self::local_vectors(&s, &r)));
        Some(x)
    }

    fn inputs(&self) -> usize {
        FIXED_INPUTS + self.keys.len() * VALUES_PER_KEY
    }

    fn is_valid(&self) -> bool {
        self.keys.len() <= TOP_KEYS
            && self.offsets.len() == self.keys.len() * PER_KEY
            && self.offsets.iter().all(|v| v.is_finite())
            && self.medians.len() == 3
            && self.medians.iter().all(|v| v.is_finite())
            && self.typical.windows(2).all(|w| w[0].0 < w[1].0)
            && self.typical.iter().all(|(_, v)| v.is_finite())
            && self.mixture.is_valid(LOCAL, COMPONENTS)
    }

    /// Learns the offsets of `keys` (the population's most frequent), the typical timings
    /// and the mixture from the population's windows (`None` when the mixture cannot be
    /// fitted).
    fn learn(users: &[&[Vec<Keystroke>]], keys: Vec<u32>) -> Option<WindowFeatures> {
        let windows: Vec<&Vec<Keystroke>> = users
            .iter()
            .flat_map(|u| u.iter())
            .filter(|w| w.len() >= 2)
            .collect();
        let all: Vec<Series> = windows.iter().map(|w| series(w)).collect();
        let (offsets, medians) = key_offsets(&windows, &all, &keys);
        let mut counts: HashMap<u64, (u64, f64)> = HashMap::new();
        for (w, s) in windows.iter().zip(&all) {
            for (i, v) in identified(w, s) {
                let e = counts.entry(i).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += v;
            }
        }
        let mut typical: Vec<(u64, f64)> = counts
            .into_iter()
            .filter(|(_, (n, _))| *n >= MIN_COUNT)
            .map(|(i, (n, sum))| (i, sum / n as f64))
            .collect();
        typical.sort_unstable_by_key(|e| e.0);
        let mut features = WindowFeatures {
            keys,
            offsets,
            medians: medians.to_vec(),
            typical,
            // Replaced below; `residuals` needs the rest of the features first.
            mixture: Mixture::unfitted(LOCAL),
            typical_buckets: Derived::default(),
        };
        let mut points: Vec<f64> = Vec::new();
        for (w, s) in windows.iter().zip(&all) {
            points.extend(Self::local_vectors(s, &features.residuals(w, s)));
        }
        let n = points.len() / LOCAL;
        let stride = n.div_ceil(MAX_MIXTURE_POINTS).max(1);
        let points: Vec<f64> = points
            .chunks_exact(LOCAL)
            .step_by(stride)
            .flatten()
            .copied()
            .collect();
        features.mixture = Mixture::fit(&points, LOCAL, COMPONENTS)?;
        Some(features)
    }
}

fn length_normalise(mut y: Vec<f64>) -> Vec<f64> {
    let norm = y.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        let f = (y.len() as f64).sqrt() / norm;
        y.iter_mut().for_each(|v| *v *= f);
    }
    y
}

impl Embedding {
    /// The window's point in the model's space, or `None` for a window too short.
    pub fn embed(&self, strokes: &[Keystroke]) -> Option<Vec<f64>> {
        let mut x = self.features.vector(strokes)?;
        for (v, s) in x.iter_mut().zip(&self.scale) {
            *v /= s;
        }
        Some(self.second.apply(&length_normalise(self.first.apply(&x))))
    }

    /// Log-likelihood ratio "same user" against "different users" of a query point given
    /// the mean of `n` gallery points (two-covariance model, within-user variance 1).
    pub fn llr(&self, gallery: &[f64], n: f64, query: &[f64]) -> f64 {
        let mut total = 0.0;
        for ((&b, &g), &q) in self.between.iter().zip(gallery).zip(query) {
            let v1 = b + 1.0 / n;
            let v2 = b + 1.0;
            // v1·v2 − b², without the cancellation of computing it that way.
            let det = b * (1.0 + 1.0 / n) + 1.0 / n;
            let same = -0.5 * det.ln() - 0.5 * (v2 * g * g - 2.0 * b * g * q + v1 * q * q) / det;
            let different = -0.5 * (v1 * v2).ln() - 0.5 * (g * g / v1 + q * q / v2);
            total += same - different;
        }
        total
    }

    pub fn validate(&self) -> Result<(), PluginError> {
        let inputs = self.features.inputs();
        let dims = self.between.len();
        let ok = self.features.is_valid()
            && self.scale.len() == inputs
            && self.scale.iter().all(|&s| s >= 1e-12)
            && self.first.mean.len() == inputs
            && !self.second.mean.is_empty()
            && self.first.matrix.len() == inputs * self.second.mean.len()
            && self.second.matrix.len() == self.second.mean.len() * dims
            && dims > 0
            && self
                .between
                .iter()
                .all(|&b| (MIN_BETWEEN / 2.0..=MAX_BETWEEN).contains(&b));
        if ok {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(
                "free-text embedding: dimensions do not fit together or a value is out of range",
            ))
        }
    }

    /// Learns the embedding from `users` (each a list of windows); `None` when the
    /// population is too small to estimate the within-user scatter of all [`INPUTS`]
    /// values (windows − users < 2 × INPUTS: about 48 users of 15 windows), or the
    /// scatter matrices are degenerate.
    pub fn fit(users: &[&[Vec<Keystroke>]]) -> Option<Embedding> {
        // Cheap check first: the mixture and the tables are not worth learning for a
        // population that cannot carry the LDA (the exact check follows below).
        let windows = users
            .iter()
            .flat_map(|u| u.iter())
            .filter(|w| w.len() >= MIN_STROKES)
            .count();
        let keys = frequent_keys(users);
        let inputs = FIXED_INPUTS + keys.len() * VALUES_PER_KEY;
        if windows < users.len() + 2 * inputs {
            return None;
        }
        let features = WindowFeatures::learn(users, keys)?;
        let mut xs: Vec<Vec<f64>> = Vec::new();
        let mut labels: Vec<usize> = Vec::new();
        for (u, windows) in users.iter().enumerate() {
            let v: Vec<Vec<f64>> = windows.iter().filter_map(|w| features.vector(w)).collect();
            if v.len() >= 2 {
                labels.extend(std::iter::repeat(u).take(v.len()));
                xs.extend(v);
            }
        }
        let classes = labels
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        // Fewer residual degrees of freedom than twice the values leaves directions of the
        // within-user scatter unestimated, and LDA would favour exactly those.
        if classes < 3 || xs.len() < classes + 2 * features.inputs() {
            return None;
        }
        let inputs = xs[0].len();
        let mut scale = vec![0.0; inputs];
        let n = xs.len() as f64;
        for j in 0..inputs {
            let m = xs.iter().map(|x| x[j]).sum::<f64>() / n;
            let var = xs.iter().map(|x| (x[j] - m).powi(2)).sum::<f64>() / n;
            // A value that never varies carries nothing; divided by a tiny spread its
            // rounding noise would only disturb the LDA.
            scale[j] = if var.sqrt() > 1e-9 { var.sqrt() } else { 1.0 };
        }
        for x in xs.iter_mut() {
            x.iter_mut().zip(&scale).for_each(|(v, s)| *v /= s);
        }
        let (first, _) = lda(&xs, &labels, DIMS)?;
        let ys: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| length_normalise(first.apply(x)))
            .collect();
        let (second, between) = lda(&ys, &labels, DIMS)?;
        let e = Embedding {
            features,
            scale,
            first,
            second,
            between,
        };
        e.validate().ok()?;
        Some(e)
    }
}

/// The [`TOP_KEYS`] most frequent key ids (ties by id, so the choice is reproducible).
fn frequent_keys(users: &[&[Vec<Keystroke>]]) -> Vec<u32> {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for s in users.iter().flat_map(|u| u.iter()).flatten() {
        *counts.entry(s.key).or_default() += 1;
    }
    let mut v: Vec<(u32, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(TOP_KEYS).map(|(k, _)| k).collect()
}

/// Per key and value: the population mean of that value minus the median of its type;
/// and the medians of hold, down-down and up-down.
fn key_offsets(windows: &[&Vec<Keystroke>], all: &[Series], keys: &[u32]) -> (Vec<f64>, [f64; 3]) {
    let median = |f: &dyn Fn(&Series) -> &Vec<f64>| {
        let v: Vec<f64> = all.iter().flat_map(|s| f(s).iter().copied()).collect();
        if v.is_empty() {
            0.0
        } else {
            percentile(&sorted(&v), 0.5)
        }
    };
    let medians = [median(&|s| &s.hold), median(&|s| &s.dd), median(&|s| &s.ud)];
    let mut out = Vec::with_capacity(keys.len() * PER_KEY);
    for &key in keys {
        let mut totals = [(0.0, 0.0); PER_KEY];
        for (w, s) in windows.iter().zip(all) {
            let at = positions(w, key);
            if at.is_empty() {
                continue;
            }
            for (t, (sum, n)) in totals.iter_mut().zip(key_sums(s, &at)) {
                t.0 += sum;
                t.1 += n;
            }
        }
        for (j, (sum, n)) in totals.into_iter().enumerate() {
            out.push(if n > 0.0 {
                sum / n - medians[KEY_TYPE[j]]
            } else {
                0.0
            });
        }
    }
    (out, medians)
}

/// LDA to at most `dims` directions: whitens the within-user scatter, then keeps the
/// directions of largest between-user scatter. Returns the map and, per direction, the
/// between-user variance of a user's true mean (the scatter of user means less what their
/// windows' own scatter explains).
// Matrix code reads best with explicit indices.
#[allow(clippy::needless_range_loop)]
fn lda(xs: &[Vec<f64>], labels: &[usize], dims: usize) -> Option<(Stage, Vec<f64>)> {
    let d = xs[0].len();
    let n = xs.len() as f64;
    let mut mean = vec![0.0; d];
    for x in xs {
        mean.iter_mut().zip(x).for_each(|(m, v)| *m += v / n);
    }
    // Class means, in label order (labels arrive grouped).
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (start, end)
    for i in 0..xs.len() {
        if i == 0 || labels[i] != labels[i - 1] {
            groups.push((i, i + 1));
        } else if let Some(g) = groups.last_mut() {
            g.1 = i + 1;
        }
    }
    let mut within = vec![0.0; d * d];
    let mut between = vec![0.0; d * d];
    let mut class_mean = vec![0.0; d];
    for &(a, b) in &groups {
        let k = (b - a) as f64;
        class_mean.iter_mut().for_each(|m| *m = 0.0);
        for x in &xs[a..b] {
            class_mean.iter_mut().zip(x).for_each(|(m, v)| *m += v / k);
        }
        let c: Vec<f64> = class_mean.iter().zip(&mean).map(|(a, b)| a - b).collect();
        for i in 0..d {
            for j in 0..=i {
                between[i * d + j] += c[i] * c[j];
            }
        }
        for x in &xs[a..b] {
            let r: Vec<f64> = x.iter().zip(&class_mean).map(|(a, b)| a - b).collect();
            for i in 0..d {
                let ri = r[i];
                for j in 0..=i {
                    within[i * d + j] += ri * r[j];
                }
            }
        }
    }
    let classes = groups.len() as f64;
    // Unbiased: each user's mean uses up one degree of freedom of its windows.
    let dof = (n - classes).max(1.0);
    for i in 0..d {
        for j in 0..=i {
            within[i * d + j] /= dof;
            between[i * d + j] /= classes;
            within[j * d + i] = within[i * d + j];
            between[j * d + i] = between[i * d + j];
        }
        within[i * d + i] += 1e-6;
    }
    // Whitening A = V·diag(1/√e) of the within scatter.
    let (e, v) = symmetric_eigen(within, d)?;
    if e.iter().any(|&x| x <= 0.0) {
        return None;
    }
    let mut a = v;
    for i in 0..d {
        for j in 0..d {
            a[i * d + j] /= e[j].sqrt();
        }
    }
    // Between scatter in the whitened space: Aᵀ·Sb·A.
    let sb_a = matmul(&between, &a, d, d, d);
    let at = transpose(&a, d, d);
    let sb2 = matmul(&at, &sb_a, d, d, d);
    let (b, u) = symmetric_eigen(sb2, d)?;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| b[j].total_cmp(&b[i]));
    order.truncate(dims.min(d));
    let k = order.len();
    let mut matrix = vec![0.0; d * k];
    for i in 0..d {
        for (c, &o) in order.iter().enumerate() {
            let mut s = 0.0;
            for j in 0..d {
                s += a[i * d + j] * u[j * d + o];
            }
            matrix[i * k + c] = s;
        }
    }
    // A class mean of m windows scatters by 1/m around the user's true mean: the scatter of
    // the means less the average of that noise is the users' own spread.
    let noise = groups
        .iter()
        .map(|&(a, b)| 1.0 / (b - a) as f64)
        .sum::<f64>()
        / classes;
    let variances = order
        .iter()
        .map(|&o| (b[o] - noise).clamp(MIN_BETWEEN, MAX_BETWEEN))
        .collect();
    let stage = Stage { mean, matrix };
    stage
        .matrix
        .iter()
        .all(|v| v.is_finite())
        .then_some((stage, variances))
}

fn matmul(a: &[f64], b: &[f64], rows: usize, inner: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for k in 0..inner {
            let aik = a[i * inner + k];
            if aik == 0.0 {
                continue;
            }
            let row = &b[k * cols..(k + 1) * cols];
            for (o, &bkj) in out[i * cols..(i + 1) * cols].iter_mut().zip(row) {
                *o += aik * bkj;
            }
        }
    }
    out
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = a[i * cols + j];
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of a symmetric matrix,
/// by cyclic Jacobi rotations; `None` if it does not converge.
#[allow(clippy::needless_range_loop)]
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        // 1e-10, not less: with hundreds of dimensions and directions of very different
        // size, rounding alone keeps the off-diagonal near 1e-12 of the norm.
        if off <= 1e-10 * scale {
            let values = (0..n).map(|i| a[i * n + i]).collect();
            return Some((values, v));
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ·A·J on rows/columns p and q.
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_orders_like_total_cmp_and_keeps_every_bit() {
        let v = [
            3.5,
            -0.0,
            0.0,
            -2.25,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            -1e-300,
            f64::NAN,
            -f64::NAN,
            42.0,
            -42.0,
        ];
        let mut expected = v.to_vec();
        expected.sort_by(f64::total_cmp);
        let got = sorted(&v);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_stage_applies_its_affine_map_bit_for_bit() {
        // 7 rows (a block of four and three left over) × 5 outputs, against the map
        // written out term by term in row order.
        let (rows, outputs) = (7, 5);
        let stage = Stage {
            mean: (0..rows).map(|i| 0.1 * i as f64 - 0.3).collect(),
            matrix: (0..rows * outputs)
                .map(|k| ((k * 37 % 11) as f64 - 5.0) / 3.0)
                .collect(),
        };
        let x: Vec<f64> = (0..rows).map(|i| (i as f64 * 1.7).sin()).collect();
        let y = stage.apply(&x);
        assert_eq!(
            y,
            stage.apply_portable(&x),
            "the AVX2 and portable versions agree"
        );
        assert_eq!(y.len(), outputs);
        for (j, &yj) in y.iter().enumerate() {
            let mut expected = 0.0;
            for (i, (xi, mi)) in x.iter().zip(&stage.mean).enumerate() {
                expected += (xi - mi) * stage.matrix[i * outputs + j];
            }
            assert_eq!(yj, expected, "output {j}");
        }
    }

    #[test]
    fn jacobi_recovers_eigenpairs() {
        // A known symmetric matrix: A·v = λ·v for each returned pair.
        let n = 4;
        let a = vec![
            4.0, 1.0, 0.5, 0.0, //
            1.0, 3.0, 0.2, 0.1, //
            0.5, 0.2, 2.0, 0.3, //
            0.0, 0.1, 0.3, 1.0,
        ];
        let (e, v) = symmetric_eigen(a.clone(), n).unwrap();
        for k in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j * n + k]).sum();
                assert!((av - e[k] * v[i * n + k]).abs() < 1e-9, "pair {k}");
            }
        }
        let trace: f64 = e.iter().sum();
        assert!((trace - 10.0).abs() < 1e-9);
    }

    #[test]
    fn jacobi_converges_on_large_matrices_of_wide_dynamic_range() {
        // A = B·Bᵀ, B 300 × 300 with columns scaled from 1e-3 to 1e3: eigenvalues from
        // about 1e-6 to 1e6, as after whitening a within-user scatter with a nearly
        // constant value. (The stall that made 1e-12 too strict came from a population of
        // synthetic typists, `engine/benches`, and is not reproduced by this matrix.)
        let n = 300;
        let mut seed = 11u64;
        let mut b = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                b[i * n + j] = u * 10f64.powf(-3.0 + 6.0 * j as f64 / (n - 1) as f64);
            }
        }
        let a = matmul(&b, &transpose(&b, n, n), n, n, n);
        let (e, v) = symmetric_eigen(a.clone(), n).expect("converges");
        let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        for k in [0, n / 2, n - 1] {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j * n + k]).sum();
                assert!((av - e[k] * v[i * n + k]).abs() < 1e-8 * norm, "pair {k}");
            }
        }
    }

    #[test]
    fn residuals_are_timings_less_the_population_typical() {
        let ks = |key: u32, down_ms: u64, hold_ms: u64| Keystroke {
            key,
            down_us: down_ms * 1000,
            up_us: (down_ms + hold_ms) * 1000,
        };
        // Keys 1, 2, 1, 2, 1, 2: holds 100 ms (key 1) and 80 ms (key 2), 150 ms apart.
        let w: Vec<Keystroke> = (0..6)
            .map(|i| ks(1 + i % 2, 150 * i as u64, if i % 2 == 0 { 100 } else { 80 }))
            .collect();
        let mut typical = vec![
            (id(HOLD, &[1]), 100f64.ln()),
            (id(DOWN_DOWN, &[1, 2]), 150f64.ln()),
            (id(TRIGRAPH, &[1, 2, 1]), 250f64.ln()),
        ];
        typical.sort_unstable_by_key(|e| e.0);
        let f = WindowFeatures {
            keys: vec![],
            offsets: vec![],
            medians: vec![4.0, 5.0, 2.0],
            typical,
            mixture: Mixture::unfitted(LOCAL),
            typical_buckets: Derived::default(),
        };
        let s = series(&w);
        let r = f.residuals(&w, &s);
        // Key 1 as typical; key 2 untabled: its hold less the median hold.
        for (i, h) in r.hold.iter().enumerate() {
            let expected = if i % 2 == 0 { 0.0 } else { 80f64.ln() - 4.0 };
            assert!((h - expected).abs() < 1e-12, "{i}: {h}");
        }
        // Down-down: only the tabled digraph (1, 2) enters the distribution (3 times);
        // every digraph enters the local values, untabled ones against the median.
        assert_eq!(r.dd.len(), 3);
        assert!(r.dd.iter().all(|d| d.abs() < 1e-12));
        assert_eq!(r.dd_local.len(), 5);
        assert!((r.dd_local[1] - (150f64.ln() - 5.0)).abs() < 1e-12);
        assert!(r.ud.is_empty() && r.uu.is_empty());
        // Trigraph (1, 2, 1): 300 ms against a typical 250 ms (twice).
        assert_eq!(r.tri.len(), 2);
        assert!(r
            .tri
            .iter()
            .all(|t| (t - (300f64 / 250.0).ln()).abs() < 1e-12));
        // Fewer than 3 values summarise as zeros.
        let mut x = Vec::new();
        summary(&r.tri, &mut x);
        assert_eq!(x, vec![0.0; SUMMARY]);
        // Local vectors: one per keystroke after the first.
        let l = WindowFeatures::local_vectors(&s, &r);
        assert_eq!(l.len(), 5 * LOCAL);
        assert!((l[LOCAL + 4] - 100f64.ln()).abs() < 1e-12); // third key's raw hold
    }

    #[test]
    fn same_user_scores_above_different_users() {
        let e = Embedding {
            features: WindowFeatures {
                keys: vec![],
                offsets: vec![],
                medians: vec![0.0; 3],
                typical: vec![],
                mixture: Mixture::unfitted(LOCAL),
                typical_buckets: Derived::default(),
            },
            scale: vec![1.0; 1],
            first: Stage {
                mean: vec![0.0; 1],
                matrix: vec![1.0; 1],
            },
            second: Stage {
                mean: vec![0.0; 1],
                matrix: vec![1.0; 1],
            },
            between: vec![4.0, 4.0],
        };
        let g = [2.0, -1.0];
        assert!(e.llr(&g, 5.0, &[2.1, -0.9]) > 0.0);
        assert!(e.llr(&g, 5.0, &[-2.0, 1.5]) < 0.0);
        // A common (near-centre) match is weaker evidence than an unusual one.
        assert!(e.llr(&[0.1, 0.0], 5.0, &[0.1, 0.0]) < e.llr(&g, 5.0, &g));
    }

    fn window(tempo: f64, hold: f64, seed: u64) -> Vec<Keystroke> {
        let mut t = 0u64;
        let mut r = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..50)
            .map(|i| {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let jitter = ((r >> 33) % 40) as f64 - 20.0;
                let key = (i * 7 % 12) as u32;
                let h = hold * (1.0 + 0.02 * key as f64) + jitter * 0.5;
                let s = Keystroke {
                    key,
                    down_us: t,
                    up_us: t + (h * 1000.0) as u64,
                };
                t += ((tempo + jitter) * 1000.0) as u64;
                s
            })
            .collect()
    }

    #[test]
    fn learns_to_tell_synthetic_typists_apart() {
        let users: Vec<Vec<Vec<Keystroke>>> = (0..100)
            .map(|u| {
                (0..8)
                    .map(|w| {
                        window(
                            120.0 + 4.0 * u as f64,
                            70.0 + 3.0 * (u % 9) as f64,
                            u * 100 + w,
                        )
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[Vec<Keystroke>]> = users.iter().map(|u| u.as_slice()).collect();
        // 60 users of 8 windows: too few residual degrees of freedom for 284 values.
        assert!(Embedding::fit(&refs[..60]).is_none());
        let e = Embedding::fit(&refs[..90]).expect("fits");
        e.validate().unwrap();
        // 12 distinct keys in these synthetic windows.
        assert_eq!(e.scale.len(), FIXED_INPUTS + 12 * VALUES_PER_KEY);
        // Unseen users 90..100: own windows closer than the others'.
        let (mut wins, mut total) = (0, 0);
        for u in 90..100 {
            let g: Vec<Vec<f64>> = users[u][..5].iter().map(|w| e.embed(w).unwrap()).collect();
            let mean: Vec<f64> = (0..g[0].len())
                .map(|j| g.iter().map(|v| v[j]).sum::<f64>() / 5.0)
                .collect();
            let own = e.llr(&mean, 5.0, &e.embed(&users[u][6]).unwrap());
            for o in (90..100).filter(|&o| o != u) {
                let other = e.llr(&mean, 5.0, &e.embed(&users[o][6]).unwrap());
                wins += (own > other) as usize;
                total += 1;
            }
        }
        assert!(wins as f64 > 0.9 * total as f64, "{wins}/{total}");
        assert!(e.embed(&users[0][0][..MIN_STROKES - 1]).is_none());
        // A stored embedding claiming an absurd between-user variance is refused (its
        // LLR would lose all precision), as is one without a second stage.
        let mut bad = e.clone();
        bad.between[0] = 1e16;
        assert!(bad.validate().is_err());
        let mut bad = e.clone();
        bad.second.mean.clear();
        bad.second.matrix.clear();
        bad.first.matrix.clear();
        assert!(bad.validate().is_err());
    }
}
