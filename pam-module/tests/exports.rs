//! The cdylib exports the PAM service functions and nothing else: no Rust internals a
//! host or another module could bind to by accident.

mod common;

use std::process::Command;

const REQUIRED: [&str; 6] = [
    "pam_sm_authenticate",
    "pam_sm_setcred",
    "pam_sm_open_session",
    "pam_sm_close_session",
    "pam_sm_acct_mgmt",
    "pam_sm_chauthtok",
];

/// Symbols some linkers define in every shared object to mark section boundaries: data
/// addresses, not code anyone can call.
const LINKER_MARKERS: [&str; 3] = ["_edata", "_end", "__bss_start"];

#[test]
fn only_pam_sm_symbols_are_exported() {
    let module = common::module_path();
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(module)
        .output()
        .expect("run nm (binutils)");
    assert!(output.status.success(), "{output:?}");
    let listing = String::from_utf8_lossy(&output.stdout);
    println!("{listing}");
    let mut exported = Vec::new();
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        // "<address> <type> <name>[@version]"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, name) = match fields.as_slice() {
            [_, kind, name] => (*kind, *name),
            _ => panic!("unexpected nm line {line:?}"),
        };
        let name = name.split('@').next().unwrap_or(name);
        match kind {
            // Code (text, weak or indirect functions): must be a PAM entry point.
            "T" | "t" | "W" | "w" | "i" => {
                assert!(name.starts_with("pam_sm_"), "exported function {name:?}");
                exported.push(name.to_owned());
            }
            // Linker section markers are tolerated; any other exported data is not.
            _ => assert!(
                LINKER_MARKERS.contains(&name),
                "exported non-function symbol {line:?}"
            ),
        }
    }
    for required in REQUIRED {
        assert!(
            exported.iter().any(|e| e == required),
            "{required} missing from {exported:?}"
        );
    }
}
