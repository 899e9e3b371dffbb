//! Gradient-boosted decision trees for two classes (genuine vs other people), small
//! enough to read: logistic loss, Newton leaf values, histogram split finding. Shared by
//! the mouse plugin (its whole model) and the touch plugin (trees beside its k-NN
//! density ratio); built with `opt-level = 3` even in debug builds (workspace
//! `Cargo.toml`), since every enrolment trains an ensemble.
//!
//! * Features are cut into at most `bins` quantile bins once per training set; a split
//!   "bin ≤ b" is stored as the raw threshold "x ≤ cut_b", so scoring needs no bins.
//! * The two classes are weighted to equal total mass, so the ensemble's output is a
//!   prior-free log-odds (before whatever calibration the plugin applies).
//! * Every tree sees a random share of the rows (`subsample`) and of the features
//!   (`colsample`); a seeded generator makes training deterministic.
//! * Leaves need `min_leaf` rows on each side; leaf values are `-G / (H + lambda)` times
//!   the learning rate.
//! * Scoring: [`Booster::predict`] walks the stored nodes; [`Booster::compile`] lays the
//!   trees out once as complete binary trees in flat arrays ([`CompiledBooster`]), which
//!   score the same values bit for bit, several times faster. Plugins compile when they
//!   decode a profile.

use serde::{Deserialize, Serialize};

mod compiled;
pub use compiled::{CompiledBooster, MAX_COMPILED_DEPTH};

/// Training parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoostParams {
    pub rounds: usize,
    pub depth: usize,
    pub learning_rate: f64,
    pub min_leaf: usize,
    pub lambda: f64,
    pub subsample: f64,
    pub colsample: f64,
    pub bins: usize,
    pub seed: u64,
}

impl Default for BoostParams {
    fn default() -> Self {
        BoostParams {
            rounds: 300,
            depth: 6,
            learning_rate: 0.07,
            min_leaf: 20,
            lambda: 1.0,
            subsample: 0.7,
            colsample: 0.7,
            bins: 64,
            seed: 0x5eed,
        }
    }
}

/// One node: a split (`feature < u16::MAX`) or a leaf (`value`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "f")]
    pub feature: u16,
    #[serde(rename = "t")]
    pub threshold: f32,
    #[serde(rename = "l")]
    pub left: u32,
    #[serde(rename = "r")]
    pub right: u32,
    #[serde(rename = "v")]
    pub value: f32,
}

const LEAF: u16 = u16::MAX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// The trained ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Booster {
    pub features: usize,
    pub trees: Vec<Tree>,
}

impl Tree {
    fn predict(&self, x: &[f64]) -> f64 {
        let mut i = 0usize;
        // Bounded walk: a corrupted profile with a cycle cannot hang the host.
        for _ in 0..=self.nodes.len() {
            let Some(n) = self.nodes.get(i) else {
                return 0.0;
            };
            if n.feature == LEAF {
                return n.value as f64;
            }
            let v = x.get(n.feature as usize).copied().unwrap_or(0.0);
            i = if v <= n.threshold as f64 {
                n.left
            } else {
                n.right
            } as usize;
        }
        0.0
    }
}

impl Booster {
    /// Raw log-odds (genuine vs other people, classes weighted equally).
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.trees.iter().map(|t| t.predict(x)).sum()
    }

    /// Checks a decoded ensemble: every child index inside its tree, every split on a
    /// known feature, every number finite.
    pub fn validate(&self) -> Result<(), String> {
        for (k, t) in self.trees.iter().enumerate() {
            if t.nodes.is_empty() {
                return Err(format!("tree {k} is empty"));
            }
            for n in &t.nodes {
                let ok = if n.feature == LEAF {
                    n.value.is_finite()
                } else {
                    (n.feature as usize) < self.features
                        && n.threshold.is_finite()
                        && (n.left as usize) < t.nodes.len()
                        && (n.right as usize) < t.nodes.len()
                };
                if !ok {
                    return Err(format!("tree {k} has a malformed node"));
                }
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Quantile cut points of one feature (sorted, distinct, at most `bins - 1`).
fn cuts(values: &mut [f64], bins: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mut out: Vec<f64> = Vec::with_capacity(bins);
    if n == 0 {
        return out;
    }
    for k in 1..bins {
        let c = values[(k * n / bins).min(n - 1)];
        match out.last() {
            Some(&l) if c <= l => {}
            _ => out.push(c),
        }
    }
    // The largest value needs no cut: "x <= max" separates nothing.
    if out.last() == values.last() {
        out.pop();
    }
    out
}

struct Prepared {
    n: usize,
    d: usize,
    /// Column-major bin indices: `bins[j * n + i]`.
    bins: Vec<u8>,
    cuts: Vec<Vec<f64>>,
}

fn prepare(rows: &[&[f64]], bins: usize, d: usize) -> Prepared {
    let n = rows.len();
    let bins = bins.clamp(2, 256);
    let mut all_cuts = Vec::with_capacity(d);
    let mut binned = vec![0u8; d * n];
    // Quantiles from at most 20 000 rows (an even stride): plenty for 64 bins.
    let stride = (n / 20_000).max(1);
    for j in 0..d {
        let mut sample: Vec<f64> = rows.iter().step_by(stride).map(|r| r[j]).collect();
        let c = cuts(&mut sample, bins);
        for (i, r) in rows.iter().enumerate() {
            binned[j * n + i] = c.partition_point(|&cut| cut < r[j]) as u8;
        }
        all_cuts.push(c);
    }
    Prepared {
        n,
        d,
        bins: binned,
        cuts: all_cuts,
    }
}

struct Split {
    gain: f64,
    feature: usize,
    bin: usize,
}

/// Trains the ensemble on `rows` (all of length `d`), `genuine[i]` the class of row i.
pub fn train(rows: &[&[f64]], genuine: &[bool], d: usize, params: &BoostParams) -> Booster {
    let n = rows.len();
    let data = prepare(rows, params.bins, d);
    let n_gen = genuine.iter().filter(|&&g| g).count().max(1) as f64;
    let n_imp = (n as f64 - n_gen).max(1.0);
    let (w_gen, w_imp) = (n as f64 / (2.0 * n_gen), n as f64 / (2.0 * n_imp));
    let weight: Vec<f64> = genuine
        .iter()
        .map(|&g| if g { w_gen } else { w_imp })
        .collect();
    let mut score = vec![0.0f64; n];
    let mut grad = vec![0.0f64; n];
    let mut hess = vec![0.0f64; n];
    let mut rng = Rng::new(params.seed);
    let mut trees = Vec::with_capacity(params.rounds);
    for _ in 0..params.rounds {
        for i in 0..n {
            let p = 1.0 / (1.0 + (-score[i]).exp());
            let y = genuine[i] as u8 as f64;
            grad[i] = weight[i] * (p - y);
            hess[i] = (weight[i] * p * (1.0 - p)).max(1e-12);
        }
        let rows_used: Vec<u32> = (0..n as u32)
            .filter(|_| params.subsample >= 1.0 || rng.unit() < params.subsample)
            .collect();
        let mut cols: Vec<usize> = (0..data.d)
            .filter(|_| params.colsample >= 1.0 || rng.unit() < params.colsample)
            .collect();
        if cols.is_empty() {
            cols.push((rng.next_u64() % data.d.max(1) as u64) as usize);
        }
        let (tree, bin_tree) = grow(&data, &grad, &hess, rows_used, &cols, params);
        for (i, s) in score.iter_mut().enumerate() {
            *s += predict_binned(&bin_tree, &data, i);
        }
        trees.push(tree);
    }
    Booster { features: d, trees }
}

/// A node during training: split on `(feature, bin)` or a leaf value.
#[derive(Clone, Copy)]
struct BinNode {
    feature: usize,
    bin: usize,
    left: usize,
    right: usize,
    value: f64,
    leaf: bool,
}

fn predict_binned(nodes: &[BinNode], data: &Prepared, i: usize) -> f64 {
    let mut k = 0;
    loop {
        let n = &nodes[k];
        if n.leaf {
            return n.value;
        }
        k = if (data.bins[n.feature * data.n + i] as usize) <= n.bin {
            n.left
        } else {
            n.right
        };
    }
}

type Histogram = Vec<(f64, f64, u32)>;

fn histogram(
    data: &Prepared,
    grad: &[f64],
    hess: &[f64],
    rows: &[u32],
    cols: &[usize],
    stride: usize,
) -> Histogram {
    let mut hist = vec![(0.0f64, 0.0f64, 0u32); cols.len() * stride];
    for (c, &j) in cols.iter().enumerate() {
        let col = &data.bins[j * data.n..(j + 1) * data.n];
        let part = &mut hist[c * stride..(c + 1) * stride];
        for &i in rows {
            let e = &mut part[col[i as usize] as usize];
            e.0 += grad[i as usize];
            e.1 += hess[i as usize];
            e.2 += 1;
        }
    }
    hist
}

fn grow(
    data: &Prepared,
    grad: &[f64],
    hess: &[f64],
    rows: Vec<u32>,
    cols: &[usize],
    params: &BoostParams,
) -> (Tree, Vec<BinNode>) {
    let mut nodes: Vec<BinNode> = vec![BinNode {
        feature: 0,
        bin: 0,
        left: 0,
        right: 0,
        value: 0.0,
        leaf: true,
    }];
    let lambda = params.lambda.max(1e-9);
    let stride = params.bins.clamp(2, 256);
    let needs_split =
        |rows: usize, depth: usize| depth < params.depth && rows >= 2 * params.min_leaf.max(1);
    // Histograms (per sampled feature: gradient, hessian and row sums per bin) of the
    // smaller child are built from its rows; the larger child's are the parent's minus
    // the smaller's.
    let root_hist =
        needs_split(rows.len(), 0).then(|| histogram(data, grad, hess, &rows, cols, stride));
    let mut stack = vec![(0usize, rows, 0usize, root_hist)];
    while let Some((k, rows, depth, hist)) = stack.pop() {
        let (g, h) = rows.iter().fold((0.0, 0.0), |(g, h), &i| {
            (g + grad[i as usize], h + hess[i as usize])
        });
        nodes[k].value = -g / (h + lambda) * params.learning_rate;
        let Some(hist) = hist else {
            continue;
        };
        let parent = g * g / (h + lambda);
        let mut best: Option<Split> = None;
        for (c, &j) in cols.iter().enumerate() {
            let nb = data.cuts[j].len() + 1;
            let (mut gl, mut hl, mut cl) = (0.0, 0.0, 0usize);
            for (b, e) in hist[c * stride..c * stride + nb - 1].iter().enumerate() {
                gl += e.0;
                hl += e.1;
                cl += e.2 as usize;
                let cr = rows.len() - cl;
                if cl < params.min_leaf || cr < params.min_leaf {
                    continue;
                }
                let (gr, hr) = (g - gl, h - hl);
                let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                if gain > best.as_ref().map_or(1e-9, |s| s.gain) {
                    best = Some(Split {
                        gain,
                        feature: j,
                        bin: b,
                    });
                }
            }
        }
        let Some(split) = best else {
            continue;
        };
        let col = &data.bins[split.feature * data.n..(split.feature + 1) * data.n];
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = rows
            .iter()
            .partition(|&&i| (col[i as usize] as usize) <= split.bin);
        let (l, r) = (nodes.len(), nodes.len() + 1);
        for _ in 0..2 {
            nodes.push(BinNode {
                feature: 0,
                bin: 0,
                left: 0,
                right: 0,
                value: 0.0,
                leaf: true,
            });
        }
        nodes[k] = BinNode {
            feature: split.feature,
            bin: split.bin,
            left: l,
            right: r,
            value: 0.0,
            leaf: false,
        };
        let (mut left_hist, mut right_hist) = (None, None);
        let (need_l, need_r) = (
            needs_split(left_rows.len(), depth + 1),
            needs_split(right_rows.len(), depth + 1),
        );
        if need_l || need_r {
            let left_smaller = left_rows.len() <= right_rows.len();
            let small_rows = if left_smaller {
                &left_rows
            } else {
                &right_rows
            };
            let small = histogram(data, grad, hess, small_rows, cols, stride);
            let mut large = hist;
            for (a, b) in large.iter_mut().zip(&small) {
                a.0 -= b.0;
                a.1 -= b.1;
                a.2 -= b.2;
            }
            let (lh, rh) = if left_smaller {
                (small, large)
            } else {
                (large, small)
            };
            left_hist = need_l.then_some(lh);
            right_hist = need_r.then_some(rh);
        }
        stack.push((l, left_rows, depth + 1, left_hist));
        stack.push((r, right_rows, depth + 1, right_hist));
    }
    let tree = Tree {
        nodes: nodes
            .iter()
            .map(|n| {
                if n.leaf {
                    Node {
                        feature: LEAF,
                        threshold: 0.0,
                        left: 0,
                        right: 0,
                        value: n.value as f32,
                    }
                } else {
                    Node {
                        feature: n.feature as u16,
                        // f32 rounding must not move a cut across a training value: round
                        // towards +∞ only when that keeps "x ≤ cut" for the cut itself.
                        threshold: threshold_f32(data.cuts[n.feature][n.bin]),
                        left: n.left as u32,
                        right: n.right as u32,
                        value: 0.0,
                    }
                }
            })
            .collect(),
    };
    (tree, nodes)
}

/// The f32 nearest to `cut` that is not below it, so the cut value itself still goes left.
fn threshold_f32(cut: f64) -> f32 {
    let t = cut as f32;
    if (t as f64) < cut {
        f32::from_bits(if t >= 0.0 {
            t.to_bits() + 1
        } else {
            t.to_bits() - 1
        })
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_distinct_quantiles() {
        let mut v: Vec<f64> = (0..100).map(|i| (i % 10) as f64).collect();
        let c = cuts(&mut v, 64);
        assert_eq!(c, (0..9).map(|i| i as f64).collect::<Vec<_>>());
        let mut same = vec![3.0; 50];
        assert!(cuts(&mut same, 16).is_empty());
    }

    #[test]
    fn learns_a_separable_rule_and_predicts_from_raw_values() {
        // Genuine when x0 > 0.3 and x1 < 0.5 (x2 is noise).
        let mut rng = Rng::new(7);
        let rows: Vec<Vec<f64>> = (0..2000)
            .map(|_| vec![rng.unit(), rng.unit(), rng.unit()])
            .collect();
        let labels: Vec<bool> = rows.iter().map(|r| r[0] > 0.3 && r[1] < 0.5).collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        let params = BoostParams {
            rounds: 60,
            depth: 3,
            min_leaf: 5,
            ..BoostParams::default()
        };
        let b = train(&refs, &labels, 3, &params);
        assert!(b.validate().is_ok());
        let correct = rows
            .iter()
            .zip(&labels)
            .filter(|(r, &l)| (b.predict(r) > 0.0) == l)
            .count();
        assert!(correct as f64 / rows.len() as f64 > 0.97, "{correct}");
        assert!(b.predict(&[0.9, 0.1, 0.5]) > 2.0);
        assert!(b.predict(&[0.1, 0.9, 0.5]) < -2.0);
        // Deterministic for a seed.
        assert_eq!(b, train(&refs, &labels, 3, &params));
    }

    #[test]
    fn thresholds_keep_the_cut_on_the_left() {
        for cut in [0.1f64, -0.1, 1e-30, 123_456.789, -7.3e5] {
            let t = threshold_f32(cut);
            assert!(t as f64 >= cut, "{cut} -> {t}");
        }
    }

    #[test]
    fn corrupted_trees_are_refused_and_never_loop() {
        let bad = Booster {
            features: 2,
            trees: vec![Tree {
                nodes: vec![Node {
                    feature: 0,
                    threshold: 0.5,
                    left: 0,
                    right: 0,
                    value: 0.0,
                }],
            }],
        };
        assert!(bad.validate().is_ok(), "a self-loop is in range");
        assert_eq!(bad.predict(&[0.0, 0.0]), 0.0, "but the walk is bounded");
        let worse = Booster {
            features: 2,
            trees: vec![Tree {
                nodes: vec![Node {
                    feature: 5,
                    threshold: 0.5,
                    left: 9,
                    right: 0,
                    value: 0.0,
                }],
            }],
        };
        assert!(worse.validate().is_err());
    }
}
