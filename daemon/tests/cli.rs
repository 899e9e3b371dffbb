//! The `habitus` binary as a user runs it.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn habitus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_habitus"))
}

/// Builds the keystroke plugin next to the habitus binary (where it is looked for).
fn build_plugin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_habitus"));
    let dir = bin.parent().unwrap().to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "habitus-keystroke"]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success());
    dir.join("libhabitus_keystroke.so")
}

#[test]
fn plugin_check_prints_the_descriptor_or_one_line() {
    let lib = build_plugin();
    let out = habitus()
        .args(["plugin", "check"])
        .arg(&lib)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("plugin      keystroke") && stdout.contains("KeyDown, KeyUp"),
        "{stdout}"
    );

    let out = habitus()
        .args(["plugin", "check", "/nonexistent/libx.so"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/libx.so: no such file"),
        "{stderr}"
    );
}

/// Runs `cmd`, which must fail with a message containing `expected`.
fn fails_saying(cmd: &mut Command, expected: &str) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn missing_data_set_is_a_clear_error() {
    fails_saying(
        habitus().args(["eval", "cmu", "--data", "/nonexistent/cmu.csv"]),
        "data set not found at /nonexistent/cmu.csv",
    );
}

/// A CMU-layout CSV in `dir`: eight synthetic typists of a 3-key text, 30 repetitions each.
fn tiny_csv(dir: &std::path::Path) -> PathBuf {
    // The two-fold population split needs at least 3 users per half.
    let mut csv =
        String::from("subject,sessionIndex,rep,H.a,DD.a.b,UD.a.b,H.b,DD.b.c,UD.b.c,H.c\n");
    for (s, (h, gap)) in [
        (0.08, 0.20),
        (0.12, 0.30),
        (0.10, 0.15),
        (0.09, 0.25),
        (0.14, 0.18),
        (0.07, 0.35),
        (0.11, 0.22),
        (0.13, 0.27),
    ]
    .iter()
    .enumerate()
    {
        for rep in 1..=30 {
            let j = (rep % 7) as f64 * 0.004;
            let (h1, dd) = (h + j, gap + j);
            csv.push_str(&format!(
                "s{s},1,{rep},{h1:.4},{dd:.4},{:.4},{h1:.4},{dd:.4},{:.4},{h1:.4}\n",
                dd - h1,
                dd - h1
            ));
        }
    }
    let data = dir.join("tiny.csv");
    std::fs::write(&data, csv).unwrap();
    data
}

#[test]
fn fixed_text_json_report_and_plot() {
    build_plugin();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    let plot = dir.path().join("det.svg");
    let out = habitus()
        .args([
            "eval",
            "fixed-text",
            "--train",
            "15",
            "--impostor-reps",
            "5",
            "--json",
            "--data",
        ])
        .arg(&data)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let results = report["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "euclidean",
            "manhattan",
            "scaled-manhattan",
            "habitus",
            "habitus (no population)"
        ]
    );
    for r in results {
        let eer = r["eer_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&eer), "{r}");
        assert!(r["zero_miss_far_mean"].as_f64().is_some());
    }
    assert!(report["protocol"]
        .as_str()
        .unwrap()
        .contains("train on reps 1-15"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[test]
fn touchalytics_refuses_an_unknown_scenario_before_reading_anything() {
    fails_saying(
        habitus()
            .args(["eval", "touchalytics", "--scenario"])
            .arg("inter-session,inter-month")
            .args(["--data", "/nonexistent/touchalytics"]),
        "unknown scenario \"inter-month\"",
    );
}

#[test]
fn continuous_writes_the_scored_streams_it_reports() {
    let Some(cmu) = common::dataset("cmu-keystroke/DSL-StrongPasswordData.csv") else {
        return;
    };
    build_plugin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("streams.json");
    // CMU alone, a short profile and short impostor streams (quick in a debug build).
    let continuous = |streams: &std::path::Path| {
        let mut cmd = habitus();
        cmd.args(["eval", "continuous", "--json", "--cmu"])
            .arg(&cmu)
            .args(["--aalto", "none", "--balabit", "none"])
            .args(["--touchalytics", "none", "--cmu-train", "20"])
            .args(["--impostor-reps", "10", "--streams"])
            .arg(streams);
        cmd
    };
    let out = continuous(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let (report, streams) = (&report[0], &streams[0]);
    assert_eq!(streams["source"], report["source"]);
    let users = streams["users"].as_array().unwrap();
    assert_eq!(users.len(), 51);
    assert_eq!(report["held_out"]["users"], 51);
    let mut impostor_streams = 0;
    for u in users {
        // Repetitions 21-400 of the subject, one LLR each, within the clamp.
        let genuine = u["genuine"].as_array().unwrap();
        assert_eq!(genuine.len(), 380, "{}", u["user"]);
        let impostors = u["impostors"].as_array().unwrap();
        let impostor_llrs = impostors.iter().flat_map(|s| {
            let s = s.as_array().unwrap();
            assert_eq!(s.len(), 10);
            s
        });
        for llr in genuine.iter().chain(impostor_llrs) {
            let llr = llr.as_f64().unwrap();
            assert!((-10.0..=10.0).contains(&llr), "{llr}");
        }
        impostor_streams += impostors.len();
    }
    assert_eq!(report["held_out"]["impostor_streams"], impostor_streams);

    // An unwritable path is an error, not a silent success.
    fails_saying(
        &mut continuous(&dir.path().join("missing/streams.json")),
        "writing the streams to",
    );
}

#[test]
fn an_explicit_config_that_does_not_exist_is_an_error() {
    // Before: `population build` fell back to the defaults and wrote the default store
    // and secrets; the OS error was printed twice.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.toml");
    let commands: [&[&str]; 2] = [
        &["population", "build", "--aalto"],
        &["eval", "stepup", "--data"],
    ];
    for args in commands {
        let out = habitus()
            .args(args)
            .arg(dir.path())
            .arg("--config")
            .arg(&missing)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("cannot read {}", missing.display())),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

fn enrol_windows(d: &common::TestDaemon, user: &str) -> u32 {
    match d.call(habitus_protocol::RequestBody::Status {
        user: Some(user.into()),
    }) {
        Ok(habitus_protocol::ResponseBody::Status { users }) => {
            users[0].assessment.modalities[0].enrol_windows
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ingest_checks_the_whole_file_before_sending_and_summarises_as_json() {
    let d = common::TestDaemon::start("");
    let events = habitus::replay::synthetic_typist(100, 95.0, 190.0, 1);
    let good = d.path("good.jsonl");
    habitus::replay::write(&good, "test", &events).unwrap();
    let ingest = |file: &std::path::Path| {
        habitus()
            .args(["ingest", "alice", "--json", "--socket"])
            .arg(&d.socket)
            .arg("--replay")
            .arg(file)
            .output()
            .unwrap()
    };
    let out = ingest(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before: `--json` printed nothing at all.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary["user"], "alice");
    assert_eq!(summary["events"], 200);
    let windows = enrol_windows(&d, "alice");
    assert!(windows > 0);

    // A time past 2^53 on the last line: before, the first 180 events went in and the
    // refusal said "nothing was ingested"; now nothing is sent.
    let mut text = std::fs::read_to_string(&good).unwrap();
    text.push_str("{\"t_us\":9007199254740993,\"kind\":\"key_down\",\"code\":3}\n");
    let bad = d.path("bad.jsonl");
    std::fs::write(&bad, text).unwrap();
    let out = ingest(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{}:202: time 9007199254740993 is out of range",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(enrol_windows(&d, "alice"), windows, "nothing was ingested");

    // A pace that would take ages (before: --speed 1e-9 slept for ever, silently).
    for speed in ["1e-9", "-1", "nan", "inf"] {
        let out = habitus()
            .args(["ingest", "alice", &format!("--speed={speed}"), "--socket"])
            .arg(&d.socket)
            .arg("--replay")
            .arg(&good)
            .output()
            .unwrap();
        assert!(!out.status.success(), "--speed {speed}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--speed"), "{speed}: {stderr}");
    }
}

#[test]
fn a_closed_or_full_stdout_is_no_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let synthetic = |out: std::process::Stdio| {
        habitus()
            .args(["replay", "synthetic", "--keystrokes", "10", "--out"])
            .arg(dir.path().join("r.jsonl"))
            .stdout(out)
            .output()
            .unwrap()
    };
    // A pipe whose reader is gone, as after `| head -1`: SIGPIPE ends the process
    // quietly (before: "failed printing to stdout: Broken pipe" and exit 101).
    let mut fds = [0; 2];
    // Close-on-exec: a child that another test spawns meanwhile must not inherit the
    // read end, or the pipe would still have a reader (exit 0, not SIGPIPE).
    // SAFETY: `fds` has room for the two descriptors pipe2() returns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just opened and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let out = synthetic(writer.into());
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A full disk: an error with a message, exit 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = synthetic(full.into());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot write to standard output: No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn synthetic_replay_refuses_unbounded_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.jsonl");
    // Before: an allocation failure (abort), or t_us = u64::MAX with releases before
    // their presses.
    for (args, expected) in [
        (
            &["--keystrokes", "5000000000"][..],
            "--keystrokes 5000000000: must be 1 to 1000000",
        ),
        (&["--keystrokes", "0"][..], "--keystrokes 0: must be 1 to"),
        (
            &["--hold-ms", "inf"][..],
            "--hold-ms inf: must be a number of milliseconds from 1 to 60000",
        ),
        (&["--hold-ms", "1e300"][..], "--hold-ms 1e300: must be"),
        (&["--gap-ms", "NaN"][..], "--gap-ms NaN: must be"),
        (&["--hold-ms", "0.0001"][..], "--hold-ms 0.0001: must be"),
    ] {
        fails_saying(
            habitus()
                .args(["replay", "synthetic", "--out"])
                .arg(&out)
                .args(args),
            expected,
        );
        assert!(!out.exists(), "{args:?}");
    }
    // The largest accepted values write a file habitusd takes.
    let status = habitus()
        .args([
            "replay",
            "synthetic",
            "--keystrokes",
            "1000",
            "--hold-ms",
            "60000",
        ])
        .args(["--gap-ms", "60000", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success());
    habitus::replay::read(&out).unwrap();
}

#[test]
fn evaluations_refuse_meaningless_impostor_counts() {
    build_plugin(); // fixed-text loads the plugin before it reads the data
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_csv(dir.path());
    // Before: "impostors = first 1000 reps" of subjects who have 30.
    fails_saying(
        habitus()
            .args([
                "eval",
                "fixed-text",
                "--train",
                "15",
                "--impostor-reps",
                "1000",
            ])
            .arg("--data")
            .arg(&data),
        "1000 impostor repetitions per subject asked for, but subject s0 has only 30",
    );
    // Before: meaningless results and exit 0. Refused before any data is read.
    let none = ["--balabit", "none", "--touchalytics", "none"];
    for (args, expected) in [
        (
            vec!["--cmu", "none", "--aalto", "none"],
            "are all \"none\": nothing to evaluate",
        ),
        (
            vec!["--cmu", "none", "--impostors", "0"],
            "--impostors 0: no impostor streams",
        ),
        (
            vec!["--aalto", "none", "--impostor-reps", "0"],
            "--impostor-reps 0: no impostor streams",
        ),
    ] {
        fails_saying(
            habitus()
                .args(["eval", "continuous"])
                .args(none)
                .args(&args)
                .args(["--plugins", "/nonexistent"]),
            expected,
        );
    }
}

#[test]
fn demo_names_the_paths_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    // Before: "File exists (os error 17)" without the path.
    fails_saying(
        habitus().args(["demo", "--dir"]).arg(&file),
        &format!("--dir {}: cannot create the directory", file.display()),
    );
    // Before: synthetic typists "(pass --data to use real typing)" although it was.
    fails_saying(
        habitus()
            .args(["demo", "--data", "/nonexistent/aalto", "--dir"])
            .arg(dir.path().join("demo")),
        "--data /nonexistent/aalto: no Aalto keystroke files there",
    );
}
