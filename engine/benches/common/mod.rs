//! Shared by the benches: deterministic synthetic behaviour (typing, pointing, swiping)
//! and the plugin libraries, built next to the bench binary (cargo builds no cdylibs for
//! benches) and loaded through the ABI, the real path.
#![allow(dead_code)] // each bench uses part of it

use std::path::PathBuf;
use std::process::Command;

use habitus_engine::{PluginInstance, PluginLibrary};
use habitus_plugin::{Event, EventKind, RVec};

/// Builds plugin package `package` (e.g. `habitus-touch`) in this profile and loads it.
pub fn plugin_library(package: &str) -> PluginLibrary {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", package]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cannot build the {package} plugin"
    );
    let file = format!("lib{}.so", package.replace('-', "_"));
    PluginLibrary::load(&dir.join(&file)).unwrap_or_else(|e| panic!("{file} loads: {e}"))
}

/// A deterministic uniform draw in [0, 1) per call, from `seed`.
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    }
}

/// Deterministic synthetic typing: `strokes` keystrokes over 30 key ids.
pub fn typing(strokes: usize, seed: u64) -> Vec<Event> {
    typing_at(strokes, seed, 1.0)
}

/// [`typing`] by a person whose holds and intervals are `tempo` times as long (different
/// people, for a population whose members can be told apart).
pub fn typing_at(strokes: usize, seed: u64, tempo: f64) -> Vec<Event> {
    let mut next = uniform(seed);
    let mut events = Vec::with_capacity(2 * strokes);
    let mut t = 1_000_000u64;
    for _ in 0..strokes {
        let key = 1000 + (next() * 30.0) as u32;
        let hold = ((70_000.0 + next() * 50_000.0) * tempo) as u64;
        events.push(Event::key(EventKind::KEY_DOWN, t, key));
        events.push(Event::key(EventKind::KEY_UP, t + hold, key));
        t += ((120_000.0 + next() * 150_000.0) * tempo) as u64;
    }
    events.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
    events
}

/// Deterministic synthetic pointer behaviour: aimed movements with a bell-shaped speed
/// profile sampled every 8 ms, clicks, drags, scrolls and pauses. `speed` scales a
/// person's movement speed (different people, for a population).
pub fn pointer_stream(events: usize, seed: u64, speed: f64) -> Vec<Event> {
    let mut next = uniform(seed);
    let mut out = Vec::with_capacity(events + 64);
    let (mut t, mut x, mut y) = (1_000_000u64, 500.0f64, 400.0f64);
    let button = |kind, t, x: f64, y: f64| Event {
        pointer: 1,
        ..Event::at(kind, t, x as f32, y as f32)
    };
    while out.len() < events {
        let (tx, ty) = (100.0 + next() * 1200.0, 100.0 + next() * 700.0);
        let dist = (tx - x).hypot(ty - y);
        let duration = 0.15 + dist / (1500.0 * speed);
        let steps = ((duration / 0.008) as usize).max(4);
        let bend = (next() - 0.5) * 0.3;
        let (x0, y0) = (x, y);
        for s in 1..=steps {
            let u = s as f64 / steps as f64;
            // minimum-jerk progress along the path, with a slight bow
            let p = u * u * u * (10.0 - 15.0 * u + 6.0 * u * u);
            let off = bend * dist * (std::f64::consts::PI * p).sin();
            let (dx, dy) = ((tx - x0) / dist.max(1.0), (ty - y0) / dist.max(1.0));
            x = x0 + (tx - x0) * p - dy * off;
            y = y0 + (ty - y0) * p + dx * off;
            t += 8_000;
            out.push(Event::at(
                EventKind::POINTER_MOVE,
                t,
                x.round() as f32,
                y.round() as f32,
            ));
        }
        let r = next();
        if r < 0.5 {
            t += 50_000 + (next() * 150_000.0) as u64;
            out.push(button(EventKind::BUTTON_DOWN, t, x, y));
            t += 60_000 + (next() * 80_000.0) as u64;
            out.push(button(EventKind::BUTTON_UP, t, x, y));
        } else if r < 0.65 {
            t += 80_000;
            out.push(button(EventKind::BUTTON_DOWN, t, x, y));
            for _ in 0..20 {
                t += 8_000;
                x += 6.0 * speed;
                out.push(Event::at(EventKind::POINTER_MOVE, t, x as f32, y as f32));
            }
            t += 50_000;
            out.push(button(EventKind::BUTTON_UP, t, x, y));
        } else if r < 0.75 {
            t += 200_000;
            out.push(Event::at(EventKind::WHEEL, t, 0.0, -1.0));
        }
        t += 100_000 + (next() * 1_400_000.0) as u64;
    }
    out.truncate(events);
    out
}

/// Deterministic synthetic swiping: `strokes` scrolls of 12 events (down, 10 moves, up)
/// by one person whose start, length and speed vary a little (`seed`: which person).
pub fn swipes(strokes: usize, person: f64, seed: u64) -> Vec<Event> {
    let mut next = uniform(seed);
    let mut events = Vec::with_capacity(12 * strokes);
    let mut t = 1_000_000u64;
    for k in 0..strokes {
        let up = if k % 2 == 0 { 1.0 } else { -1.0 };
        let (x0, y0) = (150.0 + 20.0 * person + 30.0 * next(), 500.0 + 40.0 * next());
        let length = 200.0 + 20.0 * person + 60.0 * next();
        let duration = 120_000.0 + 40_000.0 * next();
        for i in 0..11 {
            let f = i as f64 / 10.0;
            let kind = if i == 0 {
                EventKind::TOUCH_DOWN
            } else {
                EventKind::TOUCH_MOVE
            };
            let mut e = Event::at(
                kind,
                t + (duration * f) as u64,
                (x0 + 10.0 * person * (std::f64::consts::PI * f).sin()) as f32,
                (y0 - up * length * f) as f32,
            );
            e.pressure = 0.4;
            events.push(e);
        }
        t += duration as u64 + 8_000;
        events.push(Event::at(EventKind::TOUCH_UP, t, 0.0, 0.0));
        t += 400_000 + (next() * 400_000.0) as u64;
    }
    events
}

pub fn stroke_windows(events: &[Event], per_window: usize) -> Vec<RVec<Event>> {
    events
        .chunks(12 * per_window)
        .map(|c| RVec::from(c.to_vec()))
        .collect()
}

/// A free-text keystroke profile enrolled through `plugin` (5 windows of 50 keys) against a
/// population of 150 synthetic typists of 25 tempos (15 windows each): per-gallery-size
/// combiner and S-norm, whose t-statistics compare every window with each of the 100
/// cohort galleries, and the whole-window embedding (the typists differ in tempo, so the
/// embedding has something to learn and its fused calibration is kept). Returns the
/// population and the profile.
pub fn keystroke_cohort(plugin: &PluginInstance) -> (Vec<u8>, Vec<u8>) {
    let users: Vec<RVec<RVec<Event>>> = (0..150u64)
        .map(|u| {
            let tempo = 0.7 + 0.6 * (u % 25) as f64 / 25.0;
            (0..15)
                .map(|s| RVec::from(typing_at(50, 1000 + 100 * u + s, tempo)))
                .collect()
        })
        .collect();
    let population = plugin.build_population(&users).unwrap();
    let enrolment: Vec<RVec<Event>> = (0..5).map(|s| RVec::from(typing(50, s))).collect();
    let profile = plugin.enroll(&population, &enrolment).unwrap();
    (population, profile)
}

/// A mouse profile enrolled through `plugin` against a population of 6 synthetic people
/// (3 sessions of 8,000 events each), from 4 sessions of the user's.
pub fn mouse_profile(plugin: &PluginInstance) -> Vec<u8> {
    let population: Vec<RVec<RVec<Event>>> = (0..6)
        .map(|p| {
            (0..3)
                .map(|w| RVec::from(pointer_stream(8000, 100 * p + w, 0.6 + 0.15 * p as f64)))
                .collect()
        })
        .collect();
    let population = plugin.build_population(&population).unwrap();
    let enrolment: Vec<RVec<Event>> = (0..4)
        .map(|w| RVec::from(pointer_stream(8000, 9000 + w, 1.2)))
        .collect();
    plugin.enroll(&population, &enrolment).unwrap()
}

/// A touch profile of 300 strokes enrolled through `plugin` against a population of 20
/// people (≈ 200 strokes each, so the full reference): the sizes of a real deployment.
pub fn touch_profile(plugin: &PluginInstance) -> Vec<u8> {
    let users: Vec<RVec<RVec<Event>>> = (0..20)
        .map(|p| stroke_windows(&swipes(200, p as f64 * 0.3, 100 + p), 20).into())
        .collect();
    let population = plugin.build_population(&users).unwrap();
    plugin
        .enroll(&population, &stroke_windows(&swipes(300, 1.0, 7), 20))
        .unwrap()
}
