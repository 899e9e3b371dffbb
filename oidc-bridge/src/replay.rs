//! Catching a password entry sent again: genuine typing never repeats itself to the
//! millisecond.
//!
//! The browser supplies the behaviour evidence, so someone who captured a user's key
//! timings (and knows the password) can post them again. [`RecentEntries`] keeps, per
//! user and in memory only, the timings of their last [`RECENT_ENTRIES`] password entries
//! that vouched for them or taught their profile. A new entry with the same key ids in
//! the same order is a replay when its hold times and press-to-press latencies are
//! nearly all the same as one of those:
//!
//! * the mean absolute difference is under [`REPLAY_MEAN_DIFF_US`], or
//! * at least [`REPLAY_CLOSE_SHARE`] of the values are within [`REPLAY_CLOSE_US`] (so that
//!   changing one or two values a lot, which the scorer's per-feature caps absorb, does
//!   not hide a copy).
//!
//! On the CMU data (51 people, 400 entries of one password each, every entry against
//! the same person's 32 before it) no genuine entry meets either rule: the smallest mean
//! difference is 4.3 ms, and the largest share within 1 ms is 0.38 (docs/results.md).
//! Deliberate changes defeat it: a few milliseconds of jitter on every value. The check
//! stops a capture sent back as it was, nothing more.
//!
//! Only entries that vouched (`trusted`) or taught (enrolment) are remembered. An attacker
//! who knows the password cannot push them out with logins of their own typing, which
//! score `uncertain` or `drift` once the user is enrolled. Each is kept compactly: a
//! digest of its key ids and its times in 0.1 ms units (2 bytes each).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use habitus_plugin::{Event, EventKind};

/// Entries kept per user.
pub const RECENT_ENTRIES: usize = 32;
/// Users kept at once (the one seen longest ago goes first).
pub const RECENT_USERS: usize = 10_000;
/// Keystrokes of an entry that is remembered at all (a password is far shorter).
pub const MAX_REMEMBERED_KEYS: usize = 64;
/// Rule 1: mean absolute difference under this (µs).
pub const REPLAY_MEAN_DIFF_US: u32 = 2_000;
/// Rule 2: at least this share of the values within [`REPLAY_CLOSE_US`] of each other.
pub const REPLAY_CLOSE_SHARE: f64 = 0.6;
pub const REPLAY_CLOSE_US: u32 = 1_000;

/// An entry's timing: the key ids (keyed hashes, or caret positions) in press order, a
/// digest of them, and per keystroke its hold time, then the latency from the previous
/// press (none for the first), in 0.1 ms units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryTimings {
    keys: u64,
    times: Vec<u16>,
}

impl EntryTimings {
    /// The timing of a password entry (one stroke per key id, as
    /// [`crate::behavior::password_entry`] makes it). A stroke whose press and release
    /// share a time (coarse timers) counts with a zero hold.
    pub fn of(entry: &[Event]) -> EntryTimings {
        let mut strokes: HashMap<u32, (Option<u64>, Option<u64>)> = HashMap::new();
        for e in entry {
            let s = strokes.entry(e.key).or_default();
            if e.kind == EventKind::KEY_DOWN {
                s.0 = Some(e.t_us);
            } else if e.kind == EventKind::KEY_UP {
                s.1 = Some(e.t_us);
            }
        }
        let mut complete: Vec<(u64, u64, u32)> = strokes
            .into_iter()
            .filter_map(|(k, (d, u))| Some((d?, u?.max(d?), k)))
            .collect();
        complete.sort();
        let tenths = |us: u64| (us / 100).min(u16::MAX as u64) as u16;
        let mut hasher = DefaultHasher::new();
        let mut times = Vec::with_capacity(complete.len() * 2);
        let mut previous: Option<u64> = None;
        for (d, u, k) in complete {
            k.hash(&mut hasher);
            times.push(tenths(u - d));
            if let Some(p) = previous {
                times.push(tenths(d - p));
            }
            previous = Some(d);
        }
        EntryTimings {
            keys: hasher.finish(),
            times,
        }
    }

    /// Whether `self` repeats `earlier` too closely to have been typed again, and the
    /// mean difference (µs) if they are comparable at all (same keys, same order).
    pub fn compare(&self, earlier: &EntryTimings) -> Option<(bool, f64)> {
        if self.keys != earlier.keys
            || self.times.len() != earlier.times.len()
            || self.times.is_empty()
        {
            return None;
        }
        let diffs: Vec<u32> = self
            .times
            .iter()
            .zip(&earlier.times)
            .map(|(a, b)| u32::from(a.abs_diff(*b)) * 100)
            .collect();
        let n = diffs.len() as f64;
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / n;
        let close = diffs.iter().filter(|&&d| d < REPLAY_CLOSE_US).count() as f64 / n;
        let replay = mean < f64::from(REPLAY_MEAN_DIFF_US) || close >= REPLAY_CLOSE_SHARE;
        Some((replay, mean))
    }
}

/// See the module docs.
#[derive(Default)]
pub struct RecentEntries {
    /// user → (last seen, unix seconds; their remembered entries, oldest first)
    users: HashMap<String, (i64, VecDeque<EntryTimings>)>,
}

impl RecentEntries {
    /// The mean difference (µs) to a remembered entry of `user` that `entry` repeats,
    /// if any.
    pub fn repeated(&self, user: &str, entry: &EntryTimings) -> Option<f64> {
        let (_, entries) = self.users.get(user)?;
        entries
            .iter()
            .filter_map(|earlier| entry.compare(earlier))
            .filter(|(replay, _)| *replay)
            .map(|(_, mean)| mean)
            .min_by(f64::total_cmp)
    }

    /// Remembers `entry` of `user` (an entry that vouched or taught), seen at `now`.
    pub fn remember(&mut self, user: &str, entry: EntryTimings, now: i64) {
        if entry.times.len() > 2 * MAX_REMEMBERED_KEYS {
            return;
        }
        if !self.users.contains_key(user) && self.users.len() >= RECENT_USERS {
            let oldest = self
                .users
                .iter()
                .min_by_key(|(_, (seen, _))| *seen)
                .map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                self.users.remove(&oldest);
            }
        }
        let (seen, entries) = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| (now, VecDeque::new()));
        *seen = now;
        if entries.len() >= RECENT_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(times: &[(u64, u64)], keys: &[u32]) -> EntryTimings {
        let mut ev = Vec::new();
        for ((d, u), k) in times.iter().zip(keys) {
            ev.push(Event::key(EventKind::KEY_DOWN, *d, *k));
            ev.push(Event::key(EventKind::KEY_UP, *u, *k));
        }
        // As password_entry orders them: a release before a press at the same time.
        ev.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
        EntryTimings::of(&ev)
    }

    const KEYS: [u32; 4] = [1, 2, 3, 4];
    const TYPED: [(u64, u64); 4] = [
        (0, 90_000),
        (200_000, 280_000),
        (390_000, 500_000),
        (600_000, 690_000),
    ];

    #[test]
    fn timings_are_holds_and_press_latencies() {
        let a = entry(&TYPED, &KEYS);
        assert_eq!(a.times, [900, 800, 2000, 1100, 1900, 900, 2100]);
        // A zero hold (press and release at one time) is kept, not dropped.
        let z = entry(
            &[(0, 0), (200_000, 280_000), (390_000, 500_000)],
            &[1, 2, 3],
        );
        assert_eq!(z.times, [0, 800, 2000, 1100, 1900]);
    }

    #[test]
    fn a_copy_is_a_replay_and_typing_again_is_not() {
        let a = entry(&TYPED, &KEYS);
        // A copy shifted in time.
        let shifted: Vec<(u64, u64)> = TYPED
            .iter()
            .map(|(d, u)| (d + 5_000_000, u + 5_000_000))
            .collect();
        assert_eq!(entry(&shifted, &KEYS).compare(&a), Some((true, 0.0)));
        // Typed again, a few milliseconds apart on every key.
        let again = entry(
            &[
                (0, 96_000),
                (193_000, 281_000),
                (398_000, 503_000),
                (591_000, 688_000),
            ],
            &KEYS,
        );
        let (replay, mean) = again.compare(&a).unwrap();
        assert!(!replay && mean > 5_000.0, "{mean}");
        // Other keys, or another length: not comparable.
        assert_eq!(entry(&TYPED, &[1, 2, 3, 5]).compare(&a), None);
        assert_eq!(entry(&TYPED[..3], &KEYS[..3]).compare(&a), None);
    }

    #[test]
    fn changing_one_value_a_lot_does_not_hide_a_copy() {
        let a = entry(&TYPED, &KEYS);
        // The last hold 60 ms longer: the mean moves past 2 ms, but 6 of 7 values are
        // untouched.
        let mut changed = TYPED;
        changed[3].1 += 60_000;
        let (replay, mean) = entry(&changed, &KEYS).compare(&a).unwrap();
        assert!(mean > f64::from(REPLAY_MEAN_DIFF_US), "{mean}");
        assert!(replay);
        // Every value moved by 1.5 ms, alternately: mean under 2 ms.
        let jittered: Vec<(u64, u64)> = TYPED
            .iter()
            .enumerate()
            .map(|(i, (d, u))| {
                if i % 2 == 0 {
                    (*d, u + 1_500)
                } else {
                    (d + 1_500, *u)
                }
            })
            .collect();
        assert!(entry(&jittered, &KEYS).compare(&a).unwrap().0);
    }

    #[test]
    fn only_the_last_entries_of_a_user_are_kept_and_users_are_bounded() {
        let mut r = RecentEntries::default();
        let a = entry(&TYPED, &KEYS);
        r.remember("bob", a.clone(), 0);
        assert!(r.repeated("bob", &a).is_some());
        assert!(r.repeated("alice", &a).is_none(), "per user");
        // RECENT_ENTRIES later entries push it out.
        for i in 0..RECENT_ENTRIES as u64 {
            let other: Vec<(u64, u64)> = TYPED
                .iter()
                .map(|(d, u)| (d * (2 + i), u * (2 + i) + 10_000))
                .collect();
            r.remember("bob", entry(&other, &KEYS), 1);
        }
        assert!(r.repeated("bob", &a).is_none());
        // A very long entry is not remembered at all.
        let long: Vec<(u64, u64)> = (0..100)
            .map(|i| (i * 200_000, i * 200_000 + 80_000))
            .collect();
        let keys: Vec<u32> = (0..100).collect();
        let long = entry(&long, &keys);
        r.remember("carol", long.clone(), 2);
        assert!(r.repeated("carol", &long).is_none());
    }
}
