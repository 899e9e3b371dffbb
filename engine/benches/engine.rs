//! Speed of the real path: `score` through the loaded plugin versus the same code called
//! in-process (the ABI's overhead), and whole-engine throughput (routing, scoring, fusion,
//! trust). Figures go to docs/results.md; nothing here asserts a time.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_engine::{PluginInstance, PluginLibrary, Session, SessionConfig};
use habitus_keystroke::Keystroke;
use habitus_plugin::{Event, EventKind, Plugin, RVec};

/// Deterministic synthetic typing: `strokes` keystrokes over 30 key ids.
fn typing(strokes: usize, seed: u64) -> Vec<Event> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut events = Vec::with_capacity(2 * strokes);
    let mut t = 1_000_000u64;
    for _ in 0..strokes {
        let key = 1000 + (next() * 30.0) as u32;
        let hold = 70_000 + (next() * 50_000.0) as u64;
        events.push(Event::key(EventKind::KEY_DOWN, t, key));
        events.push(Event::key(EventKind::KEY_UP, t + hold, key));
        t += 120_000 + (next() * 150_000.0) as u64;
    }
    events.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
    events
}

fn keystroke_library() -> PluginLibrary {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "habitus-keystroke"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cannot build the keystroke plugin"
    );
    PluginLibrary::load(&dir.join("libhabitus_keystroke.so")).expect("keystroke plugin loads")
}

/// A free-text profile enrolled with a population: per-gallery-size combiner and S-norm,
/// whose t-statistics compare every window with each of the 100 cohort galleries.
fn cohort_profile(plugin: &PluginInstance) -> Vec<u8> {
    let users: Vec<RVec<RVec<Event>>> = (0..150u64)
        .map(|u| {
            (0..15)
                .map(|s| RVec::from(typing(50, 1000 + 100 * u + s)))
                .collect()
        })
        .collect();
    let population = plugin.build_population(&users).unwrap();
    let enrolment: Vec<RVec<Event>> = (0..5).map(|s| RVec::from(typing(50, s))).collect();
    let profile = plugin.enroll(&population, &enrolment).unwrap();
    println!(
        "free-text population {} bytes, profile with cohort {} bytes",
        population.len(),
        profile.len()
    );
    profile
}

fn abi_overhead(c: &mut Criterion) {
    let library = keystroke_library();
    let loaded = library.instantiate("mode = \"free\"").unwrap();
    let in_process = Keystroke::new("mode = \"free\"").unwrap();
    let enrolment: Vec<RVec<Event>> = (0..10).map(|s| RVec::from(typing(100, s))).collect();
    let profile = loaded.enroll(&[], &enrolment).unwrap();
    let mut group = c.benchmark_group("score");
    for events in [10usize, 50, 200] {
        let window = typing(events / 2, 99);
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(
            BenchmarkId::new("loaded-plugin", events),
            &window,
            |b, w| b.iter(|| loaded.score(black_box(&profile), black_box(w)).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("in-process", events), &window, |b, w| {
            b.iter(|| in_process.score(black_box(&profile), black_box(w)).unwrap())
        });
    }
    let profile = cohort_profile(&loaded);
    let window = typing(50, 99);
    group.throughput(Throughput::Elements(100));
    group.bench_with_input(
        BenchmarkId::new("loaded-plugin-cohort", 100),
        &window,
        |b, w| b.iter(|| loaded.score(black_box(&profile), black_box(w)).unwrap()),
    );
    group.finish();
}

fn engine_throughput(c: &mut Criterion) {
    let library = keystroke_library();
    let plugin = Arc::new(library.instantiate("mode = \"free\"").unwrap());
    let enrolment: Vec<RVec<Event>> = (0..10).map(|s| RVec::from(typing(100, s))).collect();
    let profile = plugin.enroll(&[], &enrolment).unwrap();
    let cohort = cohort_profile(&plugin);
    let stream = typing(5_000, 7);
    let config = SessionConfig::default();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(stream.len() as u64));
    for (name, profile) in [
        ("route+score+fuse+trust", profile),
        ("route+score+fuse+trust/cohort", cohort),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut session =
                    Session::new(&config, vec![(plugin.clone(), Some(profile.clone()))]);
                for e in &stream {
                    session.push(*e);
                }
                black_box(session.assess(stream.last().unwrap().t_us))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, abi_overhead, engine_throughput);
criterion_main!(benches);
