//! Other enrolled users as evidence against the claimed one.
//!
//! A plugin's LLR weighs "this user" against *people in general* (its population).
//! Someone at an unlocked desk is often not a stranger but another person who uses the
//! same machine: a colleague, a family member — and their profiles are enrolled on it.
//! When a window looks like one of them, that is evidence against the claimed user that
//! the population alone cannot give. So a window's LLR for the claimed user is lowered
//! by the strongest positive LLR the same window scores for any other enrolled user:
//!
//! `llr' = llr − max(0, max_j llr_j)`
//!
//! It only ever lowers a score (a window unlike every other user is left as it was), so
//! it can cost a genuine user evidence but never gives an impostor any: when in doubt,
//! the strong factor is asked for. Among the forms tried on the Balabit validation
//! protocol (training files only) — subtracting the others' mean, their maximum, a
//! log-mean-exp, a t-norm, the two largest — the maximum, floored at zero, ranked best
//! or equal to the best and is the simplest to reason about (docs/results.md).
//!
//! A score of another user that is not finite is ignored: a broken profile must not
//! decide anything, and ignoring it leaves the claimed user's score as it would be
//! without that user.

/// The claimed user's LLR after the other enrolled users' LLRs for the same window,
/// kept within the plugins' ±[`LLR_LIMIT`] (no single window may outvote all others,
/// discounted or not). A NaN stays NaN: the host treats it as a broken score.
pub fn discount_for_others(own_llr: f64, others_llr: impl IntoIterator<Item = f64>) -> f64 {
    let strongest = others_llr
        .into_iter()
        .filter(|l| l.is_finite())
        .fold(0.0, f64::max);
    let discounted = own_llr - strongest;
    if discounted.is_nan() {
        discounted
    } else {
        discounted.max(-LLR_LIMIT)
    }
}

use habitus_plugin::LLR_LIMIT;

#[cfg(test)]
mod tests {
    use super::{discount_for_others, LLR_LIMIT};

    #[test]
    fn a_window_like_another_user_loses_that_users_evidence() {
        assert_eq!(discount_for_others(3.0, [-2.0, 1.5, 0.5]), 1.5);
        assert_eq!(discount_for_others(-1.0, [4.0]), -5.0);
    }

    #[test]
    fn a_window_unlike_everyone_else_keeps_its_score() {
        assert_eq!(discount_for_others(2.5, [-3.0, -0.1]), 2.5);
        assert_eq!(discount_for_others(2.5, []), 2.5);
    }

    #[test]
    fn broken_scores_of_others_are_ignored_and_never_raise_a_score() {
        assert_eq!(
            discount_for_others(2.0, [f64::NAN, f64::INFINITY, 1.0]),
            1.0
        );
        assert_eq!(discount_for_others(2.0, [f64::NEG_INFINITY]), 2.0);
        assert!(discount_for_others(f64::NAN, [1.0]).is_nan());
    }

    #[test]
    fn a_discounted_score_stays_within_the_llr_limit() {
        assert_eq!(discount_for_others(-LLR_LIMIT, [LLR_LIMIT]), -LLR_LIMIT);
        assert_eq!(discount_for_others(-2.0, [LLR_LIMIT]), -LLR_LIMIT);
    }
}
