//! Touchalytics through the loaded touch plugin: the paper's three scenarios must hold
//! the accuracy measured in docs/results.md.
//!
//! In a release build (`cargo test --release -p habitus-engine --test touchalytics`)
//! the whole protocol runs (≈ 2–3 min on 2 cores, with the device-feature variant); in a
//! debug build (`cargo test --workspace`, CI) only the inter-week scenario on the first
//! 16 users runs, so the test stays within about 30 s.

mod common;

use std::process::Command;

use habitus_engine::eval::touchalytics::{self, Options, Scenario};
use habitus_engine::eval::{DetectorResult, EvalReport, Quiet};
use habitus_engine::PluginLibrary;

/// Builds the touch plugin (cargo does not build cdylibs for tests) in this profile.
fn touch_library() -> PluginLibrary {
    let dir = common::target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "habitus-touch"]);
    if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("run cargo build").success(),
        "building the touch plugin failed"
    );
    PluginLibrary::load(&dir.join("libhabitus_touch.so")).expect("touch plugin loads")
}

fn result<'a>(report: &'a EvalReport, detector: &str) -> &'a DetectorResult {
    report
        .results
        .iter()
        .find(|r| r.detector == detector)
        .unwrap_or_else(|| panic!("{detector} reported"))
}

fn check(report: &EvalReport, detector: &str, measured: f64, pairs: usize) {
    let r = result(report, detector);
    eprintln!("{detector}: {:.4} over {}", r.eer_mean, r.subjects);
    assert_eq!(r.subjects, pairs, "{detector}: user×type pairs");
    assert!(
        r.eer_mean <= measured + 0.005,
        "{detector} regressed: {:.4} (measured {measured})",
        r.eer_mean
    );
}

/// The debug-build subset's measured EERs (the same arithmetic as release).
const DEBUG_WEEK_1: f64 = 0.2633;
const DEBUG_WEEK_11: f64 = 0.1717;

#[test]
fn touchalytics_scenarios_hold_their_accuracy() {
    let Some(path) = common::dataset("touchalytics/featMat.csv") else {
        return;
    };
    let data = touchalytics::load(&path).unwrap();
    assert_eq!(data.users().len(), 41);
    assert_eq!(data.strokes.len() + data.skipped_without_direction, 21_158);
    let lib = touch_library();
    let release = !cfg!(debug_assertions);
    if release {
        let options = Options {
            scenarios: Scenario::ALL.to_vec(),
            device_variant: true,
            closed_set_variant: true,
            users: None,
            threads: 2,
        };
        let report = touchalytics::run(&lib, &data, &options, &Quiet).unwrap();
        // Measured (docs/results.md): mean EER over (user, stroke type) pairs; 0.005 margin.
        check(&report, "intra-session, 1 stroke", 0.1221, 81);
        check(&report, "intra-session, 11 strokes", 0.0200, 81);
        check(&report, "inter-session, 1 stroke", 0.1708, 80);
        check(&report, "inter-session, 11 strokes", 0.0700, 80);
        check(&report, "inter-week, 1 stroke", 0.2610, 28);
        check(&report, "inter-week, 11 strokes", 0.1667, 28);
        check(
            &report,
            "inter-session, 11 strokes + device features",
            0.0432,
            80,
        );
        // The paper's closed set: every other user's training documents as negatives.
        check(&report, "inter-session, 1 stroke, closed set", 0.1557, 80);
        check(&report, "inter-session, 11 strokes, closed set", 0.0572, 80);
        check(&report, "inter-week, 11 strokes, closed set", 0.1191, 28);
    } else {
        // Debug build: inter-week on the first 16 users (9 of them have week-2 data).
        let options = Options {
            scenarios: vec![Scenario::InterWeek],
            device_variant: false,
            closed_set_variant: false,
            users: Some(16),
            threads: 2,
        };
        let report = touchalytics::run(&lib, &data, &options, &Quiet).unwrap();
        check(&report, "inter-week, 1 stroke", DEBUG_WEEK_1, 18);
        check(&report, "inter-week, 11 strokes", DEBUG_WEEK_11, 18);
    }
    assert_eq!(
        data.strokes_with_missing, 310,
        "NaN / infinite strokes are counted"
    );
}

#[test]
fn malformed_feature_matrix_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let row = "1,1,0.3,0.2,10,-30,12,-40,10.2,0.9,1,-1.4,2,1,2,3,-5,0,5,2,0.5,0,0.1,0.3,-1.4,10.5,0.97,50,0,0.5,0.05,0,0,1";
    let cases = [
        ("missing.csv", None, "cannot read"),
        ("fields.csv", Some("1,2,3\n".to_string()), ":1: 3 fields"),
        (
            "number.csv",
            Some(format!("{row}\n{}\n", row.replacen("0.3", "abc", 1))),
            ":2: column 3 value \"abc\"",
        ),
        (
            "doc.csv",
            Some(format!("{}\n", row.replacen("1,1,", "1,9,", 1))),
            ":1: column 2 (doc id) 9",
        ),
        ("users.csv", Some(format!("{row}\n")), "1 users"),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        if let Some(text) = content {
            std::fs::write(&path, text).unwrap();
        }
        let err = touchalytics::load(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: error names the file: {err}");
        assert!(
            err.contains(expected),
            "{name}: {err} should contain {expected}"
        );
    }
    // NaN cells are counted, a row without flag or direction is skipped and counted.
    let mut text = String::new();
    for user in 1..=4 {
        text.push_str(&row.replacen("1,1,", &format!("{user},1,"), 1));
        text.push('\n');
    }
    text.push_str(&row.replacen("0.3,", "NaN,", 1));
    text.push('\n');
    let no_direction = row.replacen(",1,-1.4,", ",NaN,NaN,", 1);
    text.push_str(&no_direction);
    text.push('\n');
    let path = dir.path().join("nan.csv");
    std::fs::write(&path, text).unwrap();
    let data = touchalytics::load(&path).unwrap();
    assert_eq!(data.strokes.len(), 5);
    assert_eq!(data.strokes_with_missing, 1);
    assert_eq!(data.skipped_without_direction, 1);
}
