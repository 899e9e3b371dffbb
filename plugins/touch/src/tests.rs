//! Plugin-level tests: the whole path on synthetic swipers, and bad input.

use super::*;
use habitus_plugin::ErrorKind;

/// Deterministic pseudo-random numbers in [0, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A synthetic person: where they start, how far and fast they swipe, how much the
/// stroke bows, in which directions.
#[derive(Clone, Copy)]
struct Swiper {
    x: f64,
    y: f64,
    length: f64,
    duration: f64,
    bow: f64,
    pressure: f32,
}

const PPM: f64 = 10.0;

/// `strokes` strokes of `who` (alternating up and down the screen), as raw events.
fn swipes(who: Swiper, strokes: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut events = Vec::new();
    let mut t: u64 = 1_000_000;
    for k in 0..strokes {
        let j = |rng: &mut Rng, s: f64| 1.0 + s * (rng.next() - 0.5);
        let up = if k % 2 == 0 { 1.0 } else { -1.0 };
        let (x0, y0) = (who.x * j(&mut rng, 0.1), who.y * j(&mut rng, 0.1));
        let length = who.length * j(&mut rng, 0.2);
        let duration = who.duration * j(&mut rng, 0.2);
        let points = 8 + (rng.next() * 6.0) as usize;
        for i in 0..points {
            let f = i as f64 / (points - 1) as f64;
            // Screen y grows downwards: swiping up decreases it.
            let x = x0 + who.bow * length * (std::f64::consts::PI * f).sin();
            let y = y0 - up * length * f;
            let kind = if i == 0 {
                EventKind::TOUCH_DOWN
            } else {
                EventKind::TOUCH_MOVE
            };
            let mut e = Event::at(
                kind,
                t + (duration * f * 1e6) as u64,
                (x * PPM) as f32,
                (y * PPM) as f32,
            );
            e.pressure = who.pressure;
            e.area = 0.05;
            events.push(e);
        }
        t += (duration * 1e6) as u64 + 5_000;
        events.push(Event::at(EventKind::TOUCH_UP, t, 0.0, 0.0));
        t += 300_000 + (rng.next() * 400_000.0) as u64;
    }
    events
}

fn people() -> Vec<Swiper> {
    (0..8)
        .map(|i| {
            let i = i as f64;
            Swiper {
                x: 15.0 + 2.5 * i,
                y: 60.0 - 2.0 * i,
                length: 20.0 + 3.0 * (i % 4.0),
                duration: 0.12 + 0.03 * (i % 3.0),
                bow: 0.02 * (i - 4.0),
                pressure: (0.3 + 0.02 * i) as f32,
            }
        })
        .collect()
}

fn windows(events: Vec<Event>, per_window: usize) -> Vec<RVec<Event>> {
    // Cut at stroke boundaries: after every `per_window`-th TouchUp.
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut ups = 0;
    for e in events {
        current.push(e);
        if e.kind == EventKind::TOUCH_UP {
            ups += 1;
            if ups % per_window == 0 {
                out.push(RVec::from(std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        out.push(RVec::from(current));
    }
    out
}

/// 60 strokes of each of `who`, in windows of 11: a population's input.
fn population_windows(who: &[Swiper]) -> Vec<RVec<RVec<Event>>> {
    who.iter()
        .enumerate()
        .map(|(i, &w)| windows(swipes(w, 60, 100 + i as u64), 11).into())
        .collect()
}

fn plugin(config: &str) -> Touch {
    Touch::new(config).unwrap()
}

#[test]
fn descriptor_is_valid() {
    let d = Touch::descriptor();
    d.validate().unwrap();
    assert_eq!(d.feature_names.len(), FEATURES);
    assert_eq!(d.modality, Modality::TOUCH);
}

#[test]
fn genuine_scores_above_impostors_with_and_without_population() {
    let p = plugin("");
    let folk = people();
    let population_users = population_windows(&folk[4..]);
    let population = p.build_population(&population_users).unwrap();
    for pop in [population.as_slice(), &[]] {
        let mut wins = 0;
        let mut total = 0;
        for (i, &who) in folk[..4].iter().enumerate() {
            let enrol = windows(swipes(who, 80, i as u64), 11);
            let profile = p.enroll(pop, &enrol).unwrap();
            let genuine = p
                .score(&profile, &swipes(who, 11, 1000 + i as u64))
                .unwrap();
            assert!(genuine.is_valid());
            assert!((genuine.quality - 1.0).abs() < 1e-12);
            for (j, &other) in folk[..4].iter().enumerate() {
                if j == i {
                    continue;
                }
                let impostor = p
                    .score(&profile, &swipes(other, 11, 2000 + j as u64))
                    .unwrap();
                total += 1;
                wins += (genuine.llr > impostor.llr) as usize;
            }
        }
        assert_eq!(wins, total, "population {} bytes", pop.len());
    }
}

#[test]
fn extract_matches_feature_level_scoring() {
    let p = plugin("");
    let who = people()[2];
    let enrol = windows(swipes(who, 60, 7), 11);
    let profile = p.enroll(&[], &enrol).unwrap();
    let window = swipes(who, 5, 8);
    let features = p.extract(&window).unwrap();
    assert_eq!(features.len(), 5 * FEATURES);
    let by_events = p.score(&profile, &window).unwrap();
    let by_features = p.score_features(&profile, &features).unwrap();
    assert!((by_events.llr - by_features.llr).abs() < 1e-9);
    assert_eq!(by_features.events, 5);
    // The profile enrolled from features of the same strokes scores the same.
    let samples: Vec<RVec<f64>> = enrol
        .iter()
        .map(|w| RVec::from(p.extract(w).unwrap()))
        .collect();
    let from_features = p.enroll_features(&[], &samples).unwrap();
    let s = p.score_features(&from_features, &features).unwrap();
    assert!((s.llr - by_features.llr).abs() < 1e-9);
}

#[test]
fn bad_feature_vectors_are_clear_errors() {
    let p = plugin("");
    let who = people()[1];
    let enrol = windows(swipes(who, 40, 3), 11);
    let profile = p.enroll(&[], &enrol).unwrap();
    let good = p.extract(&swipes(who, 1, 4)).unwrap();

    let e = p.score_features(&profile, &good[..30]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_INPUT);
    assert!(p.score_features(&profile, &[]).is_err());
    // A few NaNs (an acceleration of a short stroke) are imputed and scored.
    let mut some_nan = good.clone();
    some_nan[13] = f64::NAN;
    some_nan[14] = f64::NAN;
    some_nan[0] = f64::INFINITY;
    assert!(p.score_features(&profile, &some_nan).unwrap().is_valid());
    // A vector of NaNs is refused, never scored.
    let all_nan = vec![f64::NAN; FEATURES];
    let e = p.score_features(&profile, &all_nan).unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_INPUT);
    let e = p
        .enroll_features(&[], &[RVec::from(good.clone()), RVec::from(all_nan)])
        .unwrap_err();
    assert!(e.message.contains("sample 1"), "{e}");
    let e = p
        .build_population_features(&[RVec::from(vec![RVec::from(vec![1.0; 7])])])
        .unwrap_err();
    assert!(e.message.contains("user 0"), "{e}");
}

#[test]
fn bad_raw_strokes_are_skipped_never_a_panic() {
    let p = plugin("");
    let who = people()[0];
    let profile = p.enroll(&[], &windows(swipes(who, 40, 5), 11)).unwrap();
    // One-point strokes only: a clear not-enough-data error naming what was skipped.
    let one_point = [
        Event::at(EventKind::TOUCH_DOWN, 10, 1.0, 1.0),
        Event::at(EventKind::TOUCH_UP, 20, 1.0, 1.0),
    ];
    let e = p.score(&profile, &one_point).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
    assert!(e.message.contains("1 single-point"), "{e}");
    assert!(p.extract(&one_point).is_err());
    // A window whose clock runs backwards in one stroke still scores the others.
    let mut window = swipes(who, 3, 9);
    let backwards_at = 3;
    window[backwards_at].t_us = 0;
    let s = p.score(&profile, &window).unwrap();
    assert!(s.is_valid());
    assert!(s.quality < 3.0 / DECISION_STROKES);
    // Every timestamp the same: no duration, so no stroke; a clear error, never scored.
    let mut same_time = swipes(who, 2, 10);
    for e in same_time.iter_mut() {
        e.t_us = 5_000_000;
    }
    let e = p.extract(&same_time).unwrap_err();
    assert!(e.message.contains("2 without duration"), "{e}");
    let e = p.score(&profile, &same_time).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
    assert!(e.message.contains("2 without duration"), "{e}");
    // Garbage: unknown kinds, NaN everywhere, huge times; never a panic.
    let mut rng = Rng(42);
    for _ in 0..200 {
        let garbage: Vec<Event> = (0..30)
            .map(|_| {
                let mut e = Event::at(
                    EventKind(6 + (rng.next() * 4.0) as u8),
                    (rng.next() * 1e12) as u64,
                    if rng.next() < 0.1 {
                        f32::NAN
                    } else {
                        (rng.next() * 1000.0) as f32
                    },
                    (rng.next() * 1000.0) as f32,
                );
                e.pointer = (rng.next() * 2.0) as u32;
                e
            })
            .collect();
        if let Ok(s) = p.score(&profile, &garbage) {
            assert!(s.is_valid());
        }
        if let Ok(f) = p.extract(&garbage) {
            assert!(f.iter().all(|v| v.is_finite()), "extract is always finite");
        }
    }
}

#[test]
fn blobs_are_checked() {
    let p = plugin("");
    let folk = people();
    let e = p.enroll(b"HKSN\x01{}", &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_PROFILE);
    let e = p
        .score(b"not a profile", &swipes(folk[0], 2, 1))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_PROFILE);
    // Adapt refuses a foreign profile even when it would not adapt anyway.
    let e = p
        .adapt(
            b"HKSP\x01{}",
            &swipes(folk[0], 2, 1),
            Score::new(-5.0, 1.0, 1),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_PROFILE);
    // A corrupted copy of a profile that is cached decoded is refused, not served.
    let profile = p.enroll(&[], &windows(swipes(folk[0], 40, 1), 11)).unwrap();
    p.score(&profile, &swipes(folk[0], 2, 2)).unwrap();
    let mut flipped = profile.clone();
    flipped[0] ^= 0xff;
    assert!(p.score(&flipped, &swipes(folk[0], 2, 2)).is_err());
    let mut altered = profile.clone();
    let mid = altered.len() / 2;
    altered[mid..mid + 16].fill(0xff);
    assert!(p.score(&altered, &swipes(folk[0], 2, 2)).is_err());
    // Too few strokes of either type.
    let e = p
        .enroll(&[], &windows(swipes(folk[0], 5, 1), 11))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
    assert!(e.message.contains("5 scrolling"), "{e}");
    // A profile enrolled with device features is refused by a plugin without them.
    let with = plugin("device_features = true");
    let profile = with
        .enroll(&[], &windows(swipes(folk[0], 40, 1), 11))
        .unwrap();
    let e = p.score(&profile, &swipes(folk[0], 2, 2)).unwrap_err();
    assert!(e.message.contains("device_features"), "{e}");
    // Too few population users.
    let e = p
        .build_population(&[windows(swipes(folk[0], 40, 1), 11).into()])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
}

#[test]
fn adapt_learns_only_from_clearly_genuine_windows() {
    let p = plugin("adapt_min_llr = 0.5");
    let folk = people();
    let profile = p.enroll(&[], &windows(swipes(folk[3], 40, 1), 11)).unwrap();
    let impostor = swipes(folk[7], 11, 2);
    let s = p.score(&profile, &impostor).unwrap();
    let same = p
        .adapt(&profile, &impostor, Score::new(9.0, 1.0, 10))
        .unwrap();
    assert!(s.llr < 0.5);
    assert_eq!(
        same, profile,
        "an impostor window never adapts, whatever the caller says"
    );
    let genuine = swipes(folk[3], 11, 3);
    let s = p.score(&profile, &genuine).unwrap();
    assert!(s.llr >= 0.5, "{s:?}");
    let adapted = p.adapt(&profile, &genuine, s).unwrap();
    assert_ne!(adapted, profile);
    assert!(p.score(&adapted, &genuine).unwrap().is_valid());
    let nan = Score {
        llr: f64::NAN,
        quality: 1.0,
        events: 1,
    };
    assert_eq!(p.adapt(&profile, &genuine, nan).unwrap(), profile);
}

#[test]
fn trees_are_trained_against_a_population_and_checked_when_decoded() {
    let folk = people();
    let population_users = population_windows(&folk[4..]);
    let enrol = windows(swipes(folk[0], 80, 1), 11);
    let decode = |bytes: &[u8]| -> model::Profile {
        blob::decode(blob::PROFILE_MAGIC, "profile", bytes).unwrap()
    };
    let with = plugin("");
    let population = with.build_population(&population_users).unwrap();
    let profile = with.enroll(&population, &enrol).unwrap();
    let decoded = decode(&profile);
    let scroll = decoded.types[0].as_ref().expect("scrolling modelled");
    let trees = scroll.trees.as_ref().expect("trees with a population");
    assert_eq!(trees.weight, 1.0);
    assert_eq!(trees.booster.trees.len(), model::tree_params().rounds);
    assert!(trees.calibration.1 > 0.0, "{:?}", trees.calibration);
    // No population, or a zero weight: no trees.
    assert!(decode(&with.enroll(&[], &enrol).unwrap()).types[0]
        .as_ref()
        .unwrap()
        .trees
        .is_none());
    let without = plugin("tree_weight = 0.0");
    let plain = without.enroll(&population, &enrol).unwrap();
    assert!(decode(&plain).types[0].as_ref().unwrap().trees.is_none());
    // The trees move single-stroke scores, by at most +1 for the user (TREE_MAX_SUPPORT).
    // (These synthetic swipers are so distinct that most single strokes already reach the
    // ±10 clamp through the k-NN term alone.)
    let mut moved = 0;
    for (j, &who) in folk.iter().enumerate() {
        let probe = swipes(who, 1, 50 + j as u64);
        let a = with.score(&profile, &probe).unwrap().llr;
        let b = without.score(&plain, &probe).unwrap().llr;
        assert!(
            a - b <= model::TREE_MAX_SUPPORT + 1e-9,
            "swiper {j}: {a} vs {b}"
        );
        moved += ((a - b).abs() > 1e-6) as usize;
    }
    assert!(moved >= 1, "the trees never changed a score");
    let probe = swipes(folk[1], 11, 5);
    // A tree pointing outside itself, or a negative weight, is a refused profile.
    let mut bad = decoded.clone();
    let t = bad.types[0].as_mut().unwrap().trees.as_mut().unwrap();
    t.booster.trees[0].nodes[0].left = 1_000_000;
    let bytes = blob::encode(blob::PROFILE_MAGIC, &bad).unwrap();
    let e = with.score(&bytes, &probe).unwrap_err();
    assert_eq!(e.kind, ErrorKind::INVALID_PROFILE);
    let mut bad = decoded.clone();
    bad.types[0]
        .as_mut()
        .unwrap()
        .trees
        .as_mut()
        .unwrap()
        .weight = -1.0;
    let bytes = blob::encode(blob::PROFILE_MAGIC, &bad).unwrap();
    assert!(with.score(&bytes, &probe).is_err());
    // A calibration that would turn the trees' verdict around is refused too.
    let mut bad = decoded;
    bad.types[0]
        .as_mut()
        .unwrap()
        .trees
        .as_mut()
        .unwrap()
        .calibration
        .1 = -1.0;
    let bytes = blob::encode(blob::PROFILE_MAGIC, &bad).unwrap();
    assert!(with.score(&bytes, &probe).is_err());
}
