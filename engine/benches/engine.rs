//! Speed of the real path: `score` through the loaded plugin versus the same code called
//! in-process (the ABI's overhead), and whole-engine throughput (routing, scoring, fusion,
//! trust). Figures go to docs/results.md; nothing here asserts a time.

mod common;

use std::sync::Arc;

use common::{
    keystroke_cohort, mouse_profile, plugin_library, pointer_stream, swipes, touch_profile, typing,
};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_engine::{PluginInstance, Session, SessionConfig};
use habitus_keystroke::Keystroke;
use habitus_plugin::{Event, Plugin, RVec};

/// The free-text profile with a population ([`common::keystroke_cohort`]), its sizes
/// printed.
fn cohort_profile(plugin: &PluginInstance) -> Vec<u8> {
    let (population, profile) = keystroke_cohort(plugin);
    println!(
        "free-text population {} bytes, profile with cohort {} bytes",
        population.len(),
        profile.len()
    );
    profile
}

fn abi_overhead(c: &mut Criterion) {
    let library = plugin_library("habitus-keystroke");
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
    let library = plugin_library("habitus-keystroke");
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

/// A profile of each modality, enrolled against a synthetic population through the
/// loaded plugins (the sizes of the per-modality benches).
struct Modalities {
    keystroke: (Arc<PluginInstance>, Vec<u8>),
    mouse: (Arc<PluginInstance>, Vec<u8>),
    touch: (Arc<PluginInstance>, Vec<u8>),
}

fn modalities() -> Modalities {
    let keystroke = Arc::new(
        plugin_library("habitus-keystroke")
            .instantiate("mode = \"free\"")
            .unwrap(),
    );
    let keystroke_profile = cohort_profile(&keystroke);
    let mouse = Arc::new(plugin_library("habitus-mouse").instantiate("").unwrap());
    let mouse_profile = mouse_profile(&mouse);
    let touch = Arc::new(plugin_library("habitus-touch").instantiate("").unwrap());
    let touch_profile = touch_profile(&touch);
    println!(
        "profiles: keystroke {} bytes, mouse {} bytes, touch {} bytes",
        keystroke_profile.len(),
        mouse_profile.len(),
        touch_profile.len()
    );
    Modalities {
        keystroke: (keystroke, keystroke_profile),
        mouse: (mouse, mouse_profile),
        touch: (touch, touch_profile),
    }
}

/// Streams merged in time order (each starts at the same instant; ties keep `a` first).
fn merge(mut streams: Vec<Vec<Event>>) -> Vec<Event> {
    let mut all: Vec<Event> = streams.drain(..).flatten().collect();
    all.sort_by_key(|e| e.t_us);
    all
}

/// The whole multimodal pipeline: one session routing an interleaved stream of several
/// modalities to their loaded plugins, scoring each plugin's windows (the default window
/// sizes: 100 keystroke events, 50 pointer or touch events), fusing and updating trust.
/// Streams: a desktop (typing + pointing), a phone (swiping + typing) and all three.
fn multimodal_throughput(c: &mut Criterion) {
    let m = modalities();
    let typed = typing(2_500, 7);
    let pointed = pointer_stream(5_000, 43, 1.2);
    let swiped = swipes(400, 1.0, 99);
    let config = SessionConfig::default();
    let mut group = c.benchmark_group("multimodal");
    let slot = |(p, profile): &(Arc<PluginInstance>, Vec<u8>)| (p.clone(), Some(profile.clone()));
    let pipelines = [
        (
            "desktop: keystroke+mouse",
            vec![slot(&m.keystroke), slot(&m.mouse)],
            merge(vec![typed.clone(), pointed.clone()]),
        ),
        (
            "phone: touch+keystroke",
            vec![slot(&m.touch), slot(&m.keystroke)],
            merge(vec![swiped.clone(), typed.clone()]),
        ),
        (
            "all three",
            vec![slot(&m.keystroke), slot(&m.mouse), slot(&m.touch)],
            merge(vec![typed, pointed, swiped]),
        ),
    ];
    for (name, slots, stream) in pipelines {
        // Once, untimed: every modality must really score (a bench of windows that all
        // fail would measure nothing).
        let mut session = Session::new(&config, slots.clone());
        for e in &stream {
            session.push(*e);
        }
        session.flush();
        let a = session.assess(stream.last().unwrap().t_us);
        println!(
            "{name}: {} events, {} windows scored, {} failed, {} rejected; state {:?}, fused LLR {:.1}",
            a.events_seen, a.windows_scored, a.windows_failed, a.events_rejected, a.state, a.fused_llr
        );
        assert_eq!(a.windows_failed, 0, "{name}: {a:?}");
        assert!(
            a.modalities.iter().all(|m| m.last_score.is_some()),
            "{name}: {a:?}"
        );
        group.throughput(Throughput::Elements(stream.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut session = Session::new(&config, slots.clone());
                for e in &stream {
                    session.push(*e);
                }
                session.flush();
                black_box(session.assess(stream.last().unwrap().t_us))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    abi_overhead,
    engine_throughput,
    multimodal_throughput
);
criterion_main!(benches);
