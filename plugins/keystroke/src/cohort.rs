//! The S-norm cohort as an inverted index, so that comparing a window with all cohort
//! galleries costs what they share with it, not what they hold.
//!
//! S-norm's t-statistics compare every scored window with each of up to
//! [`COHORT`](crate::free::COHORT) cohort galleries. One gallery at a time (a merge of the
//! window's ids with the gallery's) a score walks all entries of every gallery, about
//! 1,000 each, although a 50-key window shares only a few dozen ids with any of them: at
//! 100 galleries that walk, plus a logarithm and a square root per shared id, was most of
//! a score's time. The index maps each id to the cohort entries that hold it, and a table
//! holds the count-only constants ([`PairConstants`]) for the small counts that occur, so
//! a score looks each window id up once and touches only shared entries.
//!
//! The results are bit-identical with the gallery-by-gallery comparison
//! ([`crate::free`]'s `features`): each gallery's sums receive the same terms, computed
//! by the same code, in the same order (the window's ids, ascending). A test checks it.

use crate::free::{
    close_bars, kind_of, posterior_mean, Combiner, Constants, Gallery, PairConstants, Stat, Sums,
    RHYTHM, TYPES,
};

/// Largest query count the table covers (a window rarely repeats an id more often).
const TABLE_QUERY_N: usize = 8;
/// Largest gallery count the table covers; rarer, larger counts are computed.
const TABLE_GALLERY_N: usize = 64;

/// One cohort gallery's entry for an id.
#[derive(Clone, Copy, Debug)]
struct Posting {
    gallery: u32,
    /// Column in the pair table (`n − 1`), or `u16::MAX` when `n` is not covered.
    column: u16,
    stat: Stat,
    /// The gallery's posterior mean for the id.
    posterior: f64,
}

/// The cohort galleries, inverted: id → the galleries' entries for it.
#[derive(Clone, Debug)]
pub struct CohortIndex {
    /// The constants the galleries are compared under (without the per-id table).
    constants: Constants,
    close_bars: [f64; TYPES],
    /// Every id of any gallery, ascending.
    ids: Vec<u64>,
    /// `postings[starts[i]..starts[i + 1]]` are the entries of `ids[i]`.
    starts: Vec<u32>,
    postings: Vec<Posting>,
    /// Each gallery's rhythm vector.
    rhythms: Vec<[f64; RHYTHM]>,
    /// `PairConstants` by type, query count and gallery count (all from 1).
    table: Vec<PairConstants>,
}

/// `Some(n − 1)` when `n` is a whole number in `1..=max`.
fn table_index(n: f64, max: usize) -> Option<usize> {
    (n >= 1.0 && n <= max as f64 && n.fract() == 0.0).then(|| n as usize - 1)
}

impl CohortIndex {
    /// Indexes `galleries` (their entries sorted by id, as every gallery is).
    pub fn new(constants: &Constants, galleries: &[Gallery]) -> CohortIndex {
        let constants = Constants {
            mu: Vec::new(),
            ..constants.clone()
        };
        let mut all: Vec<(u64, Posting)> = galleries
            .iter()
            .enumerate()
            .flat_map(|(k, g)| {
                let c = &constants;
                g.entries.iter().map(move |&(id, stat)| {
                    let column =
                        table_index(stat.n, TABLE_GALLERY_N).map_or(u16::MAX, |i| i as u16);
                    let posting = Posting {
                        gallery: k as u32,
                        column,
                        stat,
                        posterior: posterior_mean(c, kind_of(id), &stat),
                    };
                    (id, posting)
                })
            })
            .collect();
        // Stable: within an id, postings stay in gallery order.
        all.sort_by_key(|e| e.0);
        let mut ids = Vec::new();
        let mut starts = Vec::new();
        for (i, (id, _)) in all.iter().enumerate() {
            if ids.last() != Some(id) {
                ids.push(*id);
                starts.push(i as u32);
            }
        }
        starts.push(all.len() as u32);
        let mut table = Vec::with_capacity(TYPES * TABLE_QUERY_N * TABLE_GALLERY_N);
        for t in 0..TYPES {
            for qn in 1..=TABLE_QUERY_N {
                for gn in 1..=TABLE_GALLERY_N {
                    table.push(PairConstants::new(&constants, t, qn as f64, gn as f64));
                }
            }
        }
        CohortIndex {
            close_bars: close_bars(&constants),
            constants,
            ids,
            starts,
            postings: all.into_iter().map(|e| e.1).collect(),
            rhythms: galleries.iter().map(|g| g.rhythm).collect(),
            table,
        }
    }

    /// Number of galleries indexed.
    pub fn len(&self) -> usize {
        self.rhythms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rhythms.is_empty()
    }

    /// The combiner's raw score of `query` against every gallery, in gallery order.
    pub fn raw_scores(&self, combiner: &Combiner, query: &Gallery) -> Vec<f64> {
        let c = &self.constants;
        let mut sums = vec![Sums::default(); self.len()];
        let mut seen = [0usize; TYPES];
        let mut at = 0;
        for &(id, q) in &query.entries {
            let t = kind_of(id);
            seen[t] += 1;
            // Query ids ascend, so the search starts where the last one ended.
            at += self.ids[at..].partition_point(|&x| x < id);
            if self.ids.get(at) != Some(&id) {
                continue;
            }
            let row = table_index(q.n, TABLE_QUERY_N).map(|r| {
                &self.table[(t * TABLE_QUERY_N + r) * TABLE_GALLERY_N..][..TABLE_GALLERY_N]
            });
            let bar = self.close_bars[t];
            let postings = &self.postings[self.starts[at] as usize..self.starts[at + 1] as usize];
            for p in postings {
                let pair = match row {
                    Some(row) if p.column != u16::MAX => row[p.column as usize],
                    _ => PairConstants::new(c, t, q.n, p.stat.n),
                };
                sums[p.gallery as usize].add(t, bar, q.mean, &p.stat, p.posterior, &pair);
            }
        }
        sums.iter()
            .zip(&self.rhythms)
            .map(|(s, rhythm)| combiner.raw(&s.inputs(c, &seen, &query.rhythm, rhythm).0))
            .collect()
    }
}
