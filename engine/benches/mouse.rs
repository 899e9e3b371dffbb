//! Speed of the mouse plugin: segmentation + features alone, and segmentation + features +
//! scoring of whole windows, in process and through the loaded library (the real path).
//! Throughput is in events per second on one core (criterion runs single-threaded).
//! Figures go to docs/results.md; nothing here asserts a time.

mod common;

use common::{mouse_profile, plugin_library, pointer_stream};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use habitus_mouse::Mouse;
use habitus_plugin::Plugin;

fn mouse(c: &mut Criterion) {
    let in_process = Mouse::new("").unwrap();
    let library = plugin_library("habitus-mouse");
    let loaded = library.instantiate("").unwrap();
    let profile = mouse_profile(&loaded);

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
