//! Shared by the daemon's integration tests: a real habitusd on a temporary socket,
//! store and secrets; the libraries it loads; the benchmark data.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use habitus::client::call;
use habitus_protocol::{RequestBody, ResponseBody, WireEvent};

/// `target/<profile>`, where the binaries and cdylibs are.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_habitusd"))
        .parent()
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds the keystroke plugin and pam_habitus.so (cargo builds no cdylibs for tests).
pub fn built() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-p", "habitus-keystroke", "-p", "pam-habitus"]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            assert!(
                cmd.status().expect("cargo build").success(),
                "building the libraries failed"
            );
            dir
        })
        .clone()
}

pub fn pam_module() -> PathBuf {
    built().join("libpam_habitus.so")
}

/// The shared benchmark data, or `None` with a printed reason (a failure under CI).
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

/// Aalto participant `file_name` (e.g. "1002_keystrokes.txt.gz"), sentences `range`.
pub fn aalto(file_name: &str, range: std::ops::Range<usize>) -> Option<Vec<WireEvent>> {
    let dir = dataset("aalto-136m-subset/keystrokes")?;
    Some(habitus::replay::from_aalto(&dir.join(file_name), range).expect("Aalto replay"))
}

/// A running habitusd with its own directory; killed when dropped.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts habitusd with `extra` appended to a config that points every path into
    /// a fresh temporary directory (evdev off unless `extra` has an `[input]` table).
    pub fn start(extra: &str) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other uids (the authorisation tests) must reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("habitusd.sock");
        let config = dir.path().join("habitusd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nsocket = {:?}\ndatabase = {:?}\nsecrets = {:?}\nplugin_dir = {:?}\n{extra}\n{}",
                socket,
                dir.path().join("profiles.sqlite"),
                dir.path().join("secrets.key"),
                built(),
                if extra.contains("[input]") {
                    ""
                } else {
                    "[input]\nevdev = false\nlogind_seat = \"/nonexistent/seat0\"\n"
                },
            ),
        )
        .unwrap();
        let mut d = TestDaemon {
            dir,
            socket,
            config,
            child: None,
        };
        d.restart();
        d
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)starts the process and waits for its socket.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("habitusd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_habitusd"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start habitusd");
        self.child = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("habitusd exited ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "habitusd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, no clean-up: what a crash or power cut leaves behind (for the process).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // std's kill is SIGKILL
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("habitusd.log")).unwrap_or_default()
    }

    pub fn call(&self, body: RequestBody) -> anyhow::Result<ResponseBody> {
        call(&self.socket, body, Duration::from_secs(30))
    }

    pub fn enroll(&self, user: &str, events: &[WireEvent]) {
        match self.call(RequestBody::Enroll {
            user: user.into(),
            events: events.to_vec(),
        }) {
            Ok(ResponseBody::Done { .. }) => {}
            other => panic!("enrol {user}: {other:?}"),
        }
    }

    pub fn ingest(&self, user: &str, events: &[WireEvent]) {
        for batch in events.chunks(200) {
            match self.call(RequestBody::Ingest {
                user: user.into(),
                events: batch.to_vec(),
            }) {
                Ok(ResponseBody::Done { .. }) => {}
                other => panic!("ingest {user}: {other:?}"),
            }
        }
    }

    pub fn session(&self, user: &str, open: bool) {
        let body = if open {
            RequestBody::SessionOpen {
                user: user.into(),
                service: "login".into(),
                tty: Some("tty7".into()),
                rhost: None,
            }
        } else {
            RequestBody::SessionClose {
                user: user.into(),
                service: "login".into(),
                tty: Some("tty7".into()),
            }
        };
        assert!(matches!(self.call(body), Ok(ResponseBody::Done { .. })));
    }

    pub fn assess(&self, user: &str) -> habitus_protocol::AssessmentReply {
        match self.call(RequestBody::Assess {
            user: user.into(),
            tty: None,
        }) {
            Ok(ResponseBody::Assessment(a)) => a,
            other => panic!("assess {user}: {other:?}"),
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True when `path` exists and is a socket.
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
