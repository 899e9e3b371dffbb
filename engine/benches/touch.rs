//! Speed of touch stroke scoring: `score` on raw events through the loaded touch plugin
//! versus the same code in-process, reported as events per second on one core.
//! Figures go to docs/results.md; nothing here asserts a time.

mod common;

use common::{plugin_library, stroke_windows, swipes};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_plugin::{Event, Plugin, RVec};
use habitus_touch::Touch;

fn touch_scoring(c: &mut Criterion) {
    let library = plugin_library("habitus-touch");
    let loaded = library.instantiate("").unwrap();
    let in_process = Touch::new("").unwrap();
    // A population of 20 people (≈ 200 strokes each, so the full 1,000-stroke reference)
    // and a profile of 300 strokes: the sizes of a real deployment.
    let users: Vec<RVec<RVec<Event>>> = (0..20)
        .map(|p| stroke_windows(&swipes(200, p as f64 * 0.3, 100 + p), 20).into())
        .collect();
    let population = loaded.build_population(&users).unwrap();
    let profile = loaded
        .enroll(&population, &stroke_windows(&swipes(300, 1.0, 7), 20))
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
