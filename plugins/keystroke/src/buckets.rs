//! Finding an id in a long sorted list of ids without a binary search over all of it.
//!
//! A score looks up each of a window's ≈ 250 ids in tables of tens of thousands (the
//! S-norm cohort's ids, the population's typical timings). A binary search over such a
//! table is about fifteen dependent reads, most of them cache misses: measured, a fifth
//! of a score's time. Ids are keyed hashes, FNV-mixed below a 3-bit type, so within a
//! type their next bits spread them evenly: [`Buckets`] records where each value of the
//! top [`BUCKET_BITS`] bits starts (the type and 9 hash bits: 5 types use 2,560 of the
//! 4,096 buckets), and a lookup searches only its bucket, a handful of ids in one or two
//! cache lines. A crafted table that crowds one bucket only brings back the
//! binary search, inside that bucket; it cannot make a lookup slower than that.

use std::ops::Range;

/// Top bits of an id that choose its bucket (4,096 buckets, 16 kB).
const BUCKET_BITS: u32 = 12;

/// Where each bucket of a sorted id list starts (`2^BUCKET_BITS + 1` positions).
#[derive(Clone, Debug)]
pub struct Buckets(Vec<u32>);

impl Buckets {
    /// Buckets of `ids`, which must ascend (otherwise lookups may miss, never panic).
    pub fn new(ids: impl Fn(usize) -> u64, len: usize) -> Buckets {
        let partition = |bound: u64| {
            // First position whose id is at least `bound` (binary search over `ids`).
            let (mut lo, mut hi) = (0, len);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if ids(mid) < bound {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo as u32
        };
        let mut starts: Vec<u32> = (0..1u64 << BUCKET_BITS)
            .map(|b| partition(b << (64 - BUCKET_BITS)))
            .collect();
        starts.push(len as u32);
        Buckets(starts)
    }

    /// Positions of the list where `id` can be.
    #[inline]
    pub fn range(&self, id: u64) -> Range<usize> {
        let b = (id >> (64 - BUCKET_BITS)) as usize;
        let (start, end) = (self.0[b] as usize, self.0[b + 1] as usize);
        // `max`: a list that does not ascend gives a misordered pair, not a panic.
        start..end.max(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_found_in_its_range_and_absent_ids_are_not() {
        // Ids spread over the whole range, crowded at both ends and in one bucket.
        let mut ids: Vec<u64> = (0..5_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .chain([0, 1, 2, u64::MAX - 1, u64::MAX])
            .chain((0..300).map(|i| (7u64 << 52) + i))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let buckets = Buckets::new(|i| ids[i], ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let r = buckets.range(id);
            assert!(r.contains(&i), "id {id:#x} at {i} outside {r:?}");
            assert_eq!(
                ids[r.clone()].binary_search(&id).map(|k| r.start + k),
                Ok(i)
            );
        }
        for absent in [3u64, (7u64 << 52) + 300, u64::MAX - 2] {
            let r = buckets.range(absent);
            assert!(ids[r].binary_search(&absent).is_err());
        }
        // An empty list, and one that does not ascend: no panic, nothing found.
        assert!(Buckets::new(|_| 0, 0).range(42).is_empty());
        let unsorted = [u64::MAX, 0];
        let b = Buckets::new(|i| unsorted[i], 2);
        let _ = b.range(0);
        let _ = b.range(u64::MAX);
    }
}
