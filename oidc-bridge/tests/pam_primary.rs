//! Primary authentication through a real PAM stack (`[primary] method = "pam"`): the
//! `habitus-oidc serve` binary runs under cwrap's pam_wrapper with a private service
//! directory whose `habitus-oidc` service is pam_matrix (a password file) for `auth` and
//! pam_permit / pam_deny for `account`. Nothing in `/etc/pam.d` is touched.
//!
//! Needs the Debian packages libpam-wrapper and libpam0g-dev (`.ci/run` installs them);
//! without them the test says so and fails under CI, skips elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WRAPPER_DIRS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/pam_wrapper",
    "/usr/lib/pam_wrapper",
];
const SECURITY_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/usr/lib/security",
];

fn find(dirs: &[&str], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// pam_wrapper copies its service directory to the first free `/tmp/pam.X` and two
/// processes doing so at once collide; every habitus test that runs pam_wrapper takes this
/// lock first (see daemon/src/pamtest.rs).
struct WrapperLock(#[allow(dead_code)] std::fs::File);

impl WrapperLock {
    fn acquire() -> WrapperLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("habitus-pam-wrapper.lock"))
            .expect("lock file");
        // SAFETY: flock on a descriptor owned here; released when it is closed.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        WrapperLock(file)
    }
}

/// `habitus-oidc serve` under pam_wrapper; killed on drop.
struct Server {
    child: Child,
    issuer: String,
    _lock: WrapperLock,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: the server returns from main, and pam_wrapper removes its /tmp copy.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider with PAM primary authentication. `account_module` decides
/// `pam_acct_mgmt` (pam_permit or pam_deny); pam_matrix knows `passwords`.
fn start_pam(passwords: &[(&str, &str)], account_module: &str) -> Option<Server> {
    let (Some(matrix), Some(account)) = (
        find(&WRAPPER_DIRS, "pam_matrix.so"),
        find(&SECURITY_DIRS, account_module),
    ) else {
        let why = "pam_wrapper (libpam-wrapper) or the stock PAM modules are not installed";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("pam.d");
    std::fs::create_dir(&services).expect("service dir");
    let passdb = dir.path().join("passdb");
    let db: String = passwords
        .iter()
        .map(|(u, p)| format!("{u}:{p}:habitus-oidc\n"))
        .collect();
    std::fs::write(&passdb, db).expect("passdb");
    std::fs::write(
        services.join("habitus-oidc"),
        format!(
            "auth required {} passdb={}\naccount required {}\n",
            matrix.display(),
            passdb.display(),
            account.display()
        ),
    )
    .expect("service file");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let extra = format!("bind = \"127.0.0.1:{port}\"\n[primary]\nmethod = \"pam\"\n");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text(&issuer, &state, &extra)).expect("config");
    // alice has a users-file entry without a password: only her TOTP secret (step-up).
    // bob has an argon2 password in the users file, which PAM mode must not accept.
    let config = habitus_oidc::Config::load(&config_path).expect("config");
    let mut users = habitus_oidc::users::UsersFile::default();
    users.set("alice", None, Some(TOTP.into())).expect("alice");
    users.set("bob", Some(PASSWORD), None).expect("bob");
    users
        .save(&config.state_path(&config.users_file))
        .expect("users");

    let lock = WrapperLock::acquire();
    let child = Command::new(env!("CARGO_BIN_EXE_habitus-oidc"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &services)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting habitus-oidc serve");
    let mut server = Server {
        child,
        issuer,
        _lock: lock,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("habitus-oidc serve exited: {status}");
        }
        assert!(Instant::now() < deadline, "habitus-oidc did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

/// One login page: authorize, then POST the form. Returns the reply to the password.
fn login(issuer: &str, user: &str, password: &str, extra: &[(&str, &str)]) -> Reply {
    let pk = pkce();
    let mut params = auth_params("rp", "openid", "n", &pk);
    params.extend_from_slice(extra);
    let tx = open_login(issuer, &params);
    let reply = post_login(issuer, &tx, user, password);
    if reply.status == 303 {
        let q = reply.location_query();
        let t = exchange(issuer, "rp", &q["code"], &pk);
        assert_eq!(t.status, 200, "{}", t.text());
        let id = claims_of(t.json()["id_token"].as_str().expect("id_token"));
        assert_eq!(id["sub"], user);
        assert!(id["amr"].as_array().expect("amr").contains(&"pwd".into()));
    }
    reply
}

fn refused(r: &Reply) -> bool {
    r.status == 200 && r.text().contains("Wrong user name or password.")
}

#[test]
fn pam_checks_the_password_and_the_users_file_only_adds_totp() {
    let Some(server) = start_pam(
        &[("alice", "pam secret 1"), ("carol", "pam secret 3")],
        "pam_permit.so",
    ) else {
        return;
    };
    let issuer = &server.issuer;

    // The PAM password signs in (a redirect with a code whose ID token names alice).
    let ok = login(issuer, "alice", "pam secret 1", &[]);
    assert_eq!(ok.status, 303, "{}", ok.text());
    // A PAM user with no users-file entry at all signs in too.
    let ok = login(issuer, "carol", "pam secret 3", &[]);
    assert_eq!(ok.status, 303, "{}", ok.text());

    // Wrong PAM password, an account PAM does not know (bob's users-file password is not
    // consulted), a name that is not a valid `sub`, an empty password, a NUL byte.
    for (user, password) in [
        ("alice", "wrong"),
        ("alice", "pam secret 3"),
        ("bob", PASSWORD),
        ("alice/..", "pam secret 1"),
        ("alice", ""),
        ("alice", "pam secret 1\0"),
    ] {
        let r = login(issuer, user, password, &[]);
        assert!(
            refused(&r),
            "{user:?}/{password:?}: {} {}",
            r.status,
            r.text()
        );
    }

    // Behaviour is not enrolled (loa:0), so asking for loa:2 needs the step-up factor,
    // and alice's TOTP secret comes from her password-less users-file entry.
    let r = login(
        issuer,
        "alice",
        "pam secret 1",
        &[("acr_values", "urn:habitus:loa:2")],
    );
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("name=\"code\""),
        "TOTP page expected: {}",
        r.text()
    );
    // carol has no step-up factor: she signs in at the level reached (voluntary acr).
    let r = login(
        issuer,
        "carol",
        "pam secret 3",
        &[("acr_values", "urn:habitus:loa:2")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
}

#[test]
fn pam_account_management_refusal_refuses_the_login() {
    let Some(server) = start_pam(&[("alice", "pam secret 1")], "pam_deny.so") else {
        return;
    };
    // The right password, but `account` says no (expired, locked, outside hours...).
    let r = login(&server.issuer, "alice", "pam secret 1", &[]);
    assert!(refused(&r), "{} {}", r.status, r.text());
}

#[test]
fn bad_pam_service_names_are_refused_in_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["../../etc/shadow", "", "a b"] {
        let text = config_text(
            "http://127.0.0.1:1",
            dir.path(),
            &format!("[primary]\nmethod = \"pam\"\npam_service = {bad:?}\n"),
        );
        let e = habitus_oidc::Config::parse(&text)
            .expect_err(bad)
            .to_string();
        assert!(e.contains("primary.pam_service"), "{e}");
    }
    let text = config_text(
        "http://127.0.0.1:1",
        dir.path(),
        "[primary]\nmethod = \"ldap\"\n",
    );
    let e = habitus_oidc::Config::parse(&text)
        .expect_err("method")
        .to_string();
    assert!(e.contains("unknown variant") && e.contains("pam"), "{e}");
}
