//! An ensemble laid out for scoring: every tree as a complete binary tree of one depth,
//! stored level by level in flat arrays.
//!
//! The node-list walk of [`Booster::predict`] branches on every split, and with
//! hundreds of small trees per scored row the branch predictor misses about half of
//! them. In the complete layout the walk is `i = 2i + 1 + (x[f] > t)`, a fixed number of
//! steps with no data-dependent branch, so the processor overlaps the walks of
//! consecutive trees. A leaf that ends a path early is copied into every position below
//! it (under a split that cannot matter: both sides hold the same value), so the result
//! is the same number, bit for bit, as the node walk's: the trees are summed in the same
//! order, and every comparison is made on the same values.

use crate::{Booster, LEAF};

/// Deeper ensembles are not compiled (`2^depth` leaves per tree); the node walk stays.
pub const MAX_COMPILED_DEPTH: u32 = 10;

/// A [`Booster`] in complete-tree layout; see the module docs. Built by
/// [`Booster::compile`], scored by [`CompiledBooster::predict`].
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledBooster {
    depth: u32,
    trees: usize,
    /// Per tree, `2^depth − 1` split features, level by level.
    feature: Vec<u32>,
    /// The matching thresholds (the stored f32, widened exactly).
    threshold: Vec<f64>,
    /// Per tree, `2^depth` leaf values, left to right.
    leaf: Vec<f64>,
}

impl Booster {
    /// The ensemble in complete-tree layout, or `None` when it is malformed (see
    /// [`Booster::validate`]), has a cycle, or is deeper than [`MAX_COMPILED_DEPTH`]:
    /// callers then keep [`Booster::predict`].
    pub fn compile(&self) -> Option<CompiledBooster> {
        self.validate().ok()?;
        let mut depth = 0;
        for t in &self.trees {
            depth = depth.max(tree_depth(&t.nodes, 0, 0)?);
        }
        let internal = (1usize << depth) - 1;
        let mut c = CompiledBooster {
            depth,
            trees: self.trees.len(),
            feature: vec![0; internal * self.trees.len()],
            threshold: vec![f64::INFINITY; internal * self.trees.len()],
            leaf: vec![0.0; (internal + 1) * self.trees.len()],
        };
        for (k, t) in self.trees.iter().enumerate() {
            let mut slots = Slots {
                feature: &mut c.feature[k * internal..][..internal],
                threshold: &mut c.threshold[k * internal..][..internal],
                leaf: &mut c.leaf[k * (internal + 1)..][..internal + 1],
            };
            fill(&t.nodes, 0, 0, &mut slots);
        }
        Some(c)
    }
}

/// Levels below `node` (0 for a leaf); `None` past [`MAX_COMPILED_DEPTH`], which also
/// ends a cycle.
fn tree_depth(nodes: &[crate::Node], node: usize, level: u32) -> Option<u32> {
    let n = nodes.get(node)?;
    if n.feature == LEAF {
        return Some(0);
    }
    if level >= MAX_COMPILED_DEPTH {
        return None;
    }
    let l = tree_depth(nodes, n.left as usize, level + 1)?;
    let r = tree_depth(nodes, n.right as usize, level + 1)?;
    Some(1 + l.max(r))
}

/// One tree's share of the flat arrays.
struct Slots<'a> {
    feature: &'a mut [u32],
    threshold: &'a mut [f64],
    leaf: &'a mut [f64],
}

/// Writes the subtree of `node` at complete-tree position `pos`.
fn fill(nodes: &[crate::Node], node: usize, pos: usize, s: &mut Slots) {
    let internal = s.feature.len();
    let n = &nodes[node];
    if pos >= internal {
        // `tree_depth` guarantees a leaf here.
        s.leaf[pos - internal] = n.value as f64;
        return;
    }
    let (left, right) = if n.feature == LEAF {
        // An early leaf: the default split (feature 0, threshold +∞) leads to two copies.
        (node, node)
    } else {
        s.feature[pos] = n.feature as u32;
        s.threshold[pos] = n.threshold as f64;
        (n.left as usize, n.right as usize)
    };
    fill(nodes, left, 2 * pos + 1, s);
    fill(nodes, right, 2 * pos + 2, s);
}

impl CompiledBooster {
    /// Raw log-odds, the same value as [`Booster::predict`] on the ensemble it came from
    /// (a feature beyond `x` reads as 0, as there).
    pub fn predict(&self, x: &[f64]) -> f64 {
        let internal = (1usize << self.depth) - 1;
        let mut sum = 0.0;
        for k in 0..self.trees {
            let feature = &self.feature[k * internal..][..internal];
            let threshold = &self.threshold[k * internal..][..internal];
            let mut i = 0usize;
            for _ in 0..self.depth {
                let v = x.get(feature[i] as usize).copied().unwrap_or(0.0);
                // Left on `v <= t`, as in the node walk (so a NaN goes right).
                let left = v <= threshold[i];
                i = 2 * i + 2 - usize::from(left);
            }
            sum += self.leaf[k * (internal + 1) + i - internal];
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use crate::{train, BoostParams, Booster, Node, Rng, Tree};

    fn leaf(value: f32) -> Node {
        Node {
            feature: u16::MAX,
            threshold: 0.0,
            left: 0,
            right: 0,
            value,
        }
    }

    fn split(feature: u16, threshold: f32, left: u32, right: u32) -> Node {
        Node {
            feature,
            threshold,
            left,
            right,
            value: 0.0,
        }
    }

    #[test]
    fn same_values_as_the_node_walk() {
        let mut rng = Rng::new(11);
        let rows: Vec<Vec<f64>> = (0..1500)
            .map(|_| (0..4).map(|_| rng.unit()).collect())
            .collect();
        let labels: Vec<bool> = rows.iter().map(|r| r[0] + r[1] * r[2] > 0.7).collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        for depth in [1, 3, 5] {
            let params = BoostParams {
                rounds: 40,
                depth,
                min_leaf: 20,
                ..BoostParams::default()
            };
            let b = train(&refs, &labels, 4, &params);
            let c = b.compile().expect("a trained ensemble compiles");
            let mut probes: Vec<Vec<f64>> = (0..300)
                .map(|_| (0..4).map(|_| rng.unit() * 1.4 - 0.2).collect())
                .collect();
            probes.push(vec![f64::NAN, 0.5, f64::INFINITY, -0.0]);
            probes.push(vec![0.5]); // short: missing features read as 0
            for x in &probes {
                assert_eq!(b.predict(x).to_bits(), c.predict(x).to_bits(), "{x:?}");
            }
        }
    }

    #[test]
    fn early_leaves_and_bad_trees() {
        // A root split whose left side is a leaf and whose right side splits again.
        let b = Booster {
            features: 2,
            trees: vec![
                Tree {
                    nodes: vec![
                        split(0, 0.5, 1, 2),
                        leaf(-1.0),
                        split(1, 0.2, 3, 4),
                        leaf(2.0),
                        leaf(3.0),
                    ],
                },
                Tree {
                    nodes: vec![leaf(0.25)],
                },
            ],
        };
        let c = b.compile().unwrap();
        for (x, want) in [([0.1, 0.9], -0.75), ([0.9, 0.1], 2.25), ([0.9, 0.9], 3.25)] {
            assert_eq!(c.predict(&x), want);
            assert_eq!(b.predict(&x), want);
        }
        // A cycle and an out-of-range child are refused (the node walk stays bounded).
        let cycle = Booster {
            features: 2,
            trees: vec![Tree {
                nodes: vec![split(0, 0.5, 0, 0)],
            }],
        };
        assert!(cycle.compile().is_none());
        let broken = Booster {
            features: 2,
            trees: vec![Tree {
                nodes: vec![split(0, 0.5, 7, 0)],
            }],
        };
        assert!(broken.compile().is_none());
    }
}
