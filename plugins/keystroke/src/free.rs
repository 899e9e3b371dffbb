//! Free text: whatever the user types, matched per key id and per key-id n-gram.
//!
//! Five timing types per window (after Gunetti & Picardi and the Aalto study): hold time
//! per key (`ln`), and per digraph down-down (`ln`), up-down and up-up (`asinh(x/20 ms)`:
//! they can be negative when keys overlap), and per trigraph down-down (`ln`). A
//! gallery keeps, per type and id, the count and mean of the occurrences — timing
//! statistics only, never the order of keys.
//!
//! A query is compared with the gallery per type, on its per-id means, with four measures:
//!
//! * `Z`: mean `|x̄_q − m_g| / √(σw²·(1/n_q + 1/n_g))` over the ids both contain (σw² =
//!   the population's pooled within-user variance of that type);
//! * `A`: the share of shared ids closer than `0.25·σw`;
//! * `LLRmean`, `LLRsum`: a Bayesian per-id log-likelihood ratio "this user" versus
//!   "anyone", summed and averaged over the query's ids. Per id, the user's true mean
//!   has the prior N(μ_f, σb²) (μ_f = the population mean of that id, shrunk towards the
//!   type's mean with weight 5; σb² = the between-user variance); the gallery's `n_g`
//!   occurrences give its posterior N(pm, 1/prec), and the query mean is compared under
//!   both hypotheses: `l_f = ln N(x̄_q; pm, 1/prec + σw²/n_q) − ln N(x̄_q; μ_f, σb² +
//!   σw²/n_q)` (0 for ids the gallery lacks). Unlike `Z`, it knows that matching on a
//!   common timing is weak evidence and matching on an unusual one strong evidence.
//!
//! Seven rhythm statistics per window (median and interquartile range of `ln` hold and of
//! `ln` down-down, share of overlapping keys, median up-down, mean interval) are compared
//! with the gallery's mean as `|q − g|/σ` and its square (σ = their spread over all
//! population windows). A balanced logistic regression (standardised inputs, ridge 1e-3)
//! learned on *other* users combines the 34 numbers; because the classes weigh equally,
//! its output is a prior-free LLR. One combiner per gallery size (1, 2, 5, 10 windows):
//! how much a distance means depends on how well the gallery is known. Enrolment picks
//! the largest one not above its number of windows.
//!
//! **S-norm.** Some galleries are close to everyone (a very common typing style), some
//! queries close to every gallery; the raw score does not know. A cohort of population
//! users (at most [`COHORT`]) turns it into `s = ½[(s_raw − μz)/σz + (s_raw − μt)/σt]`:
//! z-statistics = the raw scores of the cohort's windows against the enrolled gallery
//! (computed at enrolment), t-statistics = the raw scores of the query against the
//! cohort's galleries (computed at every score, against all cohort galleries at once
//! through an inverted index, [`crate::cohort`], so a score touches only the cohort
//! entries the window shares). `s` is mapped to an LLR by a 1-D balanced logistic
//! regression learned on the population (its users scored with leave-one-out cohorts).
//! The profile carries the cohort's galleries inverted, in a packed binary form
//! ([`crate::pack::cohort`], about 8 bytes per entry); without a population
//! there is no cohort and the raw combiner is the LLR. Adaptation moves the gallery but
//! not its z-statistics (the cohort's windows are not kept in the profile): they are a
//! normalisation, not the decision.
//!
//! **Whole-window embedding.** A second opinion that does not need shared ids: each window
//! as one vector of timing distributions and per-key timings, reduced by LDA and scored by
//! a two-covariance PLDA model ([`crate::plda`]). Its LLR enters a second calibration,
//! `llr = a' + b'·s + c'·plda`, learned on the population with the embedding
//! cross-fitted (each population user placed by an embedding learned on the other half of
//! the population, so `c'` is learned on scores of users the embedding never saw; those
//! half-population embeddings are a little less sharp than the stored one, so `c'` is, if
//! anything, conservative). The plain calibration `a + b·s` is kept for windows too short
//! to embed. Aalto, G = 5: 4.8 % mean EER without the embedding, 1.95 % with it
//! (docs/results.md).
//!
//! Everything learned (variances, per-id population means, rhythm spreads, combiners,
//! calibration, cohort, embedding) comes from the population's users only, never from the
//! user being enrolled.
//!
//! Timer-resolution statistics (how often times are multiples of 8 ms, …) would separate
//! users on the Aalto data much better, but they fingerprint the keyboard's USB polling
//! and the browser clock, not the person; they are deliberately not used.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::cohort::{Cohort, CohortTables};
use crate::plda::Embedding;
use crate::stats::{asinh, fit_llr_calibration, fit_logistic};
use crate::timing::Keystroke;
use habitus_plugin::PluginError;

pub(crate) const TYPES: usize = 5;
pub const RHYTHM: usize = 7;
/// Per type: Z, A, LLRmean, LLRsum.
const MEASURES: usize = 4;
/// Inputs of the combiner (without the bias).
pub const FEATURES: usize = TYPES * MEASURES + 2 * RHYTHM;
/// One query-versus-gallery comparison.
type Inputs = [f64; FEATURES];
/// Format of free-text profiles and populations (inside the blob envelope). 1: spreads
/// and one 17-input combiner; 2: variances, per-id population means, per-gallery-size
/// 34-input combiners, S-norm cohort; 3: the same, with a profile's cohort stored
/// inverted ([`crate::cohort`]) (format 2 differs only in the cohort's layout, which the
/// reader recognises; a release that reads only format 2 refuses format 3 by number,
/// with a clear message); 4: the whole-window embedding ([`crate::plda`]) and a second
/// calibration fusing its LLR; 5: the embedding with residual and mixture statistics; 6,
/// what this release writes: the embedding with each frequent key's share of the window.
/// The embeddings of formats 4 and 5 describe windows differently, so this release reads
/// those formats without theirs (plain calibration, as format 3). This release reads
/// 2–6; an older release refuses format 6 by number.
pub const FREE_FORMAT: u32 = 6;
/// Oldest free-text format whose embedding this release reads.
pub const EMBEDDING_FORMAT: u32 = 6;
/// Oldest free-text format this release reads.
pub const OLDEST_FREE_FORMAT: u32 = 2;
/// Gallery sizes (windows) a combiner is learned for.
pub const GALLERY_SIZES: [usize; 4] = [1, 2, 5, 10];
/// Most cohort users kept for S-norm (each adds to every score's work and to every profile).
pub const COHORT: usize = 100;
/// Genuine query windows per population user (its last ones).
const QUERIES: usize = 5;
/// Impostor windows per population gallery when learning the combiner.
const MAX_IMPOSTORS: usize = 600;
/// Weight (in occurrences) of the type's mean in the per-id population mean.
const MU_PRIOR: f64 = 5.0;
const MAX_HOLD_US: u64 = 2_000_000;
const MAX_DIGRAPH_US: u64 = 3_000_000;
const MAX_TRIGRAPH_US: u64 = 4_000_000;

pub(crate) fn id(kind: u64, keys: &[u32]) -> u64 {
    // Type in the top 3 bits; key ids mixed below (collisions only merge statistics).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &k in keys {
        h ^= k as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (kind << 61) | (h >> 3)
}

pub(crate) fn kind_of(id: u64) -> usize {
    ((id >> 61) as usize).min(TYPES - 1)
}

/// Percentile with linear interpolation (as numpy's default) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn median_iqr(mut v: Vec<f64>, fallback: f64) -> (f64, f64) {
    if v.is_empty() {
        return (fallback, 0.0);
    }
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 0.5),
        percentile(&v, 0.75) - percentile(&v, 0.25),
    )
}

/// `(feature id, value)` observations of one window, and its rhythm statistics.
pub fn observations(strokes: &[Keystroke]) -> (Vec<(u64, f64)>, [f64; RHYTHM]) {
    let mut out = Vec::with_capacity(strokes.len() * 5);
    let hold_ok = |s: &Keystroke| s.up_us > s.down_us && s.up_us - s.down_us <= MAX_HOLD_US;
    let ms = |us: i64| us as f64 / 1000.0;
    let (mut holds, mut dds, mut uds) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in strokes.iter().enumerate() {
        if hold_ok(s) {
            let h = ms((s.up_us - s.down_us) as i64).ln();
            out.push((id(0, &[s.key]), h));
            holds.push(h);
        }
        if let Some(n) = strokes.get(i + 1) {
            let dd = n.down_us as i64 - s.down_us as i64;
            let ud = ms(n.down_us as i64 - s.up_us as i64);
            if dd > 0 {
                dds.push(ms(dd).ln());
            }
            if ud.abs() < 3000.0 {
                uds.push(ud);
            }
            if dd > 0 && dd as u64 <= MAX_DIGRAPH_US && hold_ok(s) && hold_ok(n) {
                let uu = ms(n.up_us as i64 - s.up_us as i64);
                out.push((id(1, &[s.key, n.key]), ms(dd).ln()));
                out.push((id(2, &[s.key, n.key]), asinh(ud / 20.0)));
                out.push((id(3, &[s.key, n.key]), asinh(uu / 20.0)));
            }
        }
        if let Some(m) = strokes.get(i + 2) {
            let d2 = m.down_us as i64 - s.down_us as i64;
            if d2 > 0 && d2 as u64 <= MAX_TRIGRAPH_US {
                out.push((id(4, &[s.key, strokes[i + 1].key, m.key]), ms(d2).ln()));
            }
        }
    }
    let (hold_med, hold_iqr) = median_iqr(holds, 4.5);
    let (dd_med, dd_iqr) = median_iqr(dds, 5.0);
    let (overlap, ud_med) = if uds.is_empty() {
        (0.0, 0.0)
    } else {
        let share = uds.iter().filter(|&&u| u < 0.0).count() as f64 / uds.len() as f64;
        let scaled: Vec<f64> = uds.iter().map(|u| asinh(u / 20.0)).collect();
        (share, median_iqr(scaled, 0.0).0)
    };
    let span = match (strokes.first(), strokes.last()) {
        (Some(f), Some(l)) => ms(l.down_us as i64 - f.down_us as i64),
        _ => 0.0,
    };
    let pace = (span.max(1.0) / strokes.len().saturating_sub(1).max(1) as f64).ln();
    (
        out,
        [hold_med, hold_iqr, dd_med, dd_iqr, overlap, ud_med, pace],
    )
}

/// Per-id statistics: occurrence count, mean, and the population's mean of that id (`mu`;
/// unused in a query).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: f64,
    pub mean: f64,
    #[serde(default)]
    pub mu: f64,
}

/// Per-id statistics sorted by id, and the mean rhythm vector: a gallery (pooled windows)
/// or a single query window.
#[derive(Clone, Debug, PartialEq)]
pub struct Gallery {
    pub entries: Vec<(u64, Stat)>,
    pub rhythm: [f64; RHYTHM],
}

impl Gallery {
    /// One window, `mu` left at 0.
    pub fn window(strokes: &[Keystroke]) -> Gallery {
        let (mut obs, rhythm) = observations(strokes);
        // Sorting and grouping beats a hash map at a few hundred observations.
        obs.sort_unstable_by_key(|o| o.0);
        let mut entries: Vec<(u64, Stat)> = Vec::with_capacity(obs.len());
        for (i, x) in obs {
            match entries.last_mut() {
                Some((last, s)) if *last == i => {
                    s.n += 1.0;
                    s.mean += x;
                }
                _ => entries.push((
                    i,
                    Stat {
                        n: 1.0,
                        mean: x,
                        mu: 0.0,
                    },
                )),
            }
        }
        for (_, s) in entries.iter_mut() {
            s.mean /= s.n;
        }
        Gallery { entries, rhythm }
    }

    /// Pools windows (occurrence-weighted means; rhythm = mean of the windows' vectors)
    /// and attaches each id's population mean.
    pub fn pool(windows: &[&Gallery], c: &Constants) -> Gallery {
        let mut m: HashMap<u64, (f64, f64)> = HashMap::new();
        let mut rhythm = [0.0; RHYTHM];
        for w in windows {
            for (i, s) in &w.entries {
                let e = m.entry(*i).or_insert((0.0, 0.0));
                e.0 += s.n * s.mean;
                e.1 += s.n;
            }
            for (a, b) in rhythm.iter_mut().zip(w.rhythm) {
                *a += b / windows.len() as f64;
            }
        }
        let mut entries: Vec<(u64, Stat)> = m
            .into_iter()
            .map(|(i, (s, n))| {
                (
                    i,
                    Stat {
                        n,
                        mean: s / n,
                        mu: c.mu(i),
                    },
                )
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.0);
        Gallery { entries, rhythm }
    }
}

/// Population constants per timing type and rhythm statistic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constants {
    /// Pooled within-user variance per type.
    pub sw2: Vec<f64>,
    /// Between-user variance of per-id user means, per type.
    pub sb2: Vec<f64>,
    /// Mean of all occurrences, per type (the population mean of an unseen id).
    pub gm: Vec<f64>,
    /// Spread of each rhythm statistic over all population windows.
    pub rhythm_sd: Vec<f64>,
    /// Shrunk per-id population means, sorted by id (population only; profiles keep
    /// the values of their own ids).
    #[serde(
        with = "crate::pack::table",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mu: Vec<(u64, f64)>,
}

impl Default for Constants {
    /// Typical values (Aalto study, other users), used until a population is built.
    fn default() -> Self {
        Constants {
            sw2: vec![0.074, 0.19, 1.07, 0.26, 0.105],
            sb2: vec![0.057, 0.186, 1.33, 0.25, 0.17],
            gm: vec![4.6, 5.4, 2.6, 3.1, 6.1],
            rhythm_sd: vec![0.22, 0.11, 0.36, 0.24, 0.17, 1.03, 0.44],
            mu: Vec::new(),
        }
    }
}

impl Constants {
    fn mu(&self, id: u64) -> f64 {
        match self.mu.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => self.mu[i].1,
            Err(_) => self.gm[kind_of(id)],
        }
    }

    fn validate(&self) -> Result<(), PluginError> {
        let ok = |v: &[f64], n: usize| v.len() == n && v.iter().all(|x| x.is_finite());
        let positive = |v: &[f64]| v.iter().all(|&x| x > 0.0);
        if ok(&self.sw2, TYPES)
            && ok(&self.sb2, TYPES)
            && ok(&self.gm, TYPES)
            && ok(&self.rhythm_sd, RHYTHM)
            && positive(&self.sw2)
            && positive(&self.sb2)
            && positive(&self.rhythm_sd)
        {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(
                "free-text constants have the wrong length or non-positive variances",
            ))
        }
    }
}

/// The 34 combiner inputs of a query against a gallery, and the number of shared ids.
fn features(c: &Constants, q: &Gallery, g: &Gallery) -> (Inputs, usize) {
    features_of(c, q, &g.entries, &g.rhythm)
}

/// What the comparison of one shared id costs that depends only on its type and the two
/// occurrence counts: worth a table ([`crate::cohort`]), as it holds the only square root
/// and logarithm of the per-id terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PairConstants {
    /// Reciprocal of the id's z-distance denominator.
    inv_zden: f64,
    /// `−0.5 / vu`, `vu` the predictive variance of the query mean under the gallery's
    /// posterior.
    genuine: f64,
    /// `0.5 / vb`, `vb` the predictive variance of the query mean under the population.
    population: f64,
    /// `0.5·ln(vb / vu)`.
    half_ln: f64,
}

impl PairConstants {
    pub(crate) fn new(c: &Constants, t: usize, query_n: f64, gallery_n: f64) -> PairConstants {
        let (sw2, sb2) = (c.sw2[t], c.sb2[t]);
        let prec = 1.0 / sb2 + gallery_n / sw2;
        let vu = 1.0 / prec + sw2 / query_n;
        let vb = sb2 + sw2 / query_n;
        PairConstants {
            inv_zden: 1.0 / (sw2 * (1.0 / query_n + 1.0 / gallery_n)).sqrt(),
            genuine: -0.5 / vu,
            population: 0.5 / vb,
            half_ln: 0.5 * (vb / vu).ln(),
        }
    }
}

/// How close a gallery mean must be to count as close (the "A" measure), per type.
pub(crate) fn close_bars(c: &Constants) -> [f64; TYPES] {
    std::array::from_fn(|t| 0.25 * c.sw2[t].sqrt())
}

/// The gallery's posterior mean of an id of type `t` (its mean shrunk to `mu`).
pub(crate) fn posterior_mean(c: &Constants, t: usize, g: &Stat) -> f64 {
    let (sw2, sb2) = (c.sw2[t], c.sb2[t]);
    let prec = 1.0 / sb2 + g.n / sw2;
    (g.mu / sb2 + g.n * g.mean / sw2) / prec
}

/// Per-type sums over the ids a query shares with one gallery.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sums {
    z: [f64; TYPES],
    close: [f64; TYPES],
    llr: [f64; TYPES],
    shared: [usize; TYPES],
}

impl Sums {
    /// Adds one shared id of type `t`: the query's mean, the gallery's mean, the id's
    /// population mean, the gallery's posterior mean, and the pair's constants.
    /// `close_bar` is the type's entry of [`close_bars`]. Multiplications by reciprocals,
    /// not divisions: this runs for every cohort entry a window shares.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        t: usize,
        close_bar: f64,
        query_mean: f64,
        mean: f64,
        mu: f64,
        pm: f64,
        k: &PairConstants,
    ) {
        self.shared[t] += 1;
        let d = (query_mean - mean).abs();
        self.z[t] += d * k.inv_zden;
        self.close[t] += (d < close_bar) as u8 as f64;
        self.llr[t] += k.genuine * (query_mean - pm).powi(2)
            + k.population * (query_mean - mu).powi(2)
            + k.half_ln;
    }

    /// The combiner inputs, given how many of the query's ids each type has (`seen`) and
    /// both rhythm vectors; and the number of shared ids.
    // Parallel per-type arrays: indices say which is which.
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn inputs(
        &self,
        c: &Constants,
        seen: &[usize; TYPES],
        query_rhythm: &[f64],
        rhythm: &[f64],
    ) -> (Inputs, usize) {
        let mut x = [0.0; FEATURES];
        for t in 0..TYPES {
            let s = self.shared[t].max(1) as f64;
            x[MEASURES * t] = self.z[t] / s;
            x[MEASURES * t + 1] = self.close[t] / s;
            x[MEASURES * t + 2] = if seen[t] > 0 {
                self.llr[t] / seen[t] as f64
            } else {
                0.0
            };
            x[MEASURES * t + 3] = self.llr[t];
        }
        for r in 0..RHYTHM {
            let d = (query_rhythm[r] - rhythm[r]).abs() / c.rhythm_sd[r];
            x[TYPES * MEASURES + r] = d;
            x[TYPES * MEASURES + RHYTHM + r] = d * d;
        }
        (x, self.shared.iter().sum())
    }
}

/// [`features`] against a gallery's parts (`rhythm` has `RHYTHM` values).
fn features_of(
    c: &Constants,
    q: &Gallery,
    entries: &[(u64, Stat)],
    rhythm: &[f64],
) -> (Inputs, usize) {
    let mut sums = Sums::default();
    let mut seen = [0usize; TYPES];
    let bars = close_bars(c);
    let mut j = 0;
    for &(i, qs) in &q.entries {
        let t = kind_of(i);
        seen[t] += 1;
        // A linear merge: measured faster than a binary search per id here.
        while j < entries.len() && entries[j].0 < i {
            j += 1;
        }
        let Some((gi, gs)) = entries.get(j) else {
            continue;
        };
        if *gi != i {
            continue;
        }
        let pair = PairConstants::new(c, t, qs.n, gs.n);
        sums.add(
            t,
            bars[t],
            qs.mean,
            gs.mean,
            gs.mu,
            posterior_mean(c, t, gs),
            &pair,
        );
    }
    sums.inputs(c, &seen, &q.rhythm, rhythm)
}

/// A learned combiner: `s_raw = w₀ + Σ wⱼ·xⱼ`, and the S-norm calibration `llr = a + b·s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Combiner {
    /// Gallery size (windows) it was learned for.
    pub gallery: usize,
    /// `1 + FEATURES` weights, bias first.
    pub weights: Vec<f64>,
    /// `(a, b)` of the S-norm calibration; `None` without a cohort.
    pub calibration: Option<(f64, f64)>,
    /// `(a', b', c')` of the calibration fusing the embedding's LLR, `llr = a' + b'·s +
    /// c'·plda` (format 4 on; absent before, or when the population has no embedding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused: Option<(f64, f64, f64)>,
}

impl Combiner {
    pub(crate) fn raw(&self, x: &Inputs) -> f64 {
        self.weights[0]
            + self.weights[1..]
                .iter()
                .zip(x)
                .map(|(w, v)| w * v)
                .sum::<f64>()
    }

    fn validate(&self) -> Result<(), PluginError> {
        let cal_ok = match self.calibration {
            Some((a, b)) => a.is_finite() && b.is_finite(),
            None => self.fused.is_none(),
        } && self.fused.map_or(true, |(a, b, c)| {
            a.is_finite() && b.is_finite() && c.is_finite()
        });
        if self.weights.len() == 1 + FEATURES
            && self.weights.iter().all(|w| w.is_finite())
            && cal_ok
        {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(format!(
                "free-text combiner needs {} finite weights, has {}",
                1 + FEATURES,
                self.weights.len()
            )))
        }
    }

    /// Uncalibrated built-in prior: the sum over the five types of the mean per-id
    /// Bayesian LLR (`LLRmean` in the module docs, with the built-in typical constants), a naive-Bayes
    /// combination across types. (An earlier prior on the standard-error-scaled `Z`
    /// barely separated a typist 1.8 times slower from the user: `Z` grows with the
    /// counts for genuine queries too, so a fixed threshold on it does not carry.)
    fn prior() -> Combiner {
        let mut weights = vec![0.0; 1 + FEATURES];
        for t in 0..TYPES {
            // Ids within a type are not independent (one tempo drives them all): each
            // type counts as one id, not as its ~30. Chosen on Aalto participants 1-100
            // (`habitus eval stepup`, docs/results.md) against 2 and against biases.
            weights[1 + MEASURES * t + 2] = 1.0;
        }
        Combiner {
            gallery: 1,
            weights,
            calibration: None,
            fused: None,
        }
    }
}

/// A population user kept for S-norm: its first windows (galleries of any size are
/// pooled from them) and one probe window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CohortUser {
    /// Gallery windows, then the probe (last).
    #[serde(with = "crate::pack::galleries")]
    pub windows: Vec<Gallery>,
}

/// Everything learned from other users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreePopulation {
    /// [`FREE_FORMAT`] when written; formats from [`OLDEST_FREE_FORMAT`] on are read
    /// (before [`EMBEDDING_FORMAT`] without their embedding), others refused by number.
    pub format: u32,
    pub constants: Constants,
    /// One per learned gallery size, increasing.
    pub combiners: Vec<Combiner>,
    pub cohort: Vec<CohortUser>,
    pub users: usize,
    /// Whole-window embedding (format 4 on; `None` when it could not be learned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Embedding>,
}

impl Default for FreePopulation {
    /// Uncalibrated built-in prior, used until a population is built.
    fn default() -> Self {
        FreePopulation {
            format: FREE_FORMAT,
            constants: Constants::default(),
            combiners: vec![Combiner::prior()],
            cohort: Vec::new(),
            users: 0,
            embedding: None,
        }
    }
}

impl FreePopulation {
    pub fn validate(&self) -> Result<(), PluginError> {
        self.constants.validate()?;
        if self.combiners.is_empty() {
            return Err(PluginError::invalid_profile(
                "free-text population has no combiner",
            ));
        }
        for c in &self.combiners {
            c.validate()?;
        }
        if let Some(e) = &self.embedding {
            e.validate()?;
        }
        if self.cohort.iter().any(|u| u.windows.len() < 2) {
            return Err(PluginError::invalid_profile(
                "free-text cohort user without gallery and probe windows",
            ));
        }
        Ok(())
    }

    /// The combiner for an enrolment of `windows` windows: the largest gallery size not
    /// above it (the smallest if none).
    fn combiner(&self, windows: usize) -> &Combiner {
        self.combiners
            .iter()
            .rev()
            .find(|c| c.gallery <= windows)
            .unwrap_or(&self.combiners[0])
    }

    /// Cohort user `k`'s gallery of `g` windows.
    fn cohort_gallery(&self, k: usize, g: usize) -> Gallery {
        let w = &self.cohort[k].windows;
        let galleries: Vec<&Gallery> = w[..w.len() - 1].iter().take(g).collect();
        Gallery::pool(&galleries, &self.constants)
    }

    fn cohort_probe(&self, k: usize) -> &Gallery {
        let w = &self.cohort[k].windows;
        &w[w.len() - 1]
    }
}

/// S-norm state of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SNorm {
    /// z-statistics: mean and sd of the cohort probes' raw scores against the gallery.
    pub z_mean: f64,
    pub z_sd: f64,
    /// Cohort galleries (same size as the combiner's) for the t-statistics.
    #[serde(with = "crate::pack::cohort")]
    pub cohort: Cohort,
    /// What scoring against `cohort` computes once, at the first score (never stored).
    #[serde(skip)]
    pub tables: Derived<Box<CohortTables>>,
}

impl SNorm {
    /// The cohort's raw scores of `query` (t-statistics come from them).
    fn raw_scores(&self, constants: &Constants, combiner: &Combiner, query: &Gallery) -> Vec<f64> {
        let tables = self
            .tables
            .get_or_init(|| Box::new(CohortTables::new(constants, &self.cohort)));
        self.cohort.raw_scores(tables, combiner, query)
    }
}

/// A value computed from the rest of its struct on first use: not serialised, and left
/// out of comparisons (two structs equal in everything else derive the same value).
#[derive(Clone, Debug)]
pub struct Derived<T>(OnceLock<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Derived(OnceLock::new())
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Derived<T> {
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(f)
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64;
    (m, var.sqrt().max(1e-3))
}

fn s_norm(raw: f64, z: (f64, f64), t: (f64, f64)) -> f64 {
    0.5 * ((raw - z.0) / z.1 + (raw - t.0) / t.1)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreeModel {
    /// Sorted by feature id (a list, not a map: JSON map keys would have to be strings).
    pub features: Vec<(u64, Stat)>,
    pub rhythm: Vec<f64>,
    pub rhythm_windows: f64,
    /// The population's constants (without the per-id table: `mu` is in `features`).
    pub constants: Constants,
    pub combiner: Combiner,
    pub snorm: Option<SNorm>,
    /// The population's embedding and the gallery's mean point in it, when the
    /// combiner's calibration fuses the embedding's LLR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Embedding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plda_gallery: Option<PldaGallery>,
}

/// The mean of a gallery's windows in the embedding, and how many windows it averages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PldaGallery {
    #[serde(with = "crate::pack::floats")]
    pub mean: Vec<f64>,
    pub n: f64,
}

impl PldaGallery {
    /// The mean point of the windows that can be embedded; `None` if none can.
    fn of(embedding: &Embedding, windows: &[Vec<Keystroke>]) -> Option<PldaGallery> {
        let points: Vec<Vec<f64>> = windows.iter().filter_map(|w| embedding.embed(w)).collect();
        mean_point(&points).map(|mean| PldaGallery {
            mean,
            n: points.len() as f64,
        })
    }
}

fn mean_point(points: &[Vec<f64>]) -> Option<Vec<f64>> {
    let first = points.first()?;
    let n = points.len() as f64;
    Some(
        (0..first.len())
            .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / n)
            .collect(),
    )
}

impl FreeModel {
    pub fn train(
        windows: &[Vec<Keystroke>],
        population: Option<&FreePopulation>,
    ) -> Result<FreeModel, PluginError> {
        let fallback = FreePopulation::default();
        let p = population.unwrap_or(&fallback);
        p.validate()?;
        let summaries: Vec<Gallery> = windows
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| Gallery::window(w))
            .collect();
        let refs: Vec<&Gallery> = summaries.iter().collect();
        let gallery = Gallery::pool(&refs, &p.constants);
        if gallery.entries.len() < 5 {
            return Err(PluginError::not_enough_data(format!(
                "free-text enrolment found only {} keys and n-grams",
                gallery.entries.len()
            )));
        }
        let combiner = p.combiner(summaries.len()).clone();
        let snorm = match combiner.calibration {
            Some(_) if !p.cohort.is_empty() => {
                let z: Vec<f64> = (0..p.cohort.len())
                    .map(|k| combiner.raw(&features(&p.constants, p.cohort_probe(k), &gallery).0))
                    .collect();
                let (z_mean, z_sd) = mean_sd(&z);
                let galleries: Vec<Gallery> = (0..p.cohort.len())
                    .map(|k| p.cohort_gallery(k, combiner.gallery))
                    .collect();
                Some(SNorm {
                    z_mean,
                    z_sd,
                    cohort: Cohort::from_galleries(&galleries)
                        .map_err(PluginError::invalid_input)?,
                    tables: Derived::default(),
                })
            }
            _ => None,
        };
        let constants = Constants {
            mu: Vec::new(),
            ..p.constants.clone()
        };
        // The embedding only where the calibration knows how much its LLR weighs.
        let (embedding, plda_gallery) = match (&p.embedding, combiner.fused, &snorm) {
            (Some(e), Some(_), Some(_)) => match PldaGallery::of(e, windows) {
                Some(g) => (Some(e.clone()), Some(g)),
                None => (None, None),
            },
            _ => (None, None),
        };
        Ok(FreeModel {
            features: gallery.entries,
            rhythm: gallery.rhythm.to_vec(),
            rhythm_windows: summaries.len() as f64,
            constants,
            combiner,
            snorm,
            embedding,
            plda_gallery,
        })
    }

    pub fn validate(&self) -> Result<(), PluginError> {
        self.constants.validate()?;
        self.combiner.validate()?;
        if self.rhythm.len() != RHYTHM || self.features.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(PluginError::invalid_profile(
                "free-text profile: rhythm of the wrong length or unsorted ids",
            ));
        }
        if self.snorm.is_some() && self.combiner.calibration.is_none() {
            return Err(PluginError::invalid_profile(
                "free-text profile: cohort without calibration",
            ));
        }
        match (&self.embedding, &self.plda_gallery) {
            (None, None) => {}
            (Some(_), Some(_)) if self.combiner.fused.is_none() || self.snorm.is_none() => {
                return Err(PluginError::invalid_profile(
                    "free-text profile: embedding without a fused calibration or a cohort",
                ))
            }
            (Some(e), Some(g)) => {
                e.validate()?;
                if g.mean.len() != e.between.len() || !(g.n >= 1.0 && g.n.is_finite()) {
                    return Err(PluginError::invalid_profile(
                        "free-text profile: embedded gallery does not fit the embedding",
                    ));
                }
            }
            _ => {
                return Err(PluginError::invalid_profile(
                    "free-text profile: embedding without its gallery, or the reverse",
                ))
            }
        }
        Ok(())
    }

    /// `(llr, quality)`; a window sharing nothing with the profile gives no opinion.
    pub fn score(&self, strokes: &[Keystroke]) -> (f64, f64) {
        if strokes.is_empty() {
            return (0.0, 0.0);
        }
        let q = Gallery::window(strokes);
        let (x, shared) = features_of(&self.constants, &q, &self.features, &self.rhythm);
        if shared == 0 {
            return (0.0, 0.0);
        }
        let raw = self.combiner.raw(&x);
        let llr = match (&self.snorm, self.combiner.calibration) {
            (Some(sn), Some((a, b))) if !sn.cohort.is_empty() => {
                let t = sn.raw_scores(&self.constants, &self.combiner, &q);
                let s = s_norm(raw, (sn.z_mean, sn.z_sd), mean_sd(&t));
                match self.plda_llr(strokes) {
                    Some((fa, fb, fc, plda)) => fa + fb * s + fc * plda,
                    None => a + b * s,
                }
            }
            _ => raw,
        };
        (llr, (shared as f64 / 60.0).min(1.0))
    }

    /// The fused calibration and the embedding's LLR of the window; `None` without an
    /// embedding or for a window too short to embed (the plain calibration applies).
    fn plda_llr(&self, strokes: &[Keystroke]) -> Option<(f64, f64, f64, f64)> {
        let (e, g) = (self.embedding.as_ref()?, self.plda_gallery.as_ref()?);
        let (a, b, c) = self.combiner.fused?;
        let q = e.embed(strokes)?;
        Some((a, b, c, e.llr(&g.mean, g.n, &q)))
    }

    /// Folds a clearly genuine window into the gallery, each new observation weighing at
    /// most `rate` (an exponential moving mean once enough has been seen). A new id gets
    /// its type's population mean as `mu` (the per-id table is not in the profile).
    pub fn adapt(&mut self, strokes: &[Keystroke], rate: f64) {
        let q = Gallery::window(strokes);
        for (i, s) in q.entries {
            match self.features.binary_search_by_key(&i, |(k, _)| *k) {
                Ok(j) => {
                    let g = &mut self.features[j].1;
                    g.n += 1.0;
                    g.mean += (s.mean - g.mean) * (1.0 / g.n).max(rate);
                }
                Err(j) => self.features.insert(
                    j,
                    (
                        i,
                        Stat {
                            n: 1.0,
                            mean: s.mean,
                            mu: self.constants.gm[kind_of(i)],
                        },
                    ),
                ),
            }
        }
        if let (Some(e), Some(g)) = (&self.embedding, &mut self.plda_gallery) {
            if let Some(point) = e.embed(strokes) {
                // A running mean while each window still weighs more than `rate`, then a
                // moving one: `n` stops growing, so the gallery is not trusted beyond
                // what the moving mean remembers.
                let w = if 1.0 / (g.n + 1.0) >= rate {
                    g.n += 1.0;
                    1.0 / g.n
                } else {
                    rate
                };
                for (m, v) in g.mean.iter_mut().zip(point) {
                    *m += (v - *m) * w;
                }
            }
        }
        self.rhythm_windows += 1.0;
        let w = (1.0 / self.rhythm_windows).max(rate);
        for (a, b) in self.rhythm.iter_mut().zip(q.rhythm) {
            *a += (b - *a) * w;
        }
    }
}

/// Maps `f` over `0..n` on all cores, keeping the order.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t * chunk..((t + 1) * chunk).min(n)).map(f).collect()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h: std::thread::ScopedJoinHandle<Vec<T>>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect()
    })
}

/// Population constants from all windows of the population's users.
fn constants(users: &[Vec<Vec<Keystroke>>], windows: &[Vec<Gallery>]) -> Constants {
    // Per type: Σ squared deviations from the user's id mean, Σ (count − 1), the cells
    // (user, id) with their count and mean; per id: the population's count and sum.
    let mut within = [0.0; TYPES];
    let mut dof = [0.0; TYPES];
    let mut total = [(0.0, 0.0); TYPES];
    let mut cells: Vec<(u64, f64, f64)> = Vec::new();
    let mut per_id: HashMap<u64, (f64, f64)> = HashMap::new();
    for u in users {
        let mut cell: HashMap<u64, (f64, f64, f64)> = HashMap::new();
        for w in u {
            for (i, x) in observations(w).0 {
                let e = cell.entry(i).or_insert((0.0, 0.0, 0.0));
                e.0 += 1.0;
                e.1 += x;
                e.2 += x * x;
            }
        }
        // In id order: sums over a hash map's order would differ in their last bits
        // from one run to the next, and so would every population and profile.
        let mut cell: Vec<(u64, (f64, f64, f64))> = cell.into_iter().collect();
        cell.sort_unstable_by_key(|e| e.0);
        for (i, (n, s, ss)) in cell {
            let t = kind_of(i);
            within[t] += ss - s * s / n;
            dof[t] += n - 1.0;
            total[t].0 += n;
            total[t].1 += s;
            cells.push((i, n, s / n));
            let e = per_id.entry(i).or_insert((0.0, 0.0));
            e.0 += n;
            e.1 += s;
        }
    }
    let fallback = Constants::default();
    let mut c = fallback.clone();
    for t in 0..TYPES {
        if dof[t] > 0.0 {
            c.sw2[t] = (within[t] / dof[t]).max(1e-4);
        }
        if total[t].0 > 0.0 {
            c.gm[t] = total[t].1 / total[t].0;
        }
        let (mut dev, mut inv, mut k) = (0.0, 0.0, 0.0);
        for &(i, n, m) in cells.iter().filter(|e| e.1 >= 3.0 && kind_of(e.0) == t) {
            let (pn, ps) = per_id[&i];
            dev += (m - ps / pn).powi(2);
            inv += 1.0 / n;
            k += 1.0;
        }
        if k > 0.0 {
            c.sb2[t] = (dev / k - c.sw2[t] * inv / k).max(1e-4);
        }
    }
    let mut mu: Vec<(u64, f64)> = per_id
        .into_iter()
        .map(|(i, (n, s))| (i, (s + MU_PRIOR * c.gm[kind_of(i)]) / (n + MU_PRIOR)))
        .collect();
    mu.sort_unstable_by_key(|e| e.0);
    c.mu = mu;
    let all: Vec<&[f64; RHYTHM]> = windows.iter().flatten().map(|g| &g.rhythm).collect();
    if all.len() >= 2 {
        for r in 0..RHYTHM {
            let v: Vec<f64> = all.iter().map(|x| x[r]).collect();
            let (m, _) = mean_sd(&v);
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
            c.rhythm_sd[r] = var.sqrt() + 1e-6;
        }
    }
    c
}

/// Genuine query windows of a user with `w` windows: its last `QUERIES` (fewer for short
/// histories); the first of them is its impostor probe against others.
fn queries(w: usize) -> usize {
    (w / 3).min(QUERIES)
}

/// Balanced logistic regression on standardised inputs (ridge 1e-3), folded back into raw
/// weights (bias first).
fn fit_combiner(genuine: &[Inputs], impostor: &[Inputs]) -> Option<Vec<f64>> {
    let n = (genuine.len() + impostor.len()) as f64;
    let mut mean = [0.0; FEATURES];
    let mut sd = [0.0; FEATURES];
    for x in genuine.iter().chain(impostor) {
        for j in 0..FEATURES {
            mean[j] += x[j] / n;
        }
    }
    for x in genuine.iter().chain(impostor) {
        for j in 0..FEATURES {
            sd[j] += (x[j] - mean[j]).powi(2) / n;
        }
    }
    for s in sd.iter_mut() {
        *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
    }
    let standard = |xs: &[Inputs]| -> Vec<Vec<f64>> {
        xs.iter()
            .map(|x| {
                let mut v = Vec::with_capacity(1 + FEATURES);
                v.push(1.0);
                v.extend((0..FEATURES).map(|j| (x[j] - mean[j]) / sd[j]));
                v
            })
            .collect()
    };
    let w = fit_logistic(&standard(genuine), &standard(impostor), 1e-3)?;
    let mut raw = vec![0.0; 1 + FEATURES];
    raw[0] = w[0];
    for j in 0..FEATURES {
        raw[1 + j] = w[1 + j] / sd[j];
        raw[0] -= w[1 + j] * mean[j] / sd[j];
    }
    Some(raw)
}

/// Learns the constants, one combiner per gallery size and the S-norm cohort and
/// calibration from other users (each user's windows in order). Per user: gallery = its
/// first `G` windows, genuine queries = its last 5 (fewer if it has under 15 windows),
/// impostor queries = the first of those of every other user (at most 600).
pub fn build_population(users: &[Vec<Vec<Keystroke>>]) -> Result<FreePopulation, PluginError> {
    build_population_with_cohort(users, COHORT)
}

/// [`build_population`] with at most `cohort` cohort users (0: no S-norm).
pub fn build_population_with_cohort(
    users: &[Vec<Vec<Keystroke>>],
    cohort: usize,
) -> Result<FreePopulation, PluginError> {
    let users: Vec<Vec<Vec<Keystroke>>> = users
        .iter()
        .map(|u| u.iter().filter(|w| !w.is_empty()).cloned().collect())
        .filter(|u: &Vec<Vec<Keystroke>>| u.len() >= 3)
        .collect();
    if users.len() < 3 {
        return Err(PluginError::not_enough_data(
            "a free-text population needs at least 3 users with 3 windows",
        ));
    }
    let windows: Vec<Vec<Gallery>> = par_map(users.len(), |u| {
        users[u].iter().map(|w| Gallery::window(w)).collect()
    });
    let c = constants(&users, &windows);
    // Cohort: evenly spaced users; their gallery windows (up to the largest gallery
    // size) and their probe.
    let n = users.len();
    let size = n.min(cohort);
    let cohort_ids: Vec<usize> = (0..size).map(|k| k * n / size).collect();
    let largest = *GALLERY_SIZES.last().unwrap_or(&1);
    let cohort: Vec<CohortUser> = cohort_ids
        .iter()
        .map(|&u| {
            let w = &windows[u];
            let probe = w.len() - queries(w.len());
            let mut kept: Vec<Gallery> = w[..probe.min(largest)].to_vec();
            kept.push(w[probe].clone());
            CohortUser { windows: kept }
        })
        .collect();
    let refs: Vec<&[Vec<Keystroke>]> = users.iter().map(|u| u.as_slice()).collect();
    // The embedding stored is learned on everyone; the calibration that weighs its LLR
    // must see scores of users the embedding never saw, so each user's windows are also
    // placed by an embedding learned on the other half of the population (cross-fitting).
    let (embedding, cross) = if cohort.is_empty() {
        (None, None)
    } else {
        let halves: [Vec<&[Vec<Keystroke>]>; 2] = [0, 1].map(|h| {
            refs.iter()
                .enumerate()
                .filter(|(u, _)| u % 2 == h)
                .map(|(_, w)| *w)
                .collect()
        });
        let fits = par_map(3, |k| match k {
            0 => Embedding::fit(&refs),
            _ => Embedding::fit(&halves[2 - k]), // 1: fit on odd users, for even ones
        });
        let [all, for_even, for_odd]: [Option<Embedding>; 3] =
            fits.try_into().unwrap_or([None, None, None]);
        let cross = match (for_even, for_odd) {
            (Some(e), Some(o)) => {
                let models = [e, o];
                let points = par_map(users.len(), |u| {
                    users[u].iter().map(|w| models[u % 2].embed(w)).collect()
                });
                Some(CrossFit { models, points })
            }
            _ => None,
        };
        (all, cross)
    };
    let mut population = FreePopulation {
        format: FREE_FORMAT,
        constants: c,
        combiners: Vec::new(),
        cohort,
        users: n,
        embedding,
    };
    let cross = cross.filter(|_| population.embedding.is_some());
    for &g in &GALLERY_SIZES {
        if let Some(combiner) =
            learn_combiner(&population, &windows, &cohort_ids, cross.as_ref(), g)
        {
            population.combiners.push(combiner);
        }
    }
    if population.combiners.is_empty() {
        return Err(PluginError::not_enough_data(
            "free-text combiner did not converge for any gallery size",
        ));
    }
    // An embedding no calibration weighs would only make every profile larger.
    if population.combiners.iter().all(|c| c.fused.is_none()) {
        population.embedding = None;
    }
    Ok(population)
}

/// Embeddings learned on each half of the population (`models[h]` on the half users
/// `u % 2 != h` belong to) and every user's windows placed by the one that never saw them.
struct CrossFit {
    models: [Embedding; 2],
    points: Vec<Vec<Option<Vec<f64>>>>,
}

impl CrossFit {
    /// The mean point of user `u`'s gallery (its first `g` windows) and how many windows
    /// it averages; `None` when none could be embedded.
    fn gallery(&self, u: usize, g: usize) -> Option<(Vec<f64>, f64)> {
        let points: Vec<Vec<f64>> = self.points[u][..g].iter().flatten().cloned().collect();
        mean_point(&points).map(|m| (m, points.len() as f64))
    }

    /// The LLR of a query point against user `u`'s gallery point; `None` for a window
    /// too short to embed (scoring then uses the plain calibration, so such pairs must
    /// not teach the fused one).
    fn llr(&self, u: usize, gallery: &(Vec<f64>, f64), query: &Option<Vec<f64>>) -> Option<f64> {
        query
            .as_ref()
            .map(|q| self.models[u % 2].llr(&gallery.0, gallery.1, q))
    }
}

fn learn_combiner(
    p: &FreePopulation,
    windows: &[Vec<Gallery>],
    cohort_ids: &[usize],
    cross: Option<&CrossFit>,
    g: usize,
) -> Option<Combiner> {
    let c = &p.constants;
    let eligible: Vec<usize> = (0..windows.len())
        .filter(|&u| windows[u].len() >= g + queries(windows[u].len()))
        .collect();
    if eligible.len() < 3 {
        return None;
    }
    let galleries: Vec<Gallery> = par_map(eligible.len(), |k| {
        let w: Vec<&Gallery> = windows[eligible[k]][..g].iter().collect();
        Gallery::pool(&w, c)
    });
    let probe = |u: usize| &windows[u][windows[u].len() - queries(windows[u].len())];
    let others = |k: usize| -> Vec<usize> {
        let m = eligible.len() - 1;
        let take = m.min(MAX_IMPOSTORS);
        (1..=take)
            .map(|j| eligible[(k + j * m / take) % eligible.len()])
            .collect()
    };
    // Per gallery: genuine and impostor inputs.
    let pairs: Vec<(Vec<Inputs>, Vec<Inputs>)> = par_map(eligible.len(), |k| {
        let u = eligible[k];
        let w = &windows[u];
        let genuine = w[w.len() - queries(w.len())..]
            .iter()
            .map(|q| features(c, q, &galleries[k]).0)
            .collect();
        let impostor = others(k)
            .into_iter()
            .map(|o| features(c, probe(o), &galleries[k]).0)
            .collect();
        (genuine, impostor)
    });
    let genuine: Vec<Inputs> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
    let impostor: Vec<Inputs> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
    let weights = fit_combiner(&genuine, &impostor)?;
    let mut combiner = Combiner {
        gallery: g,
        weights,
        calibration: None,
        fused: None,
    };
    if p.cohort.is_empty() {
        return Some(combiner);
    }
    // S-norm calibration with leave-one-out cohorts (a user is never its own cohort).
    let cohort_galleries: Vec<Gallery> = (0..p.cohort.len())
        .map(|k| p.cohort_gallery(k, g))
        .collect();
    // Pooled galleries always agree on an id's population mean; a failure here would be
    // a bug, and leaving the gallery size without a combiner is the safe answer to it.
    let cohort = Cohort::from_galleries(&cohort_galleries).ok()?;
    let tables = CohortTables::new(c, &cohort);
    let t_stats = |u: usize, q: &Gallery| -> (f64, f64) {
        let v: Vec<f64> = cohort
            .raw_scores(&tables, &combiner, q)
            .into_iter()
            .zip(cohort_ids)
            .filter(|(_, &cu)| cu != u)
            .map(|(raw, _)| raw)
            .collect();
        mean_sd(&v)
    };
    // t-statistics of every user's query windows (the probe is the first of them).
    let t: Vec<Vec<(f64, f64)>> = par_map(eligible.len(), |k| {
        let u = eligible[k];
        let w = &windows[u];
        w[w.len() - queries(w.len())..]
            .iter()
            .map(|q| t_stats(u, q))
            .collect()
    });
    // Per gallery: (S-norm score, embedding LLR) of its genuine queries and impostors;
    // the embedding LLR only where the cross-fitted embedding saw neither side (impostors
    // from the same half as the gallery's user).
    type Scored = (f64, Option<f64>);
    let scores: Vec<(Vec<Scored>, Vec<Scored>)> = par_map(eligible.len(), |k| {
        let u = eligible[k];
        let plda_gallery = cross.and_then(|x| x.gallery(u, g));
        let plda = |o: usize, query: usize| -> Option<f64> {
            let x = cross?;
            let gallery = plda_gallery.as_ref()?;
            if o % 2 != u % 2 {
                return None;
            }
            x.llr(u, gallery, &x.points[o][query])
        };
        let z: Vec<f64> = (0..p.cohort.len())
            .filter(|&j| cohort_ids[j] != u)
            .map(|j| combiner.raw(&features(c, p.cohort_probe(j), &galleries[k]).0))
            .collect();
        let z = mean_sd(&z);
        let w = &windows[u];
        let first = w.len() - queries(w.len());
        let genuine = w[first..]
            .iter()
            .zip(&t[k])
            .enumerate()
            .map(|(i, (q, &tq))| {
                let s = s_norm(combiner.raw(&features(c, q, &galleries[k]).0), z, tq);
                (s, plda(u, first + i))
            })
            .collect();
        let m = eligible.len() - 1;
        let take = m.min(MAX_IMPOSTORS);
        let impostor = (1..=take)
            .map(|j| (k + j * m / take) % eligible.len())
            .map(|o| {
                let v = eligible[o];
                let raw = combiner.raw(&features(c, probe(v), &galleries[k]).0);
                let probe_window = windows[v].len() - queries(windows[v].len());
                (s_norm(raw, z, t[o][0]), plda(v, probe_window))
            })
            .collect();
        (genuine, impostor)
    });
    let genuine: Vec<Scored> = scores.iter().flat_map(|s| s.0.iter().copied()).collect();
    let impostor: Vec<Scored> = scores.iter().flat_map(|s| s.1.iter().copied()).collect();
    // The plain calibration `a + b·s` on all pairs; the fused one `a' + b'·s + c'·plda` on
    // the pairs with an embedding LLR, when there are enough and the embedding's weight
    // comes out positive (a negative one would mean the embedding misleads).
    let with_plda = |v: &[Scored]| -> Vec<Vec<f64>> {
        v.iter()
            .filter_map(|&(s, l)| l.map(|l| vec![1.0, s, l]))
            .collect()
    };
    let (fg, fi) = (with_plda(&genuine), with_plda(&impostor));
    let fused = if fg.len() >= 20 && fi.len() >= 20 {
        fit_logistic(&fg, &fi, 1e-6)
    } else {
        None
    };
    let plain = |v: &[Scored]| v.iter().map(|s| s.0).collect::<Vec<f64>>();
    combiner.calibration = fit_llr_calibration(&plain(&genuine), &plain(&impostor));
    if combiner.calibration.is_some() {
        combiner.fused = fused
            .filter(|w| w.len() == 3 && w[2] > 0.0)
            .map(|w| (w[0], w[1], w[2]));
    }
    Some(combiner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic typist `user`: its own hold and gap per key (±40 % between users), ±15 %
    /// jitter per keystroke; 40 keystrokes per window over 12 keys.
    fn window(user: u64, seed: u64) -> Vec<Keystroke> {
        let mut state = (user * 1_000_003 + seed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let habit = |key: u32, what: u64| {
            let h = (user * 31 + key as u64 * 7 + what).wrapping_mul(0x2545_f491_4f6c_dd1d);
            0.6 + 0.8 * ((h >> 40) as f64 / (1u64 << 24) as f64)
        };
        let mut t = 1_000_000u64;
        (0..40)
            .map(|_| {
                let key = 100 + (next() * 12.0) as u32;
                let hold = 90_000.0 * habit(key, 1) * (0.85 + 0.3 * next());
                let s = Keystroke {
                    key,
                    down_us: t,
                    up_us: t + hold as u64,
                };
                t += (180_000.0 * habit(key, 2) * (0.85 + 0.3 * next())) as u64;
                s
            })
            .collect()
    }

    fn users(n: u64) -> Vec<Vec<Vec<Keystroke>>> {
        (0..n)
            .map(|u| (0..15).map(|s| window(u, s)).collect())
            .collect()
    }

    #[test]
    fn rhythm_statistics_follow_their_definitions() {
        let w = [
            Keystroke {
                key: 1,
                down_us: 0,
                up_us: 100_000,
            },
            Keystroke {
                key: 2,
                down_us: 80_000, // overlaps the first key
                up_us: 160_000,
            },
            Keystroke {
                key: 3,
                down_us: 300_000,
                up_us: 300_000, // zero hold: not a valid hold
            },
        ];
        let (obs, r) = observations(&w);
        // Holds 100 and 80 ms; a digraph only between keys with valid holds (1→2).
        assert_eq!(obs.iter().filter(|o| kind_of(o.0) == 0).count(), 2);
        assert_eq!(obs.iter().filter(|o| kind_of(o.0) == 1).count(), 1);
        assert_eq!(obs.iter().filter(|o| kind_of(o.0) == 4).count(), 1);
        assert!((r[0] - (90f64).ln()).abs() < 0.02, "{r:?}"); // median of ln 100, ln 80
        assert!((r[4] - 0.5).abs() < 1e-12, "{r:?}"); // up-downs −20 and +140 ms
        assert!((r[6] - 150f64.ln()).abs() < 1e-12, "{r:?}"); // 300 ms over 2 intervals
                                                              // Empty windows fall back instead of panicking.
        let (obs, r) = observations(&[]);
        assert!(obs.is_empty() && r.iter().all(|v| v.is_finite()));
    }

    /// Mean LLR of the user's windows 11–15 and of ten strangers' windows.
    fn mean_llrs(model: &FreeModel, me: &[Vec<Keystroke>]) -> (f64, f64) {
        let genuine = me[10..].iter().map(|w| model.score(w).0).sum::<f64>() / 5.0;
        let impostor = (600..610)
            .map(|u| model.score(&window(u, 11)).0)
            .sum::<f64>()
            / 10.0;
        (genuine, impostor)
    }

    #[test]
    fn population_learns_per_size_combiners_and_snorm_separates_typists() {
        let raw = build_population_with_cohort(&users(14), 0).unwrap();
        assert!(raw.cohort.is_empty() && raw.combiners.iter().all(|c| c.calibration.is_none()));
        let me: Vec<Vec<Keystroke>> = (0..15).map(|s| window(500, s)).collect();
        let model = FreeModel::train(&me[..2], Some(&raw)).unwrap();
        assert!(model.snorm.is_none() && model.combiner.gallery == 2);
        assert!(model.score(&me[12]).0 > model.score(&window(600, 11)).0);

        let pop = build_population_with_cohort(&users(14), 10).unwrap();
        assert_eq!(pop.format, FREE_FORMAT);
        assert_eq!(
            pop.combiners.iter().map(|c| c.gallery).collect::<Vec<_>>(),
            GALLERY_SIZES.to_vec()
        );
        assert!(pop.combiners.iter().all(|c| c.calibration.is_some()));
        assert_eq!(pop.cohort.len(), 10);
        pop.validate().unwrap();
        assert!(pop.constants.sw2.iter().all(|&v| v > 0.0 && v < 1.0));
        // A user outside the population.
        let model = FreeModel::train(&me[..5], Some(&pop)).unwrap();
        model.validate().unwrap();
        assert_eq!(model.combiner.gallery, 5);
        let sn = model.snorm.as_ref().expect("cohort in the profile");
        assert_eq!(sn.cohort.len(), pop.cohort.len());
        let (genuine, impostor) = mean_llrs(&model, &me);
        assert!(genuine > 0.0 && impostor < 0.0, "{genuine} {impostor}");
        // Without a population: the uncalibrated prior, no cohort.
        let bare = FreeModel::train(&me[..5], None).unwrap();
        assert!(bare.snorm.is_none());
        assert!(bare.score(&me[12]).0 > bare.score(&window(600, 11)).0);
        // Nothing shared: no opinion.
        let other_keys: Vec<Keystroke> = window(1, 1)
            .into_iter()
            .map(|mut k| {
                k.key += 1000;
                k
            })
            .collect();
        assert_eq!(model.score(&other_keys), (0.0, 0.0));
    }

    #[test]
    fn a_large_enough_population_adds_the_embedding_and_its_fused_calibration() {
        // 14 users (above) are too few for the embedding; 100 are enough, also per half.
        let small = build_population_with_cohort(&users(14), 10).unwrap();
        assert!(small.embedding.is_none());
        assert!(small.combiners.iter().all(|c| c.fused.is_none()));
        let pop = build_population_with_cohort(&users(100), 10).unwrap();
        pop.validate().unwrap();
        assert!(pop.embedding.is_some());
        let fused = pop
            .combiner(5)
            .fused
            .expect("a fused calibration for G = 5");
        assert!(fused.2 > 0.0, "{fused:?}");
        let me: Vec<Vec<Keystroke>> = (0..15).map(|s| window(500, s)).collect();
        let model = FreeModel::train(&me[..5], Some(&pop)).unwrap();
        model.validate().unwrap();
        let g = model.plda_gallery.as_ref().expect("embedded gallery");
        assert_eq!(g.n, 5.0);
        let (genuine, impostor) = mean_llrs(&model, &me);
        assert!(genuine > 0.0 && impostor < 0.0, "{genuine} {impostor}");
        // The fused calibration is what scores a normal window; one too short to embed
        // gets the plain calibration, exactly as a model without the embedding would.
        let mut plain = model.clone();
        plain.embedding = None;
        plain.plda_gallery = None;
        assert_ne!(model.score(&me[12]).0, plain.score(&me[12]).0);
        let short = &me[12][..crate::plda::MIN_STROKES - 1];
        assert_eq!(model.score(short), plain.score(short));
        // An embedding in a profile whose calibration cannot weigh it is refused.
        let mut damaged = model.clone();
        damaged.combiner.fused = None;
        assert!(damaged.validate().is_err());
        let mut damaged = model;
        damaged.plda_gallery = None;
        assert!(damaged.validate().is_err());
    }

    #[test]
    fn the_cohort_index_scores_bit_for_bit_like_one_gallery_at_a_time() {
        let pop = build_population_with_cohort(&users(14), 10).unwrap();
        let c = &pop.constants;
        let combiner = &pop.combiners[2];
        let mut galleries: Vec<Gallery> = (0..pop.cohort.len())
            .map(|k| pop.cohort_gallery(k, 5))
            .collect();
        // Counts outside the pair table (n > 64), and a gallery with nothing.
        let long: Vec<Gallery> = (0..30)
            .map(|s| Gallery::window(&window(3, 100 + s)))
            .collect();
        galleries.push(Gallery::pool(&long.iter().collect::<Vec<_>>(), c));
        assert!(galleries
            .last()
            .unwrap()
            .entries
            .iter()
            .any(|e| e.1.n > 64.0));
        galleries.push(Gallery {
            entries: Vec::new(),
            rhythm: [0.0; RHYTHM],
        });
        // The cohort holds means at the stored (`f32`) precision.
        for g in &mut galleries {
            for e in &mut g.entries {
                e.1.mean = e.1.mean as f32 as f64;
                e.1.mu = e.1.mu as f32 as f64;
            }
        }
        let cohort = Cohort::from_galleries(&galleries).unwrap();
        let tables = CohortTables::new(c, &cohort);
        assert_eq!(cohort.len(), galleries.len());
        let short: Vec<Gallery> = (0..4).map(|s| Gallery::window(&window(600, s))).collect();
        let queries = [
            Gallery::window(&window(600, 11)),
            Gallery::window(&window(2, 12)),
            // Query counts above the table (n > 8).
            Gallery::pool(&short.iter().collect::<Vec<_>>(), c),
            Gallery::window(&[]),
        ];
        assert!(queries[2].entries.iter().any(|e| e.1.n > 8.0));
        for q in &queries {
            let one_by_one: Vec<f64> = galleries
                .iter()
                .map(|g| combiner.raw(&features(c, q, g).0))
                .collect();
            assert_eq!(cohort.raw_scores(&tables, combiner, q), one_by_one);
        }
        // A profile of format 2 stored the cohort as galleries: it reads as the same model
        // and scores the same.
        let me: Vec<Vec<Keystroke>> = (0..15).map(|s| window(500, s)).collect();
        let model = FreeModel::train(&me[..5], Some(&pop)).unwrap();
        let mut json = serde_json::to_value(&model).unwrap();
        let stored: FreeModel = serde_json::from_value(json.clone()).unwrap();
        let old_layout: Vec<Gallery> = (0..pop.cohort.len())
            .map(|k| pop.cohort_gallery(k, model.combiner.gallery))
            .collect();
        json["snorm"]["cohort"] = crate::pack::pack_galleries(&old_layout).into();
        let format2: FreeModel = serde_json::from_value(json).unwrap();
        assert_eq!(format2, stored);
        for w in [&me[12], &window(600, 11)] {
            assert_eq!(format2.score(w), stored.score(w));
        }
        // What the stored layout cannot hold is refused.
        let mut fractional = galleries.clone();
        fractional[0].entries[0].1.n = 2.5;
        assert!(Cohort::from_galleries(&fractional)
            .unwrap_err()
            .contains("whole number"));
        let mut disagreeing = galleries.clone();
        let id = disagreeing[0].entries[0].0;
        let other = disagreeing[1..]
            .iter_mut()
            .find_map(|g| g.entries.iter_mut().find(|e| e.0 == id))
            .expect("a shared id");
        other.1.mu += 0.5;
        assert!(Cohort::from_galleries(&disagreeing)
            .unwrap_err()
            .contains("population mean"));
    }

    #[test]
    fn the_same_population_is_learned_to_the_same_bits() {
        // Hash maps iterate in a different order in every process (and for every map):
        // nothing learned may depend on that order.
        let u = users(8);
        let a = serde_json::to_string(&constants(&u, &[])).unwrap();
        for _ in 0..4 {
            assert_eq!(serde_json::to_string(&constants(&u, &[])).unwrap(), a);
        }
        let u = users(14);
        let first = serde_json::to_string(&build_population_with_cohort(&u, 10).unwrap());
        let second = serde_json::to_string(&build_population_with_cohort(&u, 10).unwrap());
        assert!(first.unwrap() == second.unwrap(), "two builds differ");
    }

    #[test]
    fn too_small_populations_and_enrolments_are_errors() {
        assert!(build_population(&users(2)).is_err());
        let one = [window(1, 1)[..1].to_vec()];
        assert!(FreeModel::train(&one, None).is_err());
    }
}
