//! The SDK's conformance kit, run in process on this plugin: the same checks as
//! `habitus plugin check --strict target/debug/libhabitus_scroll.so`, without a host.

use habitus_plugin::conformance::{self, Options};
use habitus_scroll::Scroll;

#[test]
fn conforms_strictly() {
    let report = conformance::check::<Scroll>(&Options::default());
    println!("{}", report.table(true));
    // Strict: warnings (time over budget, unnoticed corruption, ...) fail too.
    report.assert_passed(true);
}

#[test]
fn conforms_with_settings() {
    let report = conformance::check::<Scroll>(&Options::with_config(
        "burst_gap_ms = 250\nadapt_rate = 0.1",
    ));
    report.assert_passed(true);
}
