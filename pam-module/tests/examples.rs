//! The shipped stacks in `examples/pam.d/`, run under pam_wrapper: each file is copied
//! into a service directory with module names made absolute, names of substacks and
//! includes made absolute (libpam looks those up in /etc/pam.d, not in pam_wrapper's
//! directory), and the strong-factor module (pam_u2f, pam_oath, pam_unix) replaced by
//! pam_matrix. Also the pitfall the README warns about, demonstrated.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use habitus_protocol::RequestBody;

/// The modules the examples use as the strong factor; each becomes pam_matrix.
const STRONG_FACTORS: [&str; 3] = ["pam_u2f.so", "pam_oath.so", "pam_unix.so"];

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/pam.d")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rewrites one shipped stack for the test environment. Returns the text and how many
/// strong-factor lines were replaced.
fn localise(text: &str, pam: &PamDir, socket: &Path, stepup: Option<&Path>) -> (String, usize) {
    let mut out = String::new();
    let mut replaced = 0;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let tokens: Vec<&str> = code.split_whitespace().collect();
        if tokens[0] == "@include" {
            let stub = include_stub(pam, tokens[1]);
            out.push_str(&format!("@include {}\n", stub.display()));
            continue;
        }
        // type control module args..., where control may be a [bracketed list].
        let mut rest = tokens[1..].iter();
        let mut control = rest.next().expect("control").to_string();
        if control.starts_with('[') {
            while !control.ends_with(']') {
                control.push(' ');
                control.push_str(rest.next().expect("closing bracket"));
            }
        }
        let module = *rest.next().expect("module");
        let args: Vec<&str> = rest.copied().collect();
        let (module, args) = if control == "substack" || control == "include" {
            assert_eq!(module, "habitus-stepup", "unexpected substack in {line:?}");
            let target = stepup.expect("this stack has no substack");
            (target.display().to_string(), String::new())
        } else if module == "pam_habitus.so" {
            (
                module_path().display().to_string(),
                format!("{} {}", args.join(" "), habitus_args(socket, "")),
            )
        } else if STRONG_FACTORS.contains(&module) {
            replaced += 1;
            (
                PAM_MATRIX.to_owned(),
                format!("passdb={}", pam.passdb().display()),
            )
        } else {
            let absolute = Path::new(SECURITY_DIR).join(module);
            assert!(absolute.is_file(), "{module} is not installed");
            (absolute.display().to_string(), args.join(" "))
        };
        out.push_str(&format!("{} {control} {module} {args}\n", tokens[0]));
    }
    (out, replaced)
}

/// Stands in for a distribution's common-* file: permit everything.
fn include_stub(pam: &PamDir, name: &str) -> PathBuf {
    pam.write(
        name,
        &format!(
            "account required {PAM_PERMIT}\nsession required {PAM_PERMIT}\n\
             password required {PAM_PERMIT}\nauth required {PAM_PERMIT}\n"
        ),
    )
}

/// The shipped `sudo` stack with the shipped `stepup_file` as `habitus-stepup`.
fn install_sudo(pam: &PamDir, socket: &Path, stepup_file: &str) {
    let (stepup, replaced) = localise(&example(stepup_file), pam, socket, None);
    assert_eq!(
        replaced, 1,
        "{stepup_file} should hold one strong factor:\n{stepup}"
    );
    let stepup = pam.write("habitus-stepup", &stepup);
    let (sudo, replaced) = localise(&example("sudo"), pam, socket, Some(&stepup));
    assert_eq!(
        replaced, 0,
        "sudo must reach its strong factor only via the substack"
    );
    pam.write("sudo", &sudo);
}

fn shipped_sudo_stack(stepup_file: &str) {
    if !pam_tests_can_run() {
        return;
    }
    // Trusted: no password asked, the wrong one on stdin is never read.
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("sudo");
    install_sudo(&pam, &daemon.socket, stepup_file);
    let run = pamtester(&pam, "sudo", &["authenticate"], &[], WRONG_PASSWORD);
    assert!(run.success && !run.prompted(), "{stepup_file}: {run:#?}");
    assert_eq!(
        daemon.requests(),
        vec![RequestBody::Assess {
            user: USER.into(),
            tty: None
        }]
    );
    // The session line announces the session.
    let run = pamtester(&pam, "sudo", &["open_session", "close_session"], &[], "");
    assert!(run.success, "{run:#?}");
    assert!(daemon.requests().iter().any(|r| matches!(
        r,
        RequestBody::SessionOpen { user, service, .. } if user == USER && service == "sudo"
    )));

    // Daemon down: the strong factor decides.
    let (_dir, absent) = absent_socket();
    let pam = PamDir::new("sudo");
    install_sudo(&pam, &absent, stepup_file);
    let right = pamtester(&pam, "sudo", &["authenticate"], &[], RIGHT_PASSWORD);
    assert!(
        right.success && right.prompted(),
        "{stepup_file}: {right:#?}"
    );
    let wrong = pamtester(&pam, "sudo", &["authenticate"], &[], WRONG_PASSWORD);
    assert!(
        !wrong.success && wrong.prompted(),
        "{stepup_file}: {wrong:#?}"
    );
    // And the session still opens.
    let run = pamtester(&pam, "sudo", &["open_session", "close_session"], &[], "");
    assert!(run.success, "{run:#?}");
}

#[test]
fn sudo_with_u2f_stepup() {
    shipped_sudo_stack("habitus-stepup-u2f");
}

#[test]
fn sudo_with_totp_stepup() {
    shipped_sudo_stack("habitus-stepup-totp");
}

#[test]
fn sudo_with_password_stepup() {
    shipped_sudo_stack("habitus-stepup-password");
}

/// Debian's common-auth, with pam_matrix for pam_unix: written to be a whole stack.
fn common_auth_like(pam: &PamDir) -> PathBuf {
    pam.write(
        "common-auth",
        &format!(
            "auth [success=1 default=ignore] {PAM_MATRIX} passdb={}\n\
             auth requisite {PAM_DENY}\n\
             auth required {PAM_PERMIT}\n",
            pam.passdb().display()
        ),
    )
}

/// Why the examples use `substack`: `success=1` over `@include common-auth` skips only
/// common-auth's first line and lands on its `requisite pam_deny.so`, so a Trusted
/// verdict denies the user it should have waved through. The same file reached through
/// `substack` is a stack of its own, and the jump skips all of it.
#[test]
fn success_jump_over_included_common_auth_lands_on_pam_deny() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let module = module_path().display().to_string();
    let args = habitus_args(&daemon.socket, "");

    let naive = PamDir::new("naive");
    let common = common_auth_like(&naive);
    naive.write(
        "naive",
        &format!(
            "auth [success=1 default=ignore] {module} {args}\n\
             @include {}\n\
             account required {PAM_PERMIT}\n",
            common.display()
        ),
    );
    let run = pamtester(&naive, "naive", &["authenticate"], &[], RIGHT_PASSWORD);
    assert!(
        !run.success,
        "the pitfall: Trusted must have landed on pam_deny: {run:#?}"
    );
    assert!(
        !run.prompted(),
        "the jump skipped the password line: {run:#?}"
    );
    assert_eq!(daemon.requests().len(), 1, "habitusd did say Trusted");

    let fixed = PamDir::new("fixed");
    let common = common_auth_like(&fixed);
    fixed.write(
        "fixed",
        &format!(
            "auth [success=1 default=ignore] {module} {args}\n\
             auth substack {}\n\
             auth required {PAM_PERMIT}\n\
             account required {PAM_PERMIT}\n",
            common.display()
        ),
    );
    let run = pamtester(&fixed, "fixed", &["authenticate"], &[], WRONG_PASSWORD);
    assert!(run.success && !run.prompted(), "{run:#?}");

    // Without a verdict both stacks work as plain password stacks: the bug only bites
    // users the module vouches for, which is why it needs a test.
    let (_dir, absent) = absent_socket();
    let down_args = habitus_args(&absent, "");
    let naive_down = PamDir::new("naivedown");
    let common = common_auth_like(&naive_down);
    naive_down.write(
        "naivedown",
        &format!(
            "auth [success=1 default=ignore] {module} {down_args}\n\
             @include {}\n\
             account required {PAM_PERMIT}\n",
            common.display()
        ),
    );
    let right = pamtester(
        &naive_down,
        "naivedown",
        &["authenticate"],
        &[],
        RIGHT_PASSWORD,
    );
    assert!(right.success, "{right:#?}");
    let wrong = pamtester(
        &naive_down,
        "naivedown",
        &["authenticate"],
        &[],
        WRONG_PASSWORD,
    );
    assert!(!wrong.success, "{wrong:#?}");
}
