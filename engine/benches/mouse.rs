//! Speed of the mouse plugin: segmentation + features alone, and segmentation + features +
//! scoring of whole windows, in process and through the loaded library (the real path).
//! Throughput is in events per second on one core (criterion runs single-threaded).
//! Figures go to docs/results.md; nothing here asserts a time.

use std::path::PathBuf;
use std::process::Command;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_engine::PluginLibrary;
use habitus_mouse::Mouse;
use habitus_plugin::{Event, EventKind, Plugin, RVec};

/// Deterministic synthetic pointer behaviour: aimed movements with a bell-shaped speed
/// profile sampled every 8 ms, clicks, drags, scrolls and pauses. `speed` scales a
/// person's movement speed (different people, for a population).
fn pointer_stream(events: usize, seed: u64, speed: f64) -> Vec<Event> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
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

fn mouse_library() -> PluginLibrary {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "habitus-mouse"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cannot build the mouse plugin"
    );
    PluginLibrary::load(&dir.join("libhabitus_mouse.so")).expect("mouse plugin loads")
}

fn mouse(c: &mut Criterion) {
    let in_process = Mouse::new("").unwrap();
    let library = mouse_library();
    let loaded = library.instantiate("").unwrap();
    let population: Vec<RVec<RVec<Event>>> = (0..6)
        .map(|p| {
            (0..3)
                .map(|w| RVec::from(pointer_stream(8000, 100 * p + w, 0.6 + 0.15 * p as f64)))
                .collect()
        })
        .collect();
    let population = loaded.build_population(&population).unwrap();
    let enrolment: Vec<RVec<Event>> = (0..4)
        .map(|w| RVec::from(pointer_stream(8000, 9000 + w, 1.2)))
        .collect();
    let profile = loaded.enroll(&population, &enrolment).unwrap();

    let mut group = c.benchmark_group("mouse segment+features");
    for events in [1_000usize, 10_000] {
        let window = pointer_stream(events, 42, 1.2);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(BenchmarkId::from_parameter(events), &window, |b, w| {
            b.iter(|| black_box(in_process.actions(black_box(w))))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("mouse score");
    for events in [1_000usize, 10_000] {
        let window = pointer_stream(events, 43, 1.2);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(BenchmarkId::new("in-process", events), &window, |b, w| {
            b.iter(|| black_box(in_process.score(&profile, black_box(w)).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("loaded", events), &window, |b, w| {
            b.iter(|| black_box(loaded.score(&profile, black_box(w)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, mouse);
criterion_main!(benches);
