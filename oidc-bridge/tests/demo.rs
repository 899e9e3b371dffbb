//! `habitus-oidc demo`, the README's first command, run as a user runs it: the binary on a
//! loopback port, its printed password, its relying party at `/demo`. A synthetic typist
//! enrols over five logins (the page says `learning`, `loa:0`), then signs in scored; then
//! someone else types the same password and the level drops. On SIGTERM the demo removes
//! its temporary state directory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Demo {
    child: Child,
    base: String,
    password: String,
    state_dir: std::path::PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    // The demo finds the keystroke plugin next to its executable.
    let plugins = plugin_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_habitus-oidc"))
        .args(["demo", "--port", &port.to_string()])
        .current_dir(&plugins)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting habitus-oidc demo");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut password, mut state_dir) = (None, None);
    let mut line = String::new();
    while password.is_none() || state_dir.is_none() {
        line.clear();
        let n = out.read_line(&mut line).expect("reading the demo's output");
        assert!(n > 0, "the demo exited before printing its password");
        if let Some(p) = line.trim().strip_prefix("password") {
            password = Some(p.trim().to_string());
        }
        if let Some(rest) = line.split("(state in ").nth(1) {
            state_dir = rest.split(',').next().map(std::path::PathBuf::from);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the demo did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Demo {
        child,
        base: format!("http://127.0.0.1:{port}"),
        password: password.expect("password"),
        state_dir: state_dir.expect("state dir"),
    }
}

/// What the demo relying party shows after one sign-in.
struct Shown {
    acr: String,
    state: String,
    trust: Option<f64>,
    page: String,
}

/// A browser's path through the demo: /demo → /authorize (login page) → collector batch
/// → password → redirect to /demo/callback → the page with the decoded ID token.
fn sign_in(demo: &Demo, events: Vec<serde_json::Value>) -> Shown {
    let start = http("GET", &format!("{}/demo?login", demo.base), &[], b"");
    assert_eq!(start.status, 303, "{}", start.text());
    let page = http("GET", start.header("location").expect("location"), &[], b"");
    assert_eq!(page.status, 200, "{}", page.text());
    let tx = tx_of(&page);
    let r = collect(
        &demo.base,
        &serde_json::json!({"tx": tx, "seq": 0, "events": events}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let done = post_login(&demo.base, &tx, "demo", &demo.password);
    assert_eq!(done.status, 303, "{}", done.text());
    let callback = done.header("location").expect("location").to_string();
    assert!(callback.starts_with(&format!("{}/demo/callback?", demo.base)));
    let shown = http("GET", &callback, &[], b"");
    assert_eq!(shown.status, 200);
    let page = shown.text().replace("&quot;", "\"");
    assert!(page.contains("Signed in as demo"), "{page}");
    assert!(page.contains("nonce verified"), "{page}");
    let acr = page
        .split("<b>acr</b> ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("acr on the page")
        .to_string();
    // The live claim from userinfo, as the page prints it (pretty JSON).
    let userinfo = page
        .split("Live behaviour (userinfo)</h2><pre>")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .expect("userinfo on the page");
    let claims: serde_json::Value = serde_json::from_str(userinfo).expect("userinfo JSON");
    let behavior = &claims["urn:habitus:behavior"];
    Shown {
        acr,
        state: behavior["state"].as_str().expect("state").to_string(),
        trust: behavior["trust"].as_f64(),
        page,
    }
}

fn level(acr: &str) -> u32 {
    acr.strip_prefix("urn:habitus:loa:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a habitus level: {acr}"))
}

#[test]
fn the_demo_learns_a_typist_and_shows_the_level_drop_for_someone_else() {
    let mut demo = start_demo();
    assert!(demo.state_dir.is_dir(), "{}", demo.state_dir.display());

    for login in 0..5 {
        let s = sign_in(&demo, typist(12, 95.0, 190.0, 1, login));
        assert_eq!(s.acr, "urn:habitus:loa:0", "enrolment login {login}");
        assert_eq!(s.state, "learning", "enrolment login {login}: {}", s.page);
    }
    let genuine = sign_in(&demo, typist(12, 95.0, 190.0, 1, 100));
    let impostor = sign_in(&demo, typist(12, 150.0, 330.0, 77, 1));
    eprintln!(
        "demo: genuine {} trust {:?}, impostor {} trust {:?}",
        genuine.acr, genuine.trust, impostor.acr, impostor.trust
    );
    assert!(level(&genuine.acr) >= 1, "{}", genuine.page);
    assert!(level(&impostor.acr) < level(&genuine.acr) || impostor.trust < genuine.trust);
    assert!(impostor.trust.expect("scored") < genuine.trust.expect("scored"));

    // Ctrl-C / SIGTERM: the demo returns and removes its temporary state.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = demo.child.try_wait().expect("wait") {
            assert!(status.success(), "demo exit: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !demo.state_dir.exists(),
        "{} left behind",
        demo.state_dir.display()
    );
}

/// `--port 0` cannot work (the issuer and the demo client's redirect URI name the port):
/// refused, where it used to start and print `http://127.0.0.1:0/demo`.
#[test]
fn the_demo_refuses_port_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_habitus-oidc"))
        .args(["demo", "--port", "0"])
        .output()
        .expect("habitus-oidc");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 is not in 1..=65535"), "{stderr}");
}
