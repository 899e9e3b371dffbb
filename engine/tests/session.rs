//! A live session through the loaded keystroke plugin: routing, scoring, fusion, trust.

mod common;

use std::sync::Arc;

use habitus_engine::{PluginLibrary, Session, SessionConfig, State};
use habitus_plugin::{Event, EventKind, RVec};

/// Synthetic typist: `hold_ms` and `gap_ms` are the typist's habits, ±30 % jitter.
fn typing(strokes: usize, hold_ms: f64, gap_ms: f64, seed: u64, start_us: u64) -> Vec<Event> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut events = Vec::new();
    let mut t = start_us;
    for _ in 0..strokes {
        let key = 100 + (next() * 12.0) as u32;
        let hold = (hold_ms * (0.85 + 0.3 * next()) * 1000.0) as u64;
        events.push(Event::key(EventKind::KEY_DOWN, t, key));
        events.push(Event::key(EventKind::KEY_UP, t + hold, key));
        t += (gap_ms * (0.85 + 0.3 * next()) * 1000.0) as u64;
    }
    events.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
    events
}

fn session_for(profile: Option<Vec<u8>>) -> Session {
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = Arc::new(lib.instantiate("mode = \"free\"").unwrap());
    Session::new(&SessionConfig::default(), vec![(plugin, profile)])
}

fn enrolled_profile() -> Vec<u8> {
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = lib.instantiate("mode = \"free\"").unwrap();
    let windows: Vec<RVec<Event>> = (0..10)
        .map(|s| typing(60, 90.0, 180.0, s, 1_000_000).into())
        .collect();
    plugin.enroll(&[], &windows).unwrap()
}

#[test]
fn genuine_stays_trusted_and_impostor_drifts() {
    let profile = enrolled_profile();

    let mut genuine = session_for(Some(profile.clone()));
    assert_eq!(genuine.assess(0).state, State::Learning);
    let stream = typing(400, 90.0, 180.0, 1234, 50_000_000);
    for e in &stream {
        genuine.push(*e);
    }
    let a = genuine.assess(stream.last().unwrap().t_us);
    assert_eq!(a.state, State::Trusted, "{a:?}");
    assert!(a.fused_llr > 0.0);
    assert_eq!(a.events_seen, stream.len() as u64);

    let mut impostor = session_for(Some(profile));
    let stream = typing(400, 160.0, 320.0, 99, 50_000_000); // slower, longer holds
    for e in &stream {
        impostor.push(*e);
    }
    let a = impostor.assess(stream.last().unwrap().t_us);
    assert_eq!(a.state, State::Drift, "{a:?}");
    assert!(a.fused_llr < 0.0);
}

#[test]
fn no_profile_is_unenrolled_and_bad_events_are_counted() {
    let mut s = session_for(None);
    s.push(Event::key(EventKind::KEY_DOWN, 100, 1));
    assert_eq!(s.assess(100).state, State::Unenrolled);

    let mut s = session_for(Some(enrolled_profile()));
    s.push(Event::key(EventKind::KEY_DOWN, 1_000, 1));
    s.push(Event::key(EventKind::KEY_UP, 500, 1)); // back in time
    s.push(Event::at(EventKind::POINTER_MOVE, 2_000, f32::NAN, 1.0)); // NaN
    s.push(Event::key(EventKind(77), 3_000, 1)); // unknown kind
    let a = s.assess(3_000);
    assert_eq!(a.events_rejected, 3);
    assert_eq!(a.events_seen, 1);
    assert_eq!(a.state, State::Learning);
}

#[test]
fn trusted_needs_positive_fused_evidence_not_just_high_trust() {
    let profile = enrolled_profile();
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = Arc::new(lib.instantiate("mode = \"free\"").unwrap());
    let strict = SessionConfig {
        trusted_min_llr: 1e6, // unreachable: trust alone must not make a session Trusted
        ..SessionConfig::default()
    };
    let mut s = Session::new(&strict, vec![(plugin, Some(profile))]);
    let stream = typing(400, 90.0, 180.0, 1234, 50_000_000);
    for e in &stream {
        s.push(*e);
    }
    let a = s.assess(stream.last().unwrap().t_us);
    assert!(a.trust >= 95.0 && a.fused_llr > 0.0, "{a:?}");
    assert_eq!(a.state, State::Uncertain, "{a:?}");
}

/// A session scores through a profile the plugin decoded once; replacing the profile
/// must replace that too, so the next window is judged against the new one.
#[test]
fn a_replaced_profile_is_what_the_next_windows_are_scored_against() {
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = lib.instantiate("mode = \"free\"").unwrap();
    let enrol = |hold, gap| -> Vec<u8> {
        let windows: Vec<RVec<Event>> = (0..10)
            .map(|s| typing(60, hold, gap, s, 1_000_000).into())
            .collect();
        plugin.enroll(&[], &windows).unwrap()
    };
    let (mine, slower) = (enrol(90.0, 180.0), enrol(160.0, 320.0));
    let window = typing(50, 90.0, 180.0, 4321, 50_000_000);
    let direct_mine = plugin.score(&mine, &window).unwrap().llr;
    let direct_slower = plugin.score(&slower, &window).unwrap().llr;
    assert!(
        direct_mine > 0.0 && direct_slower < 0.0,
        "{direct_mine} {direct_slower}"
    );

    let mut session = session_for(Some(mine));
    let last = |session: &mut Session, start: u64| {
        for e in typing(50, 90.0, 180.0, 4321, start) {
            session.push(e);
        }
        session.flush();
        session.assess(start).modalities[0].last_score.unwrap()
    };
    // Bit-identical to the plugin's own `score` with the profile's bytes.
    assert_eq!(
        last(&mut session, 50_000_000).to_bits(),
        direct_mine.to_bits()
    );
    session.set_profile(0, slower);
    assert_eq!(
        last(&mut session, 90_000_000).to_bits(),
        direct_slower.to_bits()
    );
}

/// The person who sits down after a pause (a locked screen, an unattended desk) is not
/// vouched for by what the one who left typed: after `idle_reset_s` without input the
/// fused evidence is gone, whether or not the newcomer's keys have arrived yet.
#[test]
fn evidence_from_before_a_pause_does_not_vouch_for_whoever_comes_back() {
    let profile = enrolled_profile();
    let mut s = session_for(Some(profile.clone()));
    let stream = typing(400, 90.0, 180.0, 1234, 50_000_000);
    for e in &stream {
        s.push(*e);
    }
    let end = stream.last().unwrap().t_us;
    let a = s.assess(end + 59_000_000);
    assert_eq!(a.state, State::Trusted, "59 s later: {a:?}");
    assert_eq!(a.idle_resets, 0);

    // Asked 60 s after the last input, before anything new arrived: not trusted, and
    // the drift-free trust value is kept (waiting must not forgive, nor punish).
    let a = s.assess(end + 60_000_000);
    assert_eq!(a.state, State::Uncertain, "{a:?}");
    assert_eq!(a.fused_llr, 0.0);
    assert!(a.trust >= 95.0, "{a:?}");
    assert_eq!(a.idle_resets, 1);

    // The newcomer types a few keys (less than a window): still nothing vouches.
    let back = end + 90_000_000;
    for e in typing(10, 90.0, 180.0, 77, back) {
        s.push(e);
    }
    assert_eq!(s.assess(back + 2_000_000).state, State::Uncertain);

    // The owner's own typing after the pause earns the trust back window by window.
    for e in typing(300, 90.0, 180.0, 4321, back + 3_000_000) {
        s.push(e);
    }
    let a = s.assess(back + 3_000_000 + 300 * 180_000);
    assert_eq!(a.state, State::Trusted, "{a:?}");

    // A pause that comes with the first event after it (the assessment was not asked
    // during the pause) clears the same way: the old windows no longer count.
    let mut s = session_for(Some(profile.clone()));
    for e in &stream {
        s.push(*e);
    }
    s.push(Event::key(EventKind::KEY_DOWN, end + 61_000_000, 100));
    let a = s.assess(end + 61_000_000);
    assert_eq!(
        (a.state, a.fused_llr, a.idle_resets),
        (State::Uncertain, 0.0, 1)
    );

    // Switched off, the fusion window alone ages the evidence.
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = Arc::new(lib.instantiate("mode = \"free\"").unwrap());
    let never = SessionConfig {
        idle_reset_s: None,
        ..SessionConfig::default()
    };
    let mut s = Session::new(&never, vec![(plugin, Some(profile))]);
    for e in &stream {
        s.push(*e);
    }
    assert_eq!(s.assess(end + 200_000_000).state, State::Trusted);
}

/// Another enrolled user who types like the window lowers the claimed user's score by
/// exactly their LLR; one who does not, or a broken profile, changes nothing; with
/// `other_users = 0` (the default) no one is compared.
#[test]
fn a_window_like_another_enrolled_user_loses_that_evidence() {
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let plugin = Arc::new(lib.instantiate("mode = \"free\"").unwrap());
    let enrol = |hold, gap, seed: u64| -> Vec<u8> {
        let windows: Vec<RVec<Event>> = (0..10)
            .map(|s| typing(60, hold, gap, seed + s, 1_000_000).into())
            .collect();
        plugin.enroll(&[], &windows).unwrap()
    };
    let mine = enrol(90.0, 180.0, 0);
    let twin = enrol(90.0, 180.0, 500);
    let slower = enrol(160.0, 320.0, 900);
    let window = typing(50, 90.0, 180.0, 4321, 50_000_000);
    let direct = |p: &[u8]| plugin.score(p, &window).unwrap().llr;
    let (llr_mine, llr_twin, llr_slower) = (direct(&mine), direct(&twin), direct(&slower));
    assert!(
        llr_mine > 0.0 && llr_twin > 0.0 && llr_slower < 0.0,
        "{llr_mine} {llr_twin} {llr_slower}"
    );
    let scored = |config: &SessionConfig, others: Vec<Vec<u8>>| {
        let mut session = Session::new(config, vec![(plugin.clone(), Some(mine.clone()))]);
        session.set_others(0, others);
        for e in typing(50, 90.0, 180.0, 4321, 50_000_000) {
            session.push(e);
        }
        session.flush();
        session.assess(50_000_000).modalities[0].last_score.unwrap()
    };
    let config = SessionConfig {
        other_users: 8,
        ..SessionConfig::default()
    };
    assert_eq!(scored(&config, vec![]).to_bits(), llr_mine.to_bits());
    assert_eq!(
        scored(&config, vec![slower.clone(), b"not a profile".to_vec()]).to_bits(),
        llr_mine.to_bits()
    );
    let discounted = scored(&config, vec![slower.clone(), twin.clone()]);
    assert_eq!(discounted.to_bits(), (llr_mine - llr_twin).to_bits());
    // A window that looks like someone else does not teach the template either.
    let gate = SessionConfig {
        adapt_min_llr: Some((llr_mine + discounted) / 2.0),
        ..config.clone()
    };
    let candidates = |others: Vec<Vec<u8>>| {
        let mut session = Session::new(&gate, vec![(plugin.clone(), Some(mine.clone()))]);
        session.set_others(0, others);
        for e in typing(50, 90.0, 180.0, 4321, 50_000_000) {
            session.push(e);
        }
        session.flush();
        session.take_adaptation_candidates().len()
    };
    assert_eq!(candidates(vec![]), 1);
    assert_eq!(candidates(vec![twin.clone()]), 0);
    // Off by default.
    let off = SessionConfig::default();
    assert_eq!(off.other_users, 0);
    assert_eq!(scored(&off, vec![twin]).to_bits(), llr_mine.to_bits());
}
