//! The checks on profile and population blobs (foreign, truncated, corrupted) and on
//! adaptation.

use super::checks::Checks;
use super::probe::{describe, is_panic};
use super::*;
use crate::{blob, ErrorKind, Score, LLR_LIMIT};

impl Checks<'_> {
    /// Scores a genuine window against each blob; returns what was accepted (with its
    /// score), what was refused as another kind than invalid profile, and whether any
    /// call panicked.
    pub(super) fn refusals(
        &self,
        call: &str,
        blobs: &[(String, Vec<u8>)],
    ) -> (Vec<String>, Vec<String>, bool) {
        let w = self.genuine(4);
        let mut accepted = Vec::new();
        let mut other_kinds = Vec::new();
        let mut panicked = false;
        for (what, blob) in blobs {
            match self.probe.score(call, blob, &w) {
                Ok(s) => accepted.push(format!("{what} (llr {:.2})", s.llr)),
                Err(e) if e.kind == ErrorKind::PANICKED => panicked = true,
                Err(e) if e.kind != ErrorKind::INVALID_PROFILE => {
                    other_kinds.push(format!("{what}: {}", e.kind.name()))
                }
                Err(_) => {}
            }
        }
        (accepted, other_kinds, panicked)
    }

    pub(super) fn refusal_row(
        &mut self,
        name: &'static str,
        blobs: &[(String, Vec<u8>)],
        accepted_outcome: Outcome,
    ) {
        let (accepted, other_kinds, panicked) = self.refusals(&format!("score({name})"), blobs);
        let names: Vec<&str> = blobs.iter().map(|(n, _)| n.as_str()).collect();
        if panicked {
            self.push(name, Outcome::Fail, "panicked on a bad profile blob")
        } else if !accepted.is_empty() {
            self.push(
                name,
                accepted_outcome,
                format!(
                    "{} of {} accepted as a profile: {}",
                    accepted.len(),
                    blobs.len(),
                    accepted.join(", ")
                ),
            )
        } else if !other_kinds.is_empty() {
            self.push(
                name,
                Outcome::Warn,
                format!(
                    "all refused, but not as 'invalid profile': {}",
                    other_kinds.join(", ")
                ),
            )
        } else {
            self.push(
                name,
                Outcome::Pass,
                format!(
                    "all {} refused as invalid profile: {}",
                    blobs.len(),
                    names.join(", ")
                ),
            )
        }
    }

    pub(super) fn foreign_profile_row(&mut self, profile: &[u8]) {
        let mut noise = Rng::new(99);
        let random: Vec<u8> = (0..256).map(|_| noise.next_u64() as u8).collect();
        let mut blobs = vec![
            ("empty".to_string(), Vec::new()),
            ("64 zero bytes".to_string(), vec![0u8; 64]),
            ("256 random bytes".to_string(), random),
            (
                "another plugin's profile (SDK envelope)".to_string(),
                blob::seal(b"HXOT", 1, profile),
            ),
            (
                "another plugin's JSON profile".to_string(),
                br#"{"version":1,"plugin":"other","mean":[0.1,0.2,0.3],"sd":[1.0,1.0,1.0]}"#
                    .to_vec(),
            ),
            (
                "a keystroke-style profile".to_string(),
                b"HKSP\x01{\"mode\":\"other\",\"model\":{}}".to_vec(),
            ),
        ];
        if !self.population.is_empty() && self.population != profile {
            blobs.push((
                "its own population blob".to_string(),
                self.population.clone(),
            ));
        }
        self.refusal_row("foreign profile", &blobs, Outcome::Fail);
    }

    pub(super) fn truncated_profile_row(&mut self, profile: &[u8]) {
        let n = profile.len();
        let mut lengths = vec![
            1,
            4,
            8,
            n / 4,
            n / 2,
            n.saturating_sub(8),
            n.saturating_sub(1),
        ];
        lengths.retain(|&l| l > 0 && l < n);
        lengths.sort_unstable();
        lengths.dedup();
        let blobs: Vec<(String, Vec<u8>)> = lengths
            .iter()
            .map(|&l| (format!("{l}/{n} bytes"), profile[..l].to_vec()))
            .collect();
        self.refusal_row("truncated profile", &blobs, Outcome::Fail);
    }

    pub(super) fn corrupted_profile_row(&mut self, profile: &[u8]) {
        const NAME: &str = "corrupted profile";
        let n = profile.len();
        let mut header = profile.to_vec();
        header[0] ^= 0xFF;
        let mut smeared = profile.to_vec();
        let run = (n / 4).clamp(1, 16);
        for b in smeared.iter_mut().skip(n / 2).take(run) {
            *b = 0xFF;
        }
        let structural = vec![
            ("first byte flipped".to_string(), header),
            (format!("{run} bytes of 0xFF mid-blob"), smeared),
        ];
        let (accepted, _, panicked) = self.refusals("score(corrupted profile)", &structural);
        if panicked {
            return self.push(NAME, Outcome::Fail, "panicked on a corrupted profile");
        }
        if !accepted.is_empty() {
            return self.push(
                NAME,
                Outcome::Fail,
                format!(
                    "accepted: {} (use a magic, a length and a checksum: habitus_plugin::blob)",
                    accepted.join(", ")
                ),
            );
        }
        let flips: Vec<(String, Vec<u8>)> = (1..=8)
            .map(|i| {
                let at = (n * i / 9).min(n - 1);
                let mut b = profile.to_vec();
                b[at] ^= 1 << (i % 8);
                (format!("bit {} of byte {at}", i % 8), b)
            })
            .collect();
        let (accepted, _, panicked) = self.refusals("score(bit-flipped profile)", &flips);
        if panicked {
            self.push(NAME, Outcome::Fail, "panicked on a bit-flipped profile")
        } else if !accepted.is_empty() {
            self.push(
                NAME,
                Outcome::Warn,
                format!(
                    "header and 0xFF smear refused; {} of 8 single-bit flips went unnoticed (a checksum would catch them: habitus_plugin::blob)",
                    accepted.len()
                ),
            )
        } else {
            self.push(
                NAME,
                Outcome::Pass,
                "header flip, 0xFF smear and 8 single-bit flips all refused",
            )
        }
    }

    pub(super) fn population_blobs_row(&mut self, profile: &[u8]) {
        const NAME: &str = "population blobs";
        let windows = self.enrol_windows(&self.me);
        if self.population.is_empty() {
            let mut noise = Rng::new(7);
            let random: Vec<u8> = (0..256).map(|_| noise.next_u64() as u8).collect();
            let r = self
                .probe
                .enroll("enroll(random population)", &random, &windows);
            return if is_panic(&r) {
                self.push(NAME, Outcome::Fail, "panicked on a random population blob")
            } else {
                self.push(
                    NAME,
                    Outcome::Pass,
                    format!(
                        "no population built; enrolling with 256 random bytes as population: {}",
                        describe(&r, |_| "accepted (population unused)".into())
                    ),
                )
            };
        }
        let p = &self.population;
        let blobs = [
            ("truncated", p[..p.len() / 2].to_vec()),
            ("another plugin's", blob::seal(b"HXOT", 1, p)),
            ("its own profile as population", profile.to_vec()),
        ];
        let mut accepted = Vec::new();
        for (what, blob) in &blobs {
            let r = self.probe.enroll("enroll(bad population)", blob, &windows);
            if is_panic(&r) {
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!("panicked on a {what} population"),
                );
            }
            if r.is_ok() {
                accepted.push(*what);
            }
        }
        if accepted.is_empty() {
            self.push(
                NAME,
                Outcome::Pass,
                "truncated, foreign and profile-as-population blobs refused by enroll",
            )
        } else {
            self.push(
                NAME,
                Outcome::Warn,
                format!("enroll accepted a bad population: {}", accepted.join(", ")),
            )
        }
    }

    pub(super) fn adapt_row(&mut self, profile: &[u8]) {
        const NAME: &str = "adapt";
        let w = self.genuine(5);
        let score = match self.probe.score("score", profile, &w) {
            Ok(s) => s,
            Err(e) => {
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!("cannot score a genuine window: {e}"),
                )
            }
        };
        let adapted = self.probe.adapt("adapt(genuine)", profile, &w, score);
        let impostor = self
            .synthetic
            .window(&self.me.shifted(LARGE_SHIFT), TRIAL_SEED + 5);
        let refused = self.probe.adapt(
            "adapt(impostor)",
            profile,
            &impostor,
            Score::new(-LLR_LIMIT, 1.0, impostor.len() as u32),
        );
        let foreign = self.probe.adapt(
            "adapt(foreign profile)",
            &blob::seal(b"HXOT", 1, profile),
            &w,
            score,
        );
        if is_panic(&adapted) || is_panic(&refused) || is_panic(&foreign) {
            return self.push(NAME, Outcome::Fail, "panicked");
        }
        if foreign.is_ok() {
            return self.push(NAME, Outcome::Fail, "adapted another plugin's profile");
        }
        let mut notes = Vec::new();
        let mut outcome = Outcome::Pass;
        match &adapted {
            Ok(p) => match self.probe.score("score(adapted profile)", p, &w) {
                Ok(s) => notes.push(format!(
                    "genuine window (llr {:.2}) {}; adapted profile scores it {:.2}",
                    score.llr,
                    if p.as_slice() == profile {
                        "not learned"
                    } else {
                        "learned"
                    },
                    s.llr
                )),
                Err(e) => {
                    return self.push(
                        NAME,
                        Outcome::Fail,
                        format!("the adapted profile cannot be scored: {e}"),
                    )
                }
            },
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {
                outcome = Outcome::Warn;
                notes.push("adaptation unsupported (templates never follow drift)".into());
            }
            Err(e) => {
                outcome = Outcome::Warn;
                notes.push(format!("adapting on a genuine window failed: {e}"));
            }
        }
        match &refused {
            Ok(p) if p.as_slice() != profile => {
                outcome = Outcome::Warn;
                notes.push(format!(
                    "learned from a window scored {} (an impostor could train the profile)",
                    -LLR_LIMIT
                ));
            }
            _ => notes.push(format!(
                "window scored {} left the profile unchanged",
                -LLR_LIMIT
            )),
        }
        notes.push("foreign profile refused".into());
        self.push(NAME, outcome, notes.join("; "))
    }
}
