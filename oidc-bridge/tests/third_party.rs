//! The same flow with a third-party client: Python Authlib. `.ci/run` installs it and runs
//! this test with `HABITUS_REQUIRE_AUTHLIB=1`, which turns a missing Authlib into a failure;
//! otherwise (e.g. the workspace-wide test run before that step) it skips with a reason.

mod common;

use common::*;
use std::process::Command;

fn authlib_available() -> bool {
    Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn authlib_code_flow_with_pkce() {
    if !authlib_available() {
        let msg = "python3 with authlib and requests is missing (pip install authlib requests)";
        assert!(
            std::env::var_os("HABITUS_REQUIRE_AUTHLIB").is_none(),
            "{msg}"
        );
        eprintln!("skipping: {msg}");
        return;
    }
    let p = start(PASSWORD_ONLY_ENROLMENT);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/authlib_client.py");
    for client in ["rp", "rp-ed"] {
        let out = Command::new("python3")
            .args([script, &p.issuer, client, SECRET, "alice", PASSWORD])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{client}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    }
}
