//! Continuous authentication, judged as a stream (Bours 2012; Mondal & Bours 2015).
//!
//! A profile is not tested on isolated samples but on a **stream of actions** (a CMU
//! password repetition, an Aalto sentence, a mouse action, a swipe): every action's
//! calibrated LLR moves the dynamic trust ([`TrustModel`]); when trust falls below the
//! lock-out level the user is locked out (and, for the genuine user, trust is reset as if
//! they had passed the strong factor, and the stream continues).
//!
//! * **ANGA**: average number of genuine actions before a (wrongful) lock-out, pooled
//!   over users: genuine actions / genuine lock-outs (`None` when nobody was ever locked
//!   out: report the number of actions instead).
//! * **ANIA**: average number of impostor actions before the impostor is locked out, over
//!   the impostor streams that were locked out.
//! * **undetected**: the share of impostor streams never locked out.
//! * per-user categories: `+/+` never wrongly locked out and every impostor caught;
//!   `+/-` never wrongly locked out, some impostor not caught; `-/+`; `-/-`.
//!
//! Trust-model parameters are chosen on one half of the users ([`tune`]) and reported on
//! the other ([`two_fold`]), never on the users they are reported for.

use serde::{Deserialize, Serialize};

use crate::trust::{TrustConfig, TrustModel};

/// One user's test streams: the LLR of every action, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserStreams {
    pub user: String,
    /// The user's own held-out actions.
    pub genuine: Vec<f64>,
    /// One stream per impostor typing (pointing, swiping) as this user.
    pub impostors: Vec<Vec<f64>>,
}

/// The four outcomes of a user (Mondal & Bours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categories {
    /// Never wrongly locked out, every impostor caught.
    pub plus_plus: usize,
    /// Never wrongly locked out, some impostor not caught.
    pub plus_minus: usize,
    /// Wrongly locked out at least once, every impostor caught.
    pub minus_plus: usize,
    /// Both.
    pub minus_minus: usize,
}

/// Stream metrics over a set of users with one trust configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamMetrics {
    pub users: usize,
    pub genuine_actions: usize,
    pub genuine_lockouts: usize,
    /// Genuine actions per wrongful lock-out; `None`: no lock-out at all.
    pub anga: Option<f64>,
    /// Share of users never wrongly locked out.
    pub users_never_locked_out: f64,
    pub impostor_streams: usize,
    pub impostor_actions: usize,
    /// Mean impostor actions before lock-out, over the impostor streams locked out.
    pub ania: Option<f64>,
    /// Share of impostor streams never locked out.
    pub undetected: f64,
    pub categories: Categories,
}

/// Runs the genuine stream: lock-outs (trust reset to 100 after each, as after passing
/// the strong factor).
pub fn genuine_lockouts(trust: &TrustConfig, llrs: &[f64]) -> usize {
    let mut model = TrustModel::new(trust.clone());
    let mut lockouts = 0;
    for &s in llrs {
        model.update(s);
        if model.is_locked_out() {
            lockouts += 1;
            model.reset();
        }
    }
    lockouts
}

/// Runs an impostor stream: the number of actions until lock-out (1-based), `None` if
/// the impostor was never locked out.
pub fn impostor_caught_after(trust: &TrustConfig, llrs: &[f64]) -> Option<usize> {
    let mut model = TrustModel::new(trust.clone());
    for (i, &s) in llrs.iter().enumerate() {
        model.update(s);
        if model.is_locked_out() {
            return Some(i + 1);
        }
    }
    None
}

/// The metrics of `users` under `trust`.
pub fn evaluate(users: &[UserStreams], trust: &TrustConfig) -> StreamMetrics {
    let mut m = StreamMetrics {
        users: users.len(),
        genuine_actions: 0,
        genuine_lockouts: 0,
        anga: None,
        users_never_locked_out: 0.0,
        impostor_streams: 0,
        impostor_actions: 0,
        ania: None,
        undetected: 0.0,
        categories: Categories::default(),
    };
    let (mut never, mut caught, mut caught_actions, mut missed) = (0, 0, 0, 0);
    for u in users {
        m.genuine_actions += u.genuine.len();
        let lockouts = genuine_lockouts(trust, &u.genuine);
        m.genuine_lockouts += lockouts;
        let clean = lockouts == 0;
        never += clean as usize;
        let mut all_caught = true;
        for s in &u.impostors {
            m.impostor_streams += 1;
            match impostor_caught_after(trust, s) {
                Some(n) => {
                    caught += 1;
                    caught_actions += n;
                    m.impostor_actions += n;
                }
                None => {
                    missed += 1;
                    all_caught = false;
                    m.impostor_actions += s.len();
                }
            }
        }
        match (clean, all_caught) {
            (true, true) => m.categories.plus_plus += 1,
            (true, false) => m.categories.plus_minus += 1,
            (false, true) => m.categories.minus_plus += 1,
            (false, false) => m.categories.minus_minus += 1,
        }
    }
    if m.genuine_lockouts > 0 {
        m.anga = Some(m.genuine_actions as f64 / m.genuine_lockouts as f64);
    }
    if caught > 0 {
        m.ania = Some(caught_actions as f64 / caught as f64);
    }
    m.users_never_locked_out = never as f64 / users.len().max(1) as f64;
    m.undetected = missed as f64 / (caught + missed).max(1) as f64;
    m
}

/// The trust configurations [`tune`] chooses from: the reward/penalty curve's centre,
/// width, largest reward and largest penalty (lock-out stays at 90, trusted at 95).
pub fn default_grid() -> Vec<TrustConfig> {
    let mut grid = Vec::new();
    for threshold in [-5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0] {
        for width in [0.5, 1.0, 2.0] {
            for max_reward in [0.5, 1.0, 2.0] {
                for max_penalty in [1.0, 2.0, 4.0, 8.0] {
                    grid.push(TrustConfig {
                        threshold,
                        width,
                        max_reward,
                        max_penalty,
                        ..TrustConfig::default()
                    });
                }
            }
        }
    }
    grid
}

/// At least this share of the tuning users must never be wrongly locked out.
pub const MIN_USERS_NEVER_LOCKED_OUT: f64 = 0.95;
/// At most this share of impostor streams may go undetected on the tuning users.
pub const MAX_UNDETECTED: f64 = 0.10;

/// Chooses the trust configuration on `users` (a tuning set). Feasible configurations
/// spare ≥ [`MIN_USERS_NEVER_LOCKED_OUT`] of the users and miss ≤ [`MAX_UNDETECTED`] of
/// the impostors; among them, the fewest wrongful lock-outs (highest ANGA) win, then the
/// smallest ANIA. If none is feasible: the smallest sum of the share of users wrongly
/// locked out and the share of undetected impostors, then the smallest ANIA.
pub fn tune(users: &[UserStreams], grid: &[TrustConfig]) -> TrustConfig {
    let mut best: Option<(bool, f64, f64, &TrustConfig)> = None;
    for c in grid {
        let m = evaluate(users, c);
        let feasible = m.users_never_locked_out >= MIN_USERS_NEVER_LOCKED_OUT
            && m.undetected <= MAX_UNDETECTED;
        // Lower is better for both keys.
        let (k1, k2) = if feasible {
            (m.genuine_lockouts as f64, m.ania.unwrap_or(f64::INFINITY))
        } else {
            // Both error rates weighted equally (as an EER does): a lexicographic order
            // would buy the last wrongly locked-out user with most of the impostors.
            (
                (1.0 - m.users_never_locked_out) + m.undetected,
                m.ania.unwrap_or(f64::INFINITY),
            )
        };
        let better = match &best {
            None => true,
            Some((bf, b1, b2, _)) => {
                (feasible && !bf) || (feasible == *bf && (k1 < *b1 || (k1 == *b1 && k2 < *b2)))
            }
        };
        if better {
            best = Some((feasible, k1, k2, c));
        }
    }
    best.map(|b| b.3.clone()).unwrap_or_default()
}

/// Held-out result of one half.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Trust parameters chosen on the other half.
    pub trust: TrustConfig,
    pub metrics: StreamMetrics,
}

/// Two folds: users split by alternating index; each half is reported with the trust
/// parameters tuned on the other. Also returns the pooled held-out metrics.
pub fn two_fold(users: &[UserStreams], grid: &[TrustConfig]) -> (Vec<Fold>, StreamMetrics) {
    let halves: Vec<Vec<UserStreams>> = (0..2)
        .map(|h| {
            users
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == h)
                .map(|(_, u)| u.clone())
                .collect()
        })
        .collect();
    let mut folds = Vec::new();
    let mut pooled_users: Vec<(UserStreams, TrustConfig)> = Vec::new();
    for h in 0..2 {
        let trust = tune(&halves[1 - h], grid);
        let metrics = evaluate(&halves[h], &trust);
        for u in &halves[h] {
            pooled_users.push((u.clone(), trust.clone()));
        }
        folds.push(Fold { trust, metrics });
    }
    (folds, pool(&pooled_users))
}

/// Metrics over users each run with their own fold's configuration.
fn pool(users: &[(UserStreams, TrustConfig)]) -> StreamMetrics {
    let parts: Vec<StreamMetrics> = users
        .iter()
        .map(|(u, c)| evaluate(std::slice::from_ref(u), c))
        .collect();
    let sum = |f: &dyn Fn(&StreamMetrics) -> usize| parts.iter().map(f).sum::<usize>();
    let genuine_actions = sum(&|m| m.genuine_actions);
    let genuine_lockouts = sum(&|m| m.genuine_lockouts);
    let impostor_streams = sum(&|m| m.impostor_streams);
    let undetected_streams: f64 = parts
        .iter()
        .map(|m| m.undetected * m.impostor_streams as f64)
        .sum();
    let caught_streams = impostor_streams as f64 - undetected_streams;
    let caught_actions: f64 = parts
        .iter()
        .filter_map(|m| {
            m.ania
                .map(|a| a * (m.impostor_streams as f64 * (1.0 - m.undetected)))
        })
        .sum();
    let mut categories = Categories::default();
    for m in &parts {
        categories.plus_plus += m.categories.plus_plus;
        categories.plus_minus += m.categories.plus_minus;
        categories.minus_plus += m.categories.minus_plus;
        categories.minus_minus += m.categories.minus_minus;
    }
    StreamMetrics {
        users: parts.len(),
        genuine_actions,
        genuine_lockouts,
        anga: (genuine_lockouts > 0).then(|| genuine_actions as f64 / genuine_lockouts as f64),
        users_never_locked_out: parts.iter().filter(|m| m.genuine_lockouts == 0).count() as f64
            / parts.len().max(1) as f64,
        impostor_streams,
        impostor_actions: sum(&|m| m.impostor_actions),
        ania: (caught_streams > 0.5).then(|| caught_actions / caught_streams),
        undetected: undetected_streams / impostor_streams.max(1) as f64,
        categories,
    }
}

/// One point of [`optimistic_bound`]: the grid configuration that misses the fewest
/// impostors while locking genuine users out at most `max_lockouts` times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundPoint {
    pub max_lockouts: usize,
    pub trust: TrustConfig,
    pub metrics: StreamMetrics,
}

/// What the trust model could reach *at best* with these scores: the grid searched on
/// the reported users themselves (a bound, never a result — tuning on the users one
/// reports is what [`two_fold`] exists to avoid). Returns the frontier between wrongful
/// lock-outs and undetected impostors: for each number of lock-outs that lowers the
/// undetected share further, the configuration doing so (ties: fewer users locked out,
/// then the smaller ANIA), up to `points` points; plus the configuration missing the
/// fewest impostors among those sparing at least [`MIN_USERS_NEVER_LOCKED_OUT`] of the
/// users (`None` when no configuration does).
///
/// If even this bound misses a goal, no choice of trust parameters will meet it: the
/// per-action scores have to improve.
pub fn optimistic_bound(
    users: &[UserStreams],
    grid: &[TrustConfig],
    points: usize,
) -> (Vec<BoundPoint>, Option<BoundPoint>) {
    let mut all: Vec<(TrustConfig, StreamMetrics)> = grid
        .iter()
        .map(|c| (c.clone(), evaluate(users, c)))
        .collect();
    let order = |a: &StreamMetrics, b: &StreamMetrics| {
        a.undetected
            .total_cmp(&b.undetected)
            .then(
                b.users_never_locked_out
                    .total_cmp(&a.users_never_locked_out),
            )
            .then(
                a.ania
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&b.ania.unwrap_or(f64::INFINITY)),
            )
    };
    all.sort_by(|a, b| {
        a.1.genuine_lockouts
            .cmp(&b.1.genuine_lockouts)
            .then(order(&a.1, &b.1))
    });
    let mut frontier: Vec<BoundPoint> = Vec::new();
    for (trust, metrics) in &all {
        if frontier.len() == points {
            break;
        }
        let improves = match frontier.last() {
            None => true,
            Some(p) => metrics.undetected < p.metrics.undetected,
        };
        if improves {
            frontier.push(BoundPoint {
                max_lockouts: metrics.genuine_lockouts,
                trust: trust.clone(),
                metrics: metrics.clone(),
            });
        }
    }
    let sparing = all
        .iter()
        .filter(|(_, m)| m.users_never_locked_out >= MIN_USERS_NEVER_LOCKED_OUT)
        .min_by(|a, b| order(&a.1, &b.1))
        .map(|(trust, metrics)| BoundPoint {
            max_lockouts: metrics.genuine_lockouts,
            trust: trust.clone(),
            metrics: metrics.clone(),
        });
    (frontier, sparing)
}

/// Interleaves two modalities' action streams into one (chimeric users: one person's
/// typing paired with another data set's person's pointing), alternating `a` and `b`
/// actions in proportion to their lengths, so that fusion sees both throughout.
pub fn interleave(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (na, nb) = (a.len(), b.len());
    let mut out = Vec::with_capacity(na + nb);
    let (mut i, mut j) = (0, 0);
    while i < na || j < nb {
        // Take from whichever stream is behind its share of the merged length.
        let take_a = j >= nb || (i < na && (i * nb.max(1)) <= (j * na.max(1)));
        if take_a {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// Chimeric multimodal users (no data set holds one person's typing *and* pointing):
/// chimera `i` is keystroke user `i` paired with a pointing account, genuine streams
/// interleaved, impostor stream `j` = keystroke impostor stream `j` interleaved with the
/// account's impostor stream `j` (cycling through the shorter list).
///
/// [`two_fold`] splits users by index parity, so chimeras with even `i` only use
/// accounts with even index and odd ones odd accounts: the two halves never share a
/// person's pointing data, and trust tuned on one half has not seen the other's. An
/// account is reused by several chimeras of its half (there are far fewer pointing
/// accounts than typists); their keystroke parts differ.
pub fn chimeric(keystroke: &[UserStreams], pointing: &[UserStreams]) -> Vec<UserStreams> {
    let halves: [Vec<&UserStreams>; 2] = [0, 1].map(|h| {
        pointing
            .iter()
            .enumerate()
            .filter(|(a, _)| a % 2 == h)
            .map(|(_, p)| p)
            .collect()
    });
    keystroke
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let half = &halves[i % 2];
            let p = half.get((i / 2) % half.len().max(1))?;
            let impostors = if k.impostors.is_empty() || p.impostors.is_empty() {
                Vec::new()
            } else {
                let n = k.impostors.len().max(p.impostors.len());
                (0..n)
                    .map(|j| {
                        interleave(
                            &k.impostors[j % k.impostors.len()],
                            &p.impostors[j % p.impostors.len()],
                        )
                    })
                    .collect()
            };
            Some(UserStreams {
                user: format!("{}+{}", k.user, p.user),
                genuine: interleave(&k.genuine, &p.genuine),
                impostors,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearly_genuine_is_never_locked_out_and_clear_impostors_are_caught() {
        let t = TrustConfig::default();
        assert_eq!(genuine_lockouts(&t, &[3.0; 500]), 0);
        // Each -10 costs ≈ max_penalty (4): below 90 after 3 actions.
        assert_eq!(impostor_caught_after(&t, &[-10.0; 20]), Some(3));
        assert_eq!(impostor_caught_after(&t, &[5.0; 20]), None);
        // A genuine stream with bursts of bad actions is locked out, reset, continues.
        let mut g = vec![2.0; 30];
        g.extend([-10.0; 3]);
        g.extend([2.0; 30]);
        g.extend([-10.0; 3]);
        assert_eq!(genuine_lockouts(&t, &g), 2);
    }

    #[test]
    fn metrics_and_categories() {
        let users = vec![
            UserStreams {
                user: "a".into(),
                genuine: vec![2.0; 100],
                impostors: vec![vec![-10.0; 10], vec![-10.0; 10]],
            },
            UserStreams {
                user: "b".into(),
                genuine: [vec![-10.0; 3], vec![2.0; 97]].concat(),
                impostors: vec![vec![3.0; 10]],
            },
        ];
        let m = evaluate(&users, &TrustConfig::default());
        assert_eq!((m.genuine_actions, m.genuine_lockouts), (200, 1));
        assert_eq!(m.anga, Some(200.0));
        assert_eq!(m.users_never_locked_out, 0.5);
        assert_eq!(m.impostor_streams, 3);
        assert_eq!(m.ania, Some(3.0));
        assert!((m.undetected - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.categories.plus_plus, 1);
        assert_eq!(m.categories.minus_minus, 1);
    }

    #[test]
    fn tuning_prefers_configurations_that_spare_genuine_users() {
        // Genuine users hover slightly below zero; impostors well below. A threshold at
        // 0 locks genuine users out; the tuner must move it down.
        let users: Vec<UserStreams> = (0..20)
            .map(|i| UserStreams {
                user: format!("u{i}"),
                genuine: vec![-0.5; 300],
                impostors: vec![vec![-6.0; 30]],
            })
            .collect();
        let t = tune(&users, &default_grid());
        let m = evaluate(&users, &t);
        assert_eq!(m.users_never_locked_out, 1.0, "{t:?}");
        assert_eq!(m.undetected, 0.0, "{t:?}");
        let (folds, pooled) = two_fold(&users, &default_grid());
        assert_eq!(folds.len(), 2);
        assert_eq!(pooled.users, 20);
        assert_eq!(pooled.undetected, 0.0);
    }

    #[test]
    fn the_bound_trades_lockouts_for_detection_and_never_beats_itself() {
        // Two kinds of users: steady ones, and ones with a bad stretch that only a
        // lenient configuration forgives; impostors mildly negative (caught only by a
        // strict configuration).
        let users: Vec<UserStreams> = (0..20)
            .map(|i| UserStreams {
                user: format!("u{i}"),
                genuine: if i % 4 == 0 {
                    [vec![1.0; 50], vec![-1.5; 12], vec![1.0; 50]].concat()
                } else {
                    vec![1.0; 100]
                },
                impostors: vec![vec![-1.0; 8], vec![-3.0; 8]],
            })
            .collect();
        let grid = default_grid();
        let (frontier, sparing) = optimistic_bound(&users, &grid, 8);
        assert!(frontier.len() >= 2, "{frontier:?}");
        // Sorted by lock-outs, each point missing strictly fewer impostors.
        for pair in frontier.windows(2) {
            assert!(pair[0].max_lockouts < pair[1].max_lockouts);
            assert!(pair[0].metrics.undetected > pair[1].metrics.undetected);
        }
        // The first point is the best any configuration does without lock-outs.
        let best_clean = grid
            .iter()
            .map(|c| evaluate(&users, c))
            .filter(|m| m.genuine_lockouts == frontier[0].max_lockouts)
            .map(|m| m.undetected)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(frontier[0].metrics.undetected, best_clean);
        // Held-out tuning can only do as well as the bound, never better.
        let sparing = sparing.expect("some configuration spares 95 % of these users");
        assert!(sparing.metrics.users_never_locked_out >= MIN_USERS_NEVER_LOCKED_OUT);
        let (_, held_out) = two_fold(&users, &grid);
        if held_out.users_never_locked_out >= MIN_USERS_NEVER_LOCKED_OUT {
            assert!(held_out.undetected >= sparing.metrics.undetected);
        }
        // No configuration spares anyone when every genuine action is hopeless.
        let hopeless = vec![UserStreams {
            user: "x".into(),
            genuine: vec![-10.0; 50],
            impostors: vec![vec![-10.0; 5]],
        }];
        assert!(optimistic_bound(&hopeless, &grid, 8).1.is_none());
    }

    #[test]
    fn interleaving_keeps_both_streams_in_order_and_proportion() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [10.0, 20.0];
        let m = interleave(&a, &b);
        assert_eq!(m.len(), 6);
        let from_a: Vec<f64> = m.iter().copied().filter(|v| *v < 10.0).collect();
        let from_b: Vec<f64> = m.iter().copied().filter(|v| *v >= 10.0).collect();
        assert_eq!(from_a, a.to_vec());
        assert_eq!(from_b, b.to_vec());
        // Spread out: b's actions are not both at one end.
        let first_b = m.iter().position(|v| *v >= 10.0).unwrap();
        let last_b = m.iter().rposition(|v| *v >= 10.0).unwrap();
        assert!(first_b <= 2 && last_b >= 3, "{m:?}");
        assert_eq!(interleave(&[], &b), b.to_vec());
    }

    #[test]
    fn chimeras_keep_halves_apart() {
        let user = |name: String, g: f64, imps: usize| UserStreams {
            user: name,
            genuine: vec![g; 4],
            impostors: (0..imps).map(|j| vec![-(j as f64) - 1.0; 2]).collect(),
        };
        let keys: Vec<UserStreams> = (0..7).map(|i| user(format!("k{i}"), 1.0, 2)).collect();
        let mice: Vec<UserStreams> = (0..4).map(|a| user(format!("m{a}"), 5.0, 3)).collect();
        let c = chimeric(&keys, &mice);
        assert_eq!(c.len(), 7);
        for (i, u) in c.iter().enumerate() {
            let account: usize = u.user.split("+m").nth(1).unwrap().parse().unwrap();
            assert_eq!(account % 2, i % 2, "{}", u.user);
            assert_eq!(u.genuine.len(), 8);
            assert_eq!(u.genuine.iter().filter(|v| **v == 5.0).count(), 4);
            // max(2, 3) impostor streams, each mixing both modalities.
            assert_eq!(u.impostors.len(), 3);
            assert_eq!(u.impostors[2], interleave(&[-1.0; 2], &[-3.0; 2]));
        }
        // Both accounts of each half are used.
        let used: std::collections::BTreeSet<&str> = c
            .iter()
            .map(|u| u.user.split('+').nth(1).unwrap())
            .collect();
        assert_eq!(used.len(), 4);
        assert!(chimeric(&keys, &[]).is_empty());
    }
}
