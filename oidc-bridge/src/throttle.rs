//! Failed attempts per account, across every login transaction.
//!
//! A login transaction allows a few attempts, but a new one is a single unauthenticated
//! request away. Without a count per account, guessing was limited only by the Argon2
//! cost (or the PAM stack's fail delay). Each attempt is **counted before it is
//! checked**, so posts racing in parallel cannot get past the limit while earlier checks
//! still run. After `max_failures` attempts within `window_s` of the first, nothing is
//! accepted until the window has passed, so a guess during that time tells nothing (the
//! provider still runs the check, to take the same time, and ignores its outcome). A
//! success clears the count. This is RFC 6238 §5.2's throttling, and what
//! `pam_faillock` does for local logins.
//!
//! The caller chooses the keys (see `Provider::account_key`), and counts only names that
//! can sign in where it can tell. Keys are kept as SHA-256 digests. The table is bounded:
//! when it is full, entries whose window has ended go first, then the newest of those
//! that throttle nobody, so that a flood of new keys cannot push out a count begun
//! before it.

use std::collections::HashMap;

/// See the module docs.
#[derive(Debug)]
pub struct FailureThrottle {
    max_failures: u32,
    window_s: i64,
    max_keys: usize,
    /// digest of the key → (start of its window, attempts counted in it)
    counts: HashMap<[u8; 32], (i64, u32)>,
}

impl FailureThrottle {
    pub fn new(max_failures: u32, window_s: i64, max_keys: usize) -> FailureThrottle {
        FailureThrottle {
            max_failures,
            window_s,
            max_keys,
            counts: HashMap::new(),
        }
    }

    fn digest(key: &str) -> [u8; 32] {
        let digest = crate::store::sha256(key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        out
    }

    /// Counts one attempt for `key` at `now`, to be checked next: `Err(seconds)` instead
    /// when `key` may not be tried again for that long (nothing is counted then).
    pub fn attempt(&mut self, key: &str, now: i64) -> Result<(), i64> {
        let digest = Self::digest(key);
        if let Some(&(start, attempts)) = self.counts.get(&digest) {
            let left = start + self.window_s - now;
            if left > 0 && attempts >= self.max_failures {
                return Err(left);
            }
        } else if self.counts.len() >= self.max_keys {
            self.make_room(now);
        }
        let entry = self.counts.entry(digest).or_insert((now, 0));
        if now - entry.0 >= self.window_s {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        Ok(())
    }

    /// The attempt for `key` succeeded: its count starts over.
    pub fn succeeded(&mut self, key: &str) {
        self.counts.remove(&Self::digest(key));
    }

    /// Frees room in a full table: ended windows first; if that is not enough, the
    /// newest tenth of the counts that throttle nobody. A flood of new keys then pushes
    /// out its own keys, never a count begun before it (such as the one of an account
    /// someone is guessing at).
    /// Throttled keys are never dropped: if every key is throttled the table grows past
    /// its bound rather than forget one (that takes `max_failures` attempts on each of
    /// `max_keys` accounts within one window).
    fn make_room(&mut self, now: i64) {
        let window = self.window_s;
        self.counts.retain(|_, (start, _)| now - *start < window);
        if self.counts.len() < self.max_keys {
            return;
        }
        let max = self.max_failures;
        let mut open: Vec<(i64, [u8; 32])> = self
            .counts
            .iter()
            .filter(|(_, (_, n))| *n < max)
            .map(|(k, (start, _))| (*start, *k))
            .collect();
        open.sort_unstable();
        for (_, key) in open.iter().rev().take((self.max_keys / 10).max(1)) {
            self.counts.remove(key);
        }
    }

    /// Keys counted now (for tests and bounds).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_throttled_after_its_attempts_until_the_window_ends() {
        let mut t = FailureThrottle::new(3, 900, 100);
        for i in 0..3 {
            assert_eq!(t.attempt("alice", 1000 + i), Ok(()), "attempt {i}");
        }
        // Three attempts from t = 1000: nothing is checked until 1900.
        assert_eq!(t.attempt("alice", 1003), Err(897));
        assert_eq!(
            t.attempt("alice", 1500),
            Err(400),
            "a refusal is not counted"
        );
        assert_eq!(t.attempt("Alice", 1500), Ok(()), "keys are exact");
        assert_eq!(
            t.attempt("bob", 1500),
            Ok(()),
            "other accounts are untouched"
        );
        // A fresh window.
        assert_eq!(t.attempt("alice", 1900), Ok(()));
        assert_eq!(t.attempt("alice", 1901), Ok(()));
    }

    #[test]
    fn attempts_in_flight_count_before_they_are_checked() {
        // Ten posts arrive together; none has been checked yet: only three may run.
        let mut t = FailureThrottle::new(3, 900, 100);
        let let_through = (0..10).filter(|_| t.attempt("alice", 0).is_ok()).count();
        assert_eq!(let_through, 3);
    }

    #[test]
    fn a_success_clears_the_count() {
        let mut t = FailureThrottle::new(3, 900, 100);
        t.attempt("alice", 0).unwrap();
        t.attempt("alice", 1).unwrap();
        t.succeeded("alice");
        for i in 2..5 {
            assert_eq!(t.attempt("alice", i), Ok(()));
        }
        assert!(t.attempt("alice", 5).is_err());
    }

    #[test]
    fn a_full_table_drops_the_newest_that_throttle_nobody_and_keeps_what_does() {
        let mut t = FailureThrottle::new(3, 900, 20);
        for _ in 0..3 {
            t.attempt("victim", 0).unwrap();
        }
        // Someone is guessing at "target" (one attempt counted), then floods the table
        // with new keys to push that count out.
        t.attempt("target", 5).unwrap();
        for i in 0..100 {
            t.attempt(&format!("flood{i}"), 10 + i).unwrap();
        }
        assert!(t.len() <= 20, "{}", t.len());
        // The count begun before the flood is intact: two more attempts, then paused.
        assert!(t.attempt("target", 200).is_ok());
        assert!(t.attempt("target", 201).is_ok());
        assert!(
            t.attempt("target", 202).is_err(),
            "the flood reset the count"
        );
        // The throttled key survived every eviction.
        assert!(t.attempt("victim", 203).is_err());
        // Keys whose window ended go before anything else.
        let mut t = FailureThrottle::new(2, 900, 2);
        t.attempt("old", 0).unwrap();
        t.attempt("recent", 500).unwrap();
        t.attempt("recent", 500).unwrap();
        t.attempt("new", 1000).unwrap();
        assert!(t.attempt("recent", 1001).is_err(), "recent was dropped");
        // Every key throttled: the table grows rather than forget one.
        let mut t = FailureThrottle::new(1, 900, 2);
        for name in ["a", "b", "c"] {
            t.attempt(name, 0).unwrap();
        }
        assert_eq!(t.len(), 3);
        assert!(t.attempt("a", 1).is_err() && t.attempt("b", 1).is_err());
    }
}
