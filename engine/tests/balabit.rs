//! Balabit mouse-dynamics evaluation: input handling on small synthetic files, and a
//! regression test of the accuracy on a subset of the real data (the full benchmark runs
//! in `habitus eval balabit`; see docs/results.md).

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use habitus_engine::eval::balabit::{self, BalabitData, BalabitReport};
use habitus_engine::eval::continuous::{chimeric, default_grid, two_fold};
use habitus_engine::eval::fixed_text;
use habitus_engine::eval::Quiet;
use habitus_engine::PluginLibrary;

const HEADER: &str = "record timestamp,client timestamp,button,state,x,y\n";

/// Builds the mouse plugin in this test's profile (cargo does not build cdylibs for tests).
fn mouse_library() -> PluginLibrary {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = common::target_dir();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "habitus-mouse"]);
        if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("run cargo build").success(),
            "building the mouse plugin failed"
        );
        dir
    });
    PluginLibrary::load(&dir.join("libhabitus_mouse.so")).expect("the mouse plugin loads")
}

/// A session in Balabit's CSV layout: aimed movements every 16 ms, clicks, drags and
/// scrolls; `speed` and `bow` make people differ.
fn session_csv(seed: u64, cycles: usize, speed: f64, bow: f64) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut unit = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = String::from(HEADER);
    let (mut t, mut x, mut y) = (0.0f64, 400.0f64, 300.0f64);
    let mut row = |t: f64, b: &str, s: &str, x: f64, y: f64| {
        let _ = writeln!(out, "{t:.3},{t:.3},{b},{s},{},{}", x.round(), y.round());
    };
    for _ in 0..cycles {
        let (tx, ty) = (50.0 + unit() * 1200.0, 50.0 + unit() * 700.0);
        let dist = (tx - x).hypot(ty - y).max(1.0);
        let steps = (((0.2 + dist / (1200.0 * speed)) / 0.016) as usize).max(5);
        let (x0, y0) = (x, y);
        for s in 1..=steps {
            let u = s as f64 / steps as f64;
            let p = u * u * (3.0 - 2.0 * u);
            let off = bow * dist * (std::f64::consts::PI * p).sin();
            x = x0 + (tx - x0) * p - (ty - y0) / dist * off;
            y = y0 + (ty - y0) * p + (tx - x0) / dist * off;
            t += 0.016;
            row(t, "NoButton", "Move", x, y);
        }
        let r = unit();
        if r < 0.6 {
            t += 0.1;
            row(t, "Left", "Pressed", x, y);
            t += 0.08 + 0.05 / speed;
            row(t, "Left", "Released", x, y);
        } else if r < 0.75 {
            t += 0.1;
            row(t, "Left", "Pressed", x, y);
            for _ in 0..8 {
                t += 0.016;
                x += 8.0 * speed;
                row(t, "NoButton", "Drag", x, y);
            }
            t += 0.05;
            row(t, "Left", "Released", x, y);
        } else {
            t += 0.2;
            row(t, "Scroll", "Down", x, y);
        }
        t += 0.3 + unit();
    }
    out
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn malformed_files_name_file_and_line() {
    let cases = [
        ("x,y\n", ":1: not a Balabit session"),
        (
            &format!("{HEADER}0.0,0.0,NoButton,Move,1,2\n0.1,0.1,NoButton,Move,3\n")[..],
            ":3: 5 comma-separated fields",
        ),
        (
            &format!("{HEADER}0.0,soon,NoButton,Move,1,2\n")[..],
            ":2: client timestamp \"soon\"",
        ),
        (
            &format!("{HEADER}0.0,-5,NoButton,Move,1,2\n")[..],
            ":2: client timestamp \"-5\"",
        ),
        (
            &format!("{HEADER}0.0,0.0,Thumb,Wiggle,1,2\n")[..],
            ":2: unknown button/state \"Thumb\"/\"Wiggle\"",
        ),
        (
            &format!("{HEADER}0.0,0.0,NoButton,Move,1,nan\n")[..],
            ":2: y \"nan\" is not a number",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("session_{i}"));
        write(&path, text);
        let err = balabit::read_session(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("session_{i}")) && err.contains(expected),
            "{i}: {err}"
        );
    }
    // Labels and layout.
    let root = dir.path().join("set");
    write(
        &root.join("public_labels.csv"),
        "filename,is_illegal\nsession_1,maybe\n",
    );
    let err = balabit::load(&root, 1, &Quiet).unwrap_err().to_string();
    assert!(
        err.contains("public_labels.csv:2: is_illegal \"maybe\""),
        "{err}"
    );
    write(&root.join("public_labels.csv"), "filename,is_illegal\n");
    let err = balabit::load(&root, 1, &Quiet).unwrap_err().to_string();
    assert!(
        err.contains("training_files") && err.contains("cannot read directory"),
        "{err}"
    );
    let err = balabit::load(&dir.path().join("nothing"), 1, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open"), "{err}");
}

#[test]
fn synthetic_set_runs_end_to_end_and_counts_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let people = [(0.7, 0.0), (1.0, 0.08), (1.4, -0.05)];
    let mut labels = String::from("filename,is_illegal\n");
    for (u, &(speed, bow)) in people.iter().enumerate() {
        let user = format!("user{}", u + 1);
        for s in 0..2 {
            let text = session_csv(100 * u as u64 + s, 120, speed, bow);
            write(
                &root.join(format!("training_files/{user}/session_{u}{s}")),
                &text,
            );
        }
        // Own sessions, and one of the next person's, filed under this account.
        for s in 0..3 {
            let name = format!("session_t{u}{s}");
            let (sp, bw, illegal) = if s == 2 {
                let o = people[(u + 1) % people.len()];
                (o.0, o.1, 1)
            } else {
                (speed, bow, 0)
            };
            let mut text = session_csv(1000 + 10 * u as u64 + s, 30, sp, bw);
            if s == 0 {
                // Bad input the plugin must survive: a sentinel, a clock step back.
                text.push_str("99.0,99.0,NoButton,Move,65535,65535\n");
                text.push_str("98.0,1.0,NoButton,Move,10,10\n");
            }
            write(&root.join(format!("test_files/{user}/{name}")), &text);
            let _ = writeln!(labels, "{name},{illegal}");
        }
    }
    // A labelled session with no action at all (only clicks on the spot), and an
    // unlabelled one that must not be read.
    write(
        &root.join("test_files/user1/session_empty"),
        &format!("{HEADER}1.0,1.0,Left,Pressed,5,5\n1.1,1.1,Left,Released,5,5\n"),
    );
    labels.push_str("session_empty,0\n");
    write(&root.join("test_files/user1/session_unlabelled"), "garbage");
    write(&root.join("public_labels.csv"), &labels);

    let data = balabit::load(root, 2, &Quiet).unwrap();
    assert_eq!(data.users, vec!["user1", "user2", "user3"]);
    assert_eq!(data.test.len(), 10);
    assert_eq!(data.unlabelled, 1);
    assert_eq!(data.test_input.sentinel_coordinates, 3);
    assert_eq!(data.test_input.backwards_times, 3);
    let library = mouse_library();
    let config = "rounds = 20\nmin_leaf = 5\ncalibration_folds = 2\n";
    let report = balabit::run(&library, &data, config, true, 2, &Quiet).unwrap();
    // The settings evaluated are named beside the figures.
    assert!(
        report.notes.contains(
            &"mouse plugin configuration: rounds = 20; min_leaf = 5; calibration_folds = 2".into()
        ),
        "{:?}",
        report.notes
    );
    assert_eq!(report.sessions_without_actions, 1);
    // Closed and open set, each as scored and with the other accounts discounted.
    assert_eq!(report.rows.len(), 4 * balabit::ACTION_COUNTS.len());
    for r in &report.rows {
        assert!(r.auc.is_finite() && r.eer.is_finite(), "{r:?}");
    }
    let all = |variant: &str| {
        report
            .rows
            .iter()
            .find(|r| r.variant == variant && r.actions == "all")
            .unwrap()
    };
    let closed = all(balabit::CLOSED_SET);
    assert_eq!((closed.genuine, closed.impostor), (7, 3));
    // Each legal session is scored by each of the two leave-one-out profiles.
    let open = all(balabit::OPEN_SET);
    assert_eq!((open.genuine, open.impostor), (14, 3));
    assert!(closed.auc > 0.8, "{closed:?}");
    // Every illegal session here is another enrolled account's: discounting by the
    // other accounts' profiles scores the same sessions and ranks them no worse.
    let discounted = all(balabit::CLOSED_SET_OTHERS);
    assert_eq!((discounted.genuine, discounted.impostor), (7, 3));
    assert!(discounted.auc >= closed.auc, "{discounted:?} {closed:?}");
    let open_discounted = all(balabit::OPEN_SET_OTHERS);
    assert_eq!((open_discounted.genuine, open_discounted.impostor), (14, 3));
    serde_json::to_string(&report).unwrap();
    // Whole sessions and runs of 10, for the two variants raw and with others discounted.
    assert_eq!(report.det_report().results.len(), 8);
}

/// The subset of users the regression test uses (all of their training sessions and
/// labelled test sessions): the full run takes minutes in release, far too long here.
const SUBSET: [&str; 4] = ["user7", "user9", "user12", "user15"];
/// Cheaper than the plugin defaults, for a debug build.
const SUBSET_CONFIG: &str = "rounds = 60\ncalibration_folds = 2\nmax_enrol_actions = 2000\npopulation_actions_per_user = 700\n";

/// The subset as a data set (symlinks in a temporary folder), or `None` without the data.
fn subset_data() -> Option<(tempfile::TempDir, BalabitData)> {
    let full = common::dataset("balabit-mouse")?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        full.join("public_labels.csv"),
        dir.path().join("public_labels.csv"),
    )
    .unwrap();
    for part in ["training_files", "test_files"] {
        std::fs::create_dir(dir.path().join(part)).unwrap();
        for user in SUBSET {
            std::os::unix::fs::symlink(
                full.join(part).join(user),
                dir.path().join(part).join(user),
            )
            .unwrap();
        }
    }
    let data = balabit::load(dir.path(), 2, &Quiet).unwrap();
    Some((dir, data))
}

fn subset_report() -> Option<BalabitReport> {
    let (_dir, data) = subset_data()?;
    let library = mouse_library();
    Some(balabit::run(&library, &data, SUBSET_CONFIG, true, 2, &Quiet).unwrap())
}

#[test]
fn real_subset_keeps_its_accuracy() {
    let Some(report) = subset_report() else {
        return;
    };
    let get = |variant: &str, actions: &str| {
        report
            .rows
            .iter()
            .find(|r| r.variant == variant && r.actions == actions)
            .unwrap_or_else(|| panic!("no row {variant} / {actions}"))
    };
    // Achieved on this subset (see docs/results.md), minus a small margin.
    let expected = [
        // Measured: 0.9435 / 13.75 %, 0.8293 / 26.05 %, 0.5370 / 57.29 % (with four
        // accounts, leaving one more out of the population leaves two: near chance).
        (balabit::CLOSED_SET, "all", 0.92, 0.16),
        (balabit::CLOSED_SET, "1", 0.81, 0.28),
        (balabit::OPEN_SET, "all", 0.50, 0.62),
    ];
    for (variant, actions, min_auc, max_eer) in expected {
        let r = get(variant, actions);
        eprintln!("{variant} / {actions}: AUC {:.4}, EER {:.4}", r.auc, r.eer);
        assert!(
            r.auc >= min_auc && r.eer <= max_eer,
            "{variant} / {actions}: AUC {} (expected >= {min_auc}), EER {} (expected <= {max_eer})",
            r.auc,
            r.eer
        );
    }
    let labelled = get(balabit::CLOSED_SET, "all");
    assert_eq!(labelled.genuine + labelled.impostor, 73 + 66 + 105 + 115);
}

/// Continuous streams: the subset's mouse streams alone, and fused with CMU keystroke
/// streams (chimeric users): fusion must catch more impostors than either modality.
#[test]
fn fused_streams_catch_more_impostors_than_either_modality() {
    let Some((_dir, data)) = subset_data() else {
        return;
    };
    let Some(cmu) = common::dataset("cmu-keystroke/DSL-StrongPasswordData.csv") else {
        return;
    };
    let mouse = balabit::streams(&mouse_library(), &data, SUBSET_CONFIG, 2, &Quiet).unwrap();
    assert_eq!(mouse.len(), 4);
    // Every labelled session's actions land in exactly one stream.
    let illegal = [37, 43, 49, 70];
    for (u, n) in mouse.iter().zip(illegal) {
        assert!(
            u.impostors.len() <= n && u.impostors.len() + 2 >= n,
            "{}",
            u.user
        );
        assert!(u.genuine.len() > 100, "{}", u.user);
        assert!(u
            .genuine
            .iter()
            .chain(u.impostors.iter().flatten())
            .all(|v| v.is_finite()));
    }
    let keystroke = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let cmu = fixed_text::load(&cmu).unwrap();
    let protocol = fixed_text::Protocol {
        train: 200,
        impostor_reps: 50,
    };
    let typing = fixed_text::streams(&keystroke, &cmu, protocol, 2, &Quiet).unwrap();
    let fused = chimeric(&typing, &mouse);
    assert_eq!(fused.len(), typing.len());
    let grid = default_grid();
    let (_, m_mouse) = two_fold(&mouse, &grid);
    let (_, m_typing) = two_fold(&typing, &grid);
    let (_, m_fused) = two_fold(&fused, &grid);
    eprintln!("mouse {m_mouse:?}\ntyping {m_typing:?}\nfused {m_fused:?}");
    assert!(m_fused.undetected < m_typing.undetected, "{m_fused:?}");
    assert!(m_fused.undetected < m_mouse.undetected, "{m_fused:?}");
    assert!(m_fused.ania.is_some_and(|a| a < 8.0), "{m_fused:?}");
}
