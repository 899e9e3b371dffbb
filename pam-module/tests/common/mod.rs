//! Shared test machinery: the built `libpam_habitus.so`, a scripted fake habitusd, PAM
//! service directories for cwrap's pam_wrapper, and a timed `pamtester` runner.
//!
//! How names resolve under pam_wrapper (libpam 1.5 on Debian): pam_wrapper copies
//! `PAM_WRAPPER_SERVICE_DIR` to a private directory and hands it to libpam's
//! `pam_start_confdir`, which only applies to the *top-level* service file.
//! `substack NAME` and `@include NAME` are still looked up in `/etc/pam.d`, so every
//! test stack names its substacks and includes by absolute path, and module paths are
//! absolute too.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use habitus_protocol::{
    AssessmentReply, ErrorKind, ModalityStatus, Request, RequestBody, Response, ResponseBody,
    TrustState,
};

pub const PAM_PERMIT: &str = "/usr/lib/x86_64-linux-gnu/security/pam_permit.so";
pub const PAM_DENY: &str = "/usr/lib/x86_64-linux-gnu/security/pam_deny.so";
pub const PAM_MATRIX: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so";
pub const SECURITY_DIR: &str = "/usr/lib/x86_64-linux-gnu/security";

pub const USER: &str = "alice";
pub const RIGHT_PASSWORD: &str = "s3cret-factor";
pub const WRONG_PASSWORD: &str = "not-the-password";
/// pam_matrix's prompt, visible on pamtester's stderr when the strong factor runs.
pub const PASSWORD_PROMPT: &str = "Password:";

/// The fake daemon answers Assess immediately; the module's deadline in test stacks.
pub const TIMEOUT_MS: u64 = 300;

/// Whether these tests can run here: they need root (the module only trusts a
/// root-owned socket served by a root process, and the fake daemon runs in the test
/// process), `pamtester` and cwrap's pam_wrapper with pam_matrix. Like the data-set tests
/// of this repository, they skip with a printed reason outside CI and fail in CI (`CI`
/// set), where a missing prerequisite is a broken runner, not a reason to pass.
pub fn pam_tests_can_run() -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_owned());
    }
    let wrapper_found = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .iter()
        .any(|dir| Path::new(dir).join("libpam_wrapper.so").exists());
    for (found, what) in [
        (wrapper_found, "libpam_wrapper.so (package libpam-wrapper)"),
        (Path::new(PAM_MATRIX).exists(), PAM_MATRIX),
        (Path::new(PAM_PERMIT).exists(), PAM_PERMIT),
        (
            Command::new("pamtester")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "pamtester",
        ),
    ] {
        if !found {
            missing.push(what.to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("pam_habitus integration tests need {}", missing.join(", "));
    assert!(std::env::var_os("CI").is_none(), "{reason}");
    eprintln!("SKIPPED: {reason}");
    false
}

/// The absolute path of the built `libpam_habitus.so`, building it once per test binary
/// with the cargo that runs the tests.
pub fn module_path() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        // target/<profile>/deps/<test binary>: the library sits in target/<profile>, wherever
        // CARGO_TARGET_DIR or build.target-dir put it.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps layout")
            .to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "pam-habitus",
                "--lib",
                "--profile",
            ])
            .arg(&profile)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p pam-habitus failed");
        let mut candidates = vec![profile_dir.join("libpam_habitus.so")];
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            let dir = PathBuf::from(dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
            };
            let name = profile_dir.file_name().expect("profile directory name");
            candidates.push(dir.join(name).join("libpam_habitus.so"));
        }
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .expect("libpam_habitus.so not found next to the test binary")
            .canonicalize()
            .expect("absolute module path")
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A verdict as habitusd would send it, about `user`, evaluated now.
pub fn assessment(user: &str, state: TrustState) -> AssessmentReply {
    AssessmentReply {
        user: user.into(),
        state,
        trust: 99.0,
        fused_llr: 5.0,
        evidence_age_ms: Some(3_000),
        evaluated_at_ms: now_ms(),
        modalities: vec![ModalityStatus {
            plugin: "keystroke".into(),
            enrolled: true,
            enrol_windows: 40,
            enrol_needed: 40,
            last_llr: Some(2.5),
        }],
    }
}

/// What the fake daemon does with an `Assess` request. Session requests are
/// acknowledged with `Done` by every behaviour that answers at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    /// A fresh Trusted verdict about the user asked for.
    Trusted,
    /// A fresh Trusted verdict, but about somebody else.
    OtherUser,
    /// A fresh verdict in this state.
    State(TrustState),
    /// Trusted, but the last evidence is 10 minutes old.
    StaleEvidence,
    /// Trusted, but the verdict was computed 10 minutes ago.
    StaleVerdict,
    /// An error reply.
    Error,
    /// Bytes that are not a frame at all.
    GarbageBytes,
    /// A well-formed frame whose body is not JSON.
    GarbageJson,
    /// A Trusted verdict in a protocol version this module does not speak.
    OtherVersion,
    /// Accept, read the request, never answer.
    NeverAnswer,
    /// Accept and close at once, before reading anything.
    HangUp,
}

/// One request the fake daemon received.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    Request(Request),
    Undecodable(String),
}

/// A scripted habitusd on a unix socket in its own temporary directory.
pub struct FakeDaemon {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    pub fn start(behaviour: Behaviour) -> FakeDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("habitusd.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake habitusd");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, behaviour, &seen, &stop))
        };
        FakeDaemon {
            _dir: dir,
            socket,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The decoded requests received so far.
    pub fn requests(&self) -> Vec<RequestBody> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Request(r) => Some(r.body),
                Seen::Undecodable(_) => None,
            })
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread can see the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: UnixListener, behaviour: Behaviour, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    // Connections the daemon "hangs" on, kept open until the daemon stops.
    let mut held = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        if behaviour == Behaviour::HangUp {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        while let Ok(body) = habitus_protocol::read_frame(&mut stream) {
            let request = match habitus_protocol::decode_request(&body) {
                Ok(request) => request,
                Err(e) => {
                    seen.lock()
                        .expect("seen lock")
                        .push(Seen::Undecodable(e.to_string()));
                    break;
                }
            };
            seen.lock()
                .expect("seen lock")
                .push(Seen::Request(request.clone()));
            match answer(behaviour, &request.body) {
                Some(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        if behaviour == Behaviour::NeverAnswer {
            held.push(stream);
        }
    }
}

fn frame(response: &Response) -> Vec<u8> {
    habitus_protocol::encode(response).expect("encode")
}

/// The bytes the fake daemon sends back, or `None` to stay silent.
fn answer(behaviour: Behaviour, request: &RequestBody) -> Option<Vec<u8>> {
    let asked = match request {
        RequestBody::Assess { user, .. } => user.clone(),
        RequestBody::SessionOpen { .. } | RequestBody::SessionClose { .. } => {
            if behaviour == Behaviour::NeverAnswer {
                return None;
            }
            return Some(frame(&Response::new(ResponseBody::Done {
                message: "session noted".into(),
            })));
        }
        _ => {
            return Some(frame(&Response::error(
                ErrorKind::BadRequest,
                "not scripted",
            )))
        }
    };
    let verdict = |reply: AssessmentReply| frame(&Response::new(ResponseBody::Assessment(reply)));
    Some(match behaviour {
        Behaviour::Trusted => verdict(assessment(&asked, TrustState::Trusted)),
        Behaviour::OtherUser => verdict(assessment("mallory", TrustState::Trusted)),
        Behaviour::State(state) => verdict(assessment(&asked, state)),
        Behaviour::StaleEvidence => {
            let mut reply = assessment(&asked, TrustState::Trusted);
            reply.evidence_age_ms = Some(600_000);
            verdict(reply)
        }
        Behaviour::StaleVerdict => {
            let mut reply = assessment(&asked, TrustState::Trusted);
            reply.evaluated_at_ms -= 600_000;
            verdict(reply)
        }
        Behaviour::Error => frame(&Response::error(ErrorKind::Internal, "store unavailable")),
        Behaviour::GarbageBytes => b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec(),
        Behaviour::GarbageJson => {
            let body = b"this is not json {";
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(body);
            bytes
        }
        Behaviour::OtherVersion => {
            let mut value = serde_json::to_value(Response::new(ResponseBody::Assessment(
                assessment(&asked, TrustState::Trusted),
            )))
            .expect("to json");
            value["version"] = serde_json::json!(habitus_protocol::PROTOCOL_VERSION + 1);
            let body = serde_json::to_vec(&value).expect("json bytes");
            let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            bytes
        }
        Behaviour::NeverAnswer | Behaviour::HangUp => return None,
    })
}

/// A PAM service directory for pam_wrapper plus the pam_matrix password file.
pub struct PamDir {
    dir: tempfile::TempDir,
}

impl PamDir {
    /// A directory whose pam_matrix password file gives `USER` the right password for
    /// `service`.
    pub fn new(service: &str) -> PamDir {
        let pam = PamDir {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::write(pam.passdb(), format!("{USER}:{RIGHT_PASSWORD}:{service}\n"))
            .expect("write passdb");
        pam
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where service files go (the PAM_WRAPPER_SERVICE_DIR).
    pub fn services(&self) -> PathBuf {
        let dir = self.dir.path().join("pam.d");
        std::fs::create_dir_all(&dir).expect("create service dir");
        dir
    }

    pub fn passdb(&self) -> PathBuf {
        self.dir.path().join("passdb")
    }

    /// Writes a service (or substack / include) file and returns its absolute path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.services().join(name);
        std::fs::write(&path, text).expect("write service file");
        path
    }

    /// The stand-in strong factor: a file holding only pam_matrix.
    pub fn write_stepup(&self, name: &str) -> PathBuf {
        self.write(
            name,
            &format!(
                "auth required {PAM_MATRIX} passdb={}\n",
                self.passdb().display()
            ),
        )
    }

    /// The canonical stack of DESIGN §5 with `habitus_args` on both module lines.
    pub fn write_canonical(&self, service: &str, habitus_args: &str) {
        let stepup = self.write_stepup(&format!("{service}-stepup"));
        let module = module_path().display().to_string();
        self.write(
            service,
            &format!(
                "auth [success=1 default=ignore] {module} {habitus_args}\n\
                 auth substack {stepup}\n\
                 auth required {PAM_PERMIT}\n\
                 account required {PAM_PERMIT}\n\
                 session optional {module} {habitus_args}\n\
                 session required {PAM_PERMIT}\n",
                stepup = stepup.display()
            ),
        );
    }
}

/// The module arguments pointing at `socket` with the test deadline, plus `extra`.
pub fn habitus_args(socket: &Path, extra: &str) -> String {
    format!(
        "socket={} timeout_ms={TIMEOUT_MS} debug {extra}",
        socket.display()
    )
}

/// A socket path in a fresh directory where no daemon listens.
pub fn absent_socket() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("habitusd.sock");
    (dir, socket)
}

/// One pamtester run.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Whether the strong factor asked for the password.
    pub fn prompted(&self) -> bool {
        self.stderr.contains(PASSWORD_PROMPT) || self.stdout.contains(PASSWORD_PROMPT)
    }

    /// The Habitus lines shown to the user through the conversation.
    pub fn habitus_messages(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("Habitus:"))
            .collect()
    }
}

/// pam_wrapper 1.1.4 copies the service directory to the first free `/tmp/pam.X`; two
/// pamtester processes starting at once race for the same name ("Failed to create
/// pam_wrapper config dir ... File exists") and then load no modules. Runs are therefore
/// serialised across threads and processes with an exclusive `flock`.
pub fn wrapper_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("habitus-pam-wrapper.lock"))
        .expect("open the pam_wrapper lock file");
    // SAFETY: flock on a descriptor owned by `file`; released when it is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

/// Runs `pamtester -v [-I item]... SERVICE alice OPERATION...` under pam_wrapper with
/// `stdin` as the typed answer, and prints how long it took.
pub fn pamtester(
    pam: &PamDir,
    service: &str,
    operations: &[&str],
    items: &[&str],
    stdin: &str,
) -> Run {
    let _serial = wrapper_lock();
    let mut command = Command::new("pamtester");
    command
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", pam.services())
        // 2: pam_syslog lines (the module's log) appear on stderr.
        .env("PAM_WRAPPER_DEBUGLEVEL", "2")
        .arg("-v");
    for item in items {
        command.args(["-I", item]);
    }
    command
        .arg(service)
        .arg(USER)
        .args(operations)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("run pamtester (is it installed?)");
    if let Some(mut input) = child.stdin.take() {
        // The module may finish without reading: a broken pipe is expected then.
        let _ = input.write_all(format!("{stdin}\n").as_bytes());
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // A watchdog: a hung module must fail the test, not hang it.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait pamtester") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break child.wait().expect("wait killed pamtester");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = started.elapsed();
    let run = Run {
        success: status.success(),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        took,
    };
    println!(
        "pamtester {service} {} ({stdin}): {} in {:.1} ms",
        operations.join(" "),
        if run.success { "success" } else { "failure" },
        took.as_secs_f64() * 1000.0
    );
    run
}
