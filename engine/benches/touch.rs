//! Speed of touch stroke scoring: `score` on raw events through the loaded touch plugin
//! versus the same code in-process, reported as events per second on one core.
//! Figures go to docs/results.md; nothing here asserts a time.

mod common;

use common::{plugin_library, swipes, touch_profile};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_plugin::Plugin;
use habitus_touch::Touch;

fn touch_scoring(c: &mut Criterion) {
    let library = plugin_library("habitus-touch");
    let loaded = library.instantiate("").unwrap();
    let in_process = Touch::new("").unwrap();
    let profile = touch_profile(&loaded);
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
