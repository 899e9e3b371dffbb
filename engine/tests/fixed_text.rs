//! The CMU benchmark through the loaded plugin: the paper's reference detectors must
//! reproduce exactly, and the production detector must not regress.

mod common;

use habitus_engine::eval::{fixed_text, Quiet};
use habitus_engine::PluginLibrary;

fn result<'a>(
    report: &'a habitus_engine::eval::EvalReport,
    detector: &str,
) -> &'a habitus_engine::eval::DetectorResult {
    report
        .results
        .iter()
        .find(|r| r.detector == detector)
        .expect("detector reported")
}

#[test]
fn cmu_reproduces_killourhy_maxion_and_habitus_holds_its_accuracy() {
    let Some(path) = common::dataset("cmu-keystroke/DSL-StrongPasswordData.csv") else {
        return;
    };
    let lib = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let data = fixed_text::load(&path).unwrap();
    assert_eq!(data.subjects.len(), 51);
    assert_eq!(data.keys, 11);
    let report = fixed_text::run(&lib, "cmu", &data, fixed_text::Protocol::CMU, 2, &Quiet).unwrap();
    // Published (Killourhy & Maxion 2009, CMU page): 0.1706, 0.1529, 0.0962.
    for (detector, published) in [
        ("euclidean", 0.1706),
        ("manhattan", 0.1529),
        ("scaled-manhattan", 0.0962),
    ] {
        let r = result(&report, detector);
        assert!(
            (r.eer_mean - published).abs() <= 0.001,
            "{detector}: {} vs {published}",
            r.eer_mean
        );
        assert_eq!(r.subjects, 51);
    }
    let zm = result(&report, "scaled-manhattan").zero_miss_far_mean;
    assert!(
        (zm - 0.601).abs() <= 0.001,
        "scaled-manhattan zero-miss FAR {zm}"
    );
    // Measured 0.0286 / 0.1275 (docs/results.md); a small margin for harmless changes.
    let h = result(&report, "habitus");
    assert!(h.eer_mean <= 0.031, "habitus EER regressed: {}", h.eer_mean);
    assert!(
        h.zero_miss_far_mean <= 0.15,
        "habitus zero-miss FAR regressed: {}",
        h.zero_miss_far_mean
    );
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const HEADER: &str = "subject,sessionIndex,rep,H.a,DD.a.b,UD.a.b,H.b\n";

#[test]
fn malformed_csv_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing.csv", None, "cannot read"),
        ("empty.csv", Some(""), "empty file"),
        ("header.csv", Some("who,when\n"), ":1: header must start"),
        (
            "layout.csv",
            Some("subject,sessionIndex,rep,H.a,UD.a.b,DD.a.b,H.b\n"),
            ":1: column 5",
        ),
        (
            "fields.csv",
            Some(&*format!("{HEADER}s1,1,1,0.1,0.2,0.1\n")),
            ":2: 6 fields",
        ),
        (
            "number.csv",
            Some(&*format!(
                "{HEADER}s1,1,1,0.1,0.2,0.1,0.1\ns1,1,2,0.1,abc,0.1,0.1\n"
            )),
            ":3: column 5 (DD.a.b) value \"abc\"",
        ),
        (
            "negative.csv",
            Some(&*format!("{HEADER}s1,1,1,-0.1,0.2,0.3,0.1\n")),
            ":2: hold time -0.1",
        ),
        (
            "nan.csv",
            Some(&*format!("{HEADER}s1,1,1,0.1,NaN,0.1,0.1\n")),
            ":2: down-down latency NaN",
        ),
        // Zero durations: two events at one instant carry no order (before, the
        // evaluation stopped later with "window is not the enrolled text", naming no row).
        (
            "zero-hold.csv",
            Some(&*format!(
                "{HEADER}s1,1,1,0.1,0.2,0.1,0.1\ns1,1,2,0.1,0.2,0.1,0\n"
            )),
            ":3: column 7 (H.b) is 0: a zero hold cannot be ordered",
        ),
        (
            "zero-dd.csv",
            Some(&*format!("{HEADER}s1,1,1,0.1,0.0000004,-0.1,0.1\n")),
            ":2: column 5 (DD.a.b) is 0.0000004: a zero interval cannot be ordered",
        ),
    ];
    for (name, content, expected) in cases {
        let path = match content {
            Some(text) => write(dir.path(), name, text),
            None => dir.path().join(name),
        };
        let err = fixed_text::load(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: error names the file: {err}");
        assert!(
            err.contains(expected),
            "{name}: {err} should contain {expected}"
        );
    }
}
