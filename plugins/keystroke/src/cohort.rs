//! The S-norm cohort, stored and scored as an inverted index: comparing a window with all
//! cohort galleries costs what they share with it, not what they hold.
//!
//! S-norm's t-statistics compare every scored window with each of up to
//! [`COHORT`](crate::free::COHORT) cohort galleries. One gallery at a time (a merge of the
//! window's ids with the gallery's) a score walks every entry of every gallery, about
//! 1,000 each, although a 50-key window shares only a few dozen ids with any of them; at
//! 100 galleries that walk, plus a logarithm and a square root per shared id, was most of
//! a score's time. [`Cohort`] maps each id to the galleries' entries for it, and
//! [`CohortTables`] holds what can be computed once (each entry's posterior mean, and the
//! count-only [`PairConstants`] for the small counts that occur), so a score looks each
//! window id up once and touches only the shared entries.
//!
//! The same layout is what a profile stores ([`crate::pack::cohort`]): an id and its
//! population mean once, then per gallery holding it only the gallery number, count and
//! mean. That is 8 bytes per entry instead of 20, and the profile size matters on every
//! call: the plugin recognises a cached decoded profile by comparing the whole blob.
//!
//! The scores are bit-identical with the gallery-by-gallery comparison ([`crate::free`]'s
//! `features`): each gallery's sums receive the same terms, computed by the same code, in
//! the same order (the window's ids, ascending). A test checks it.

use crate::buckets::Buckets;
use crate::free::{
    close_bars, kind_of, posterior_mean, Combiner, Constants, Gallery, PairConstants, Stat, Sums,
    RHYTHM, TYPES,
};

/// Largest query count the pair table covers (a window rarely repeats an id more often).
const TABLE_QUERY_N: usize = 8;
/// Largest gallery count the pair table covers; larger counts are computed.
const TABLE_GALLERY_N: usize = 64;

/// Cohort galleries, inverted: for every id (ascending), the galleries holding it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cohort {
    /// Every id of any gallery, strictly ascending.
    pub(crate) ids: Vec<u64>,
    /// Each id's population mean (the same in every gallery: it comes from the
    /// population), at `f32` precision (what [`crate::pack::cohort`] stores).
    pub(crate) mu: Vec<f64>,
    /// Entries of `ids[i]` are `starts[i]..starts[i + 1]` (`ids.len() + 1` values).
    pub(crate) starts: Vec<u32>,
    /// Per entry: the gallery (strictly ascending within an id), count and mean.
    pub(crate) gallery: Vec<u16>,
    pub(crate) n: Vec<f64>,
    /// Means at `f32` precision (what [`crate::pack::cohort`] stores).
    pub(crate) mean: Vec<f64>,
    /// Each gallery's rhythm vector; its length is the number of galleries.
    pub(crate) rhythms: Vec<[f64; RHYTHM]>,
}

/// `Some(n − 1)` when `n` is a whole number in `1..=max`.
fn table_index(n: f64, max: usize) -> Option<usize> {
    (n >= 1.0 && n <= max as f64 && n.fract() == 0.0).then(|| n as usize - 1)
}

impl Cohort {
    /// Inverts `galleries` (entries sorted by id, as every gallery is). Refuses what the
    /// stored layout cannot hold: more than 65,535 galleries, counts that are not whole
    /// numbers in `1..=65,535`, and an id whose population mean differs between galleries.
    pub fn from_galleries(galleries: &[Gallery]) -> Result<Cohort, String> {
        if galleries.len() > u16::MAX as usize {
            return Err(format!(
                "a cohort of {} galleries is too large",
                galleries.len()
            ));
        }
        let mut all: Vec<(u64, u16, Stat)> = Vec::new();
        for (k, g) in galleries.iter().enumerate() {
            for &(id, s) in &g.entries {
                if !(s.n >= 1.0 && s.n <= u16::MAX as f64 && s.n.fract() == 0.0) {
                    return Err(format!("cohort count {} is not a whole number from 1", s.n));
                }
                all.push((id, k as u16, s));
            }
        }
        // Stable: within an id, entries stay in gallery order.
        all.sort_by_key(|e| e.0);
        let mut cohort = Cohort {
            rhythms: galleries.iter().map(|g| g.rhythm).collect(),
            ..Cohort::default()
        };
        for (i, &(id, k, s)) in all.iter().enumerate() {
            // Means at the precision a profile stores them (f32): a cohort scores the
            // same before and after a round trip through a profile.
            let mu = s.mu as f32 as f64;
            if cohort.ids.last() == Some(&id) {
                if cohort.mu.last() != Some(&mu) {
                    return Err("cohort galleries disagree on an id's population mean".into());
                }
            } else {
                cohort.ids.push(id);
                cohort.mu.push(mu);
                cohort.starts.push(i as u32);
            }
            cohort.gallery.push(k);
            cohort.n.push(s.n);
            cohort.mean.push(s.mean as f32 as f64);
        }
        cohort.starts.push(all.len() as u32);
        Ok(cohort)
    }

    /// Number of galleries.
    pub fn len(&self) -> usize {
        self.rhythms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rhythms.is_empty()
    }

    /// Number of (id, gallery) entries.
    pub fn entries(&self) -> usize {
        self.n.len()
    }

    /// The combiner's raw score of `query` against every gallery, in gallery order.
    /// `tables` must have been built from this cohort.
    pub fn raw_scores(
        &self,
        tables: &CohortTables,
        combiner: &Combiner,
        query: &Gallery,
    ) -> Vec<f64> {
        assert_eq!(
            tables.entries.len(),
            self.entries(),
            "tables of another cohort"
        );
        let c = &tables.constants;
        let mut sums = vec![Sums::default(); self.len()];
        let mut seen = [0usize; TYPES];
        // All lookups first: independent of one another, their cache misses overlap,
        // where interleaved with the sums each waited behind the previous id's entries.
        let shared: Vec<(usize, u64, Stat)> = query
            .entries
            .iter()
            .filter_map(|&(id, q)| {
                seen[kind_of(id)] += 1;
                tables.find(&self.ids, id).map(|at| (at, id, q))
            })
            .collect();
        for (at, id, q) in shared {
            let t = kind_of(id);
            let row = table_index(q.n, TABLE_QUERY_N).map(|r| {
                &tables.pairs[(t * TABLE_QUERY_N + r) * TABLE_GALLERY_N..][..TABLE_GALLERY_N]
            });
            let bar = tables.close_bars[t];
            let mu = self.mu[at];
            let range = self.starts[at] as usize..self.starts[at + 1] as usize;
            for (e, entry) in range.clone().zip(&tables.entries[range]) {
                let pair = match row {
                    Some(row) if entry.column != u16::MAX => row[entry.column as usize],
                    _ => PairConstants::new(c, t, q.n, self.n[e]),
                };
                sums[entry.gallery as usize].add(
                    t,
                    bar,
                    q.mean,
                    entry.mean as f64,
                    mu,
                    entry.posterior,
                    &pair,
                );
            }
        }
        sums.iter()
            .zip(&self.rhythms)
            .map(|(s, rhythm)| combiner.raw(&s.inputs(c, &seen, &query.rhythm, rhythm).0))
            .collect()
    }
}

/// One cohort entry as a score reads it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The gallery's posterior mean of the id.
    posterior: f64,
    /// The gallery's mean (the cohort holds means at `f32` precision).
    mean: f32,
    gallery: u16,
    /// Its column in the pair table (`n − 1`), or `u16::MAX` if not covered.
    column: u16,
}

/// What scoring against a [`Cohort`] computes once: derived, never stored.
#[derive(Clone, Debug)]
pub struct CohortTables {
    /// The constants the galleries are compared under (without the per-id table).
    constants: Constants,
    close_bars: [f64; TYPES],
    /// Per entry, what a score reads of it, in one record (16 bytes instead of 28 in
    /// five arrays: the cohort's entries outgrow the core's cache, and a score streams
    /// through the shared ones).
    entries: Vec<Entry>,
    /// `PairConstants` by type, query count and gallery count (counts from 1).
    pairs: Vec<PairConstants>,
    /// The cohort's ids by their top bits (a binary search over all ≈ 19,000 was a fifth
    /// of a score's time).
    buckets: Buckets,
}

impl CohortTables {
    /// Index of `id` in `ids` (the cohort's, which these tables were built from).
    #[inline]
    fn find(&self, ids: &[u64], id: u64) -> Option<usize> {
        let r = self.buckets.range(id);
        // `get`: tables of another cohort find nothing rather than panic.
        ids.get(r.clone())?
            .binary_search(&id)
            .ok()
            .map(|i| r.start + i)
    }

    pub fn new(constants: &Constants, cohort: &Cohort) -> CohortTables {
        let constants = Constants {
            mu: Vec::new(),
            ..constants.clone()
        };
        let mut entries = Vec::with_capacity(cohort.entries());
        for (i, &id) in cohort.ids.iter().enumerate() {
            let t = kind_of(id);
            for e in cohort.starts[i] as usize..cohort.starts[i + 1] as usize {
                let stat = Stat {
                    n: cohort.n[e],
                    mean: cohort.mean[e],
                    mu: cohort.mu[i],
                };
                entries.push(Entry {
                    posterior: posterior_mean(&constants, t, &stat),
                    mean: cohort.mean[e] as f32,
                    gallery: cohort.gallery[e],
                    column: table_index(cohort.n[e], TABLE_GALLERY_N)
                        .map_or(u16::MAX, |i| i as u16),
                });
            }
        }
        let mut pairs = Vec::with_capacity(TYPES * TABLE_QUERY_N * TABLE_GALLERY_N);
        for t in 0..TYPES {
            for qn in 1..=TABLE_QUERY_N {
                for gn in 1..=TABLE_GALLERY_N {
                    pairs.push(PairConstants::new(&constants, t, qn as f64, gn as f64));
                }
            }
        }
        CohortTables {
            buckets: Buckets::new(|i| cohort.ids[i], cohort.ids.len()),
            close_bars: close_bars(&constants),
            constants,
            entries,
            pairs,
        }
    }
}
