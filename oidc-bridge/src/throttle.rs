//! Failed attempts per account name, across every login transaction.
//!
//! A login transaction allows a few attempts, but a new one is a single unauthenticated
//! request away. Without a count per account, guessing was limited only by the Argon2
//! cost (or the PAM stack's fail delay). Beyond `max_failures` failures within `window_s`
//! of the first one, the account's password or code is **not checked at all** until the
//! window has passed, so a guess during that time tells nothing. This is RFC 6238 §5.2's
//! throttling, and what `pam_faillock` does for local logins.
//!
//! The trade-off: anyone can lock an account out of this provider for a window by
//! failing on purpose. The strong alternative, delays that grow per source address, is
//! meaningless behind the reverse proxy the provider usually runs behind. So the window
//! is short (15 minutes) and a success clears the count. docs/oidc.md says so.
//!
//! Names are counted case-insensitively (`Alice` and `alice` are the same account to
//! many PAM back ends) and kept as SHA-256 digests. Unknown names are counted like
//! known ones: the answer must not tell which accounts exist, and nothing the attacker
//! types is kept. The table is bounded. When it is full, the entries that throttle
//! nobody go first.

use std::collections::HashMap;

/// See the module docs.
#[derive(Debug)]
pub struct FailureThrottle {
    max_failures: u32,
    window_s: i64,
    max_names: usize,
    /// digest of the lower-cased name → (start of its window, failures in it)
    counts: HashMap<[u8; 32], (i64, u32)>,
}

impl FailureThrottle {
    pub fn new(max_failures: u32, window_s: i64, max_names: usize) -> FailureThrottle {
        FailureThrottle {
            max_failures,
            window_s,
            max_names,
            counts: HashMap::new(),
        }
    }

    fn key(name: &str) -> [u8; 32] {
        let digest = crate::store::sha256(name.to_lowercase().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(&digest);
        key
    }

    /// Seconds until `name` may be tried again at `now`, or `None` if it may be now.
    pub fn wait_s(&mut self, name: &str, now: i64) -> Option<i64> {
        let key = Self::key(name);
        let &(start, failures) = self.counts.get(&key)?;
        let left = start + self.window_s - now;
        if left <= 0 {
            self.counts.remove(&key);
            return None;
        }
        (failures >= self.max_failures).then_some(left)
    }

    /// One more failure for `name` at `now`.
    pub fn failed(&mut self, name: &str, now: i64) {
        let key = Self::key(name);
        if !self.counts.contains_key(&key) && self.counts.len() >= self.max_names {
            let window = self.window_s;
            self.counts.retain(|_, (start, _)| now - *start < window);
            if self.counts.len() >= self.max_names {
                let max = self.max_failures;
                self.counts.retain(|_, (_, n)| *n >= max);
            }
            if self.counts.len() >= self.max_names {
                // Every entry throttles someone: keep them, count this one not at all
                // (reaching here takes max_failures × max_names failures in a window).
                return;
            }
        }
        let entry = self.counts.entry(key).or_insert((now, 0));
        if now - entry.0 >= self.window_s {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// `name` passed: its count starts over.
    pub fn succeeded(&mut self, name: &str) {
        self.counts.remove(&Self::key(name));
    }

    /// Names counted now (for tests and bounds).
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
    fn an_account_is_throttled_after_its_failures_until_the_window_ends() {
        let mut t = FailureThrottle::new(3, 900, 100);
        for i in 0..3 {
            assert_eq!(t.wait_s("alice", 1000 + i), None, "failure {i}");
            t.failed("alice", 1000 + i);
        }
        // Three failures from t = 1000: nothing is checked until 1900.
        assert_eq!(t.wait_s("alice", 1003), Some(897));
        assert_eq!(t.wait_s("ALICE", 1500), Some(400), "names are case-blind");
        assert_eq!(t.wait_s("bob", 1500), None, "other accounts are untouched");
        assert_eq!(t.wait_s("alice", 1900), None);
        // A fresh window.
        t.failed("alice", 1901);
        assert_eq!(t.wait_s("alice", 1902), None);
    }

    #[test]
    fn a_success_clears_the_count() {
        let mut t = FailureThrottle::new(3, 900, 100);
        t.failed("alice", 0);
        t.failed("alice", 1);
        t.succeeded("Alice");
        t.failed("alice", 2);
        t.failed("alice", 3);
        assert_eq!(t.wait_s("alice", 4), None);
        t.failed("alice", 4);
        assert!(t.wait_s("alice", 5).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_throttled() {
        let mut t = FailureThrottle::new(2, 900, 10);
        t.failed("victim", 0);
        t.failed("victim", 0);
        // A flood of distinct names within the window.
        for i in 0..1000 {
            t.failed(&format!("name{i}"), 1);
        }
        assert!(t.len() <= 10, "{}", t.len());
        assert!(
            t.wait_s("victim", 2).is_some(),
            "the throttled name was dropped"
        );
        // Names that throttle nobody fill the table only until they are evicted:
        // a throttled flood name stays too.
        t.failed("flood", 3);
        t.failed("flood", 3);
        assert!(t.wait_s("flood", 4).is_some());
        // Expired windows are cleared first.
        t.failed("late", 2000);
        assert!(t.wait_s("victim", 2000).is_none());
    }
}
