//! Speed of touch stroke scoring: `score` on raw events through the loaded touch plugin
//! versus the same code in-process, reported as events per second on one core.
//! Figures go to docs/results.md; nothing here asserts a time.

use std::path::PathBuf;
use std::process::Command;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_engine::PluginLibrary;
use habitus_plugin::{Event, EventKind, Plugin, RVec};
use habitus_touch::Touch;

/// Deterministic synthetic swiping: `strokes` scrolls of 12 events (down, 10 moves, up)
/// by one person whose start, length and speed vary a little (`seed`: which person).
fn swipes(strokes: usize, person: f64, seed: u64) -> Vec<Event> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
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

fn windows(events: &[Event], per_window: usize) -> Vec<RVec<Event>> {
    events
        .chunks(12 * per_window)
        .map(|c| RVec::from(c.to_vec()))
        .collect()
}

fn touch_library() -> PluginLibrary {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "habitus-touch"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cannot build the touch plugin"
    );
    PluginLibrary::load(&dir.join("libhabitus_touch.so")).expect("touch plugin loads")
}

fn touch_scoring(c: &mut Criterion) {
    let library = touch_library();
    let loaded = library.instantiate("").unwrap();
    let in_process = Touch::new("").unwrap();
    // A population of 20 people (≈ 200 strokes each, so the full 1,000-stroke reference)
    // and a profile of 300 strokes: the sizes of a real deployment.
    let users: Vec<RVec<RVec<Event>>> = (0..20)
        .map(|p| windows(&swipes(200, p as f64 * 0.3, 100 + p), 20).into())
        .collect();
    let population = loaded.build_population(&users).unwrap();
    let profile = loaded
        .enroll(&population, &windows(&swipes(300, 1.0, 7), 20))
        .unwrap();
    let mut group = c.benchmark_group("touch-score");
    for strokes in [1usize, 11] {
        let window = swipes(strokes, 1.0, 99);
        group.throughput(Throughput::Elements(window.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("loaded-plugin", strokes),
            &window,
            |b, w| b.iter(|| loaded.score(black_box(&profile), black_box(w)).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("in-process", strokes), &window, |b, w| {
            b.iter(|| in_process.score(black_box(&profile), black_box(w)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, touch_scoring);
criterion_main!(benches);
