//! Shared by the integration tests: build the plugin libraries under test and find them.
//! (Each test binary uses a different part of this module.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>`, where cargo puts the workspace's cdylibs.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds the keystroke plugin and the fixture libraries (cargo does not build cdylibs
/// for tests on its own) and returns the directory holding them.
pub fn plugin_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "-p",
                "habitus-keystroke",
                "-p",
                "habitus-fixture-panics",
                "-p",
                "habitus-fixture-old-interface",
                "-p",
                "habitus-fixture-not-a-plugin",
            ]);
            if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .expect("run cargo build for the plugin libraries");
            assert!(status.success(), "building the plugin libraries failed");
            dir
        })
        .clone()
}

pub fn library(name: &str) -> PathBuf {
    plugin_dir().join(format!("lib{name}.so"))
}

/// The shared benchmark data, or `None` with a printed reason. In CI (`CI` set) a missing
/// data set is a failure, not a skip.
pub fn dataset(relative: &str) -> Option<PathBuf> {
    let root = std::env::var("HABITUS_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets")
        });
    let path = root.join(relative);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "benchmark data {} is missing: put ../shared/datasets beside the repository or set HABITUS_DATASETS",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}
