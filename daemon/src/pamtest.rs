//! Runs a real PAM stack without touching `/etc/pam.d`: `pamtester` under cwrap's
//! `pam_wrapper`, with one private service directory, `pam_habitus.so` in front and
//! `pam_matrix.so` (a password file) standing in for the strong factor.
//!
//! Used by `habitus demo` and the end-to-end tests. Needs the Debian packages
//! `pamtester` and `libpam-wrapper`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian puts the cwrap pieces and the stock modules.
const WRAPPER_LIB: &str = "libpam_wrapper.so";
const MODULE_DIRS: [&str; 2] = [
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

/// pam_wrapper 1.1.4 copies the service directory to the first free `/tmp/pam.X`, and
/// two processes starting at once race for the same name ("Failed to create pam_wrapper
/// config dir ... File exists", and then no modules load). So pamtester runs one at a
/// time, across processes: an exclusive `flock` on a shared lock file.
struct WrapperLock(#[allow(dead_code)] std::fs::File); // held for its lock

impl WrapperLock {
    fn acquire() -> Result<WrapperLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("habitus-pam-wrapper.lock"))
            .context("opening the pam_wrapper lock file")?;
        // SAFETY: flock on a descriptor this function owns; released when it closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking the pam_wrapper lock file: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(WrapperLock(file))
    }
}

/// A private PAM configuration (substack by absolute path: libpam resolves relative
/// names against `/etc/pam.d` even under pam_wrapper): service `habitus-test` =
/// `pam_habitus.so` → `substack habitus-stepup` (pam_matrix) → `pam_permit`.
pub struct PamHarness {
    dir: PathBuf,
    pub service: String,
}

/// One `pam_authenticate` through pamtester.
#[derive(Debug)]
pub struct PamOutcome {
    pub success: bool,
    /// pamtester's output plus every conversation line (prompts and info texts).
    pub output: String,
    pub elapsed: Duration,
}

impl PamOutcome {
    /// True when the strong factor asked for the password.
    pub fn prompted(&self) -> bool {
        self.output.contains("Password:")
    }
}

impl PamHarness {
    /// Whether pamtester and pam_wrapper are installed; `Err` says what to install.
    pub fn available() -> Result<()> {
        let pamtester = Command::new("pamtester")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if pamtester.is_err() {
            bail!("pamtester is not installed (apt-get install -y pamtester libpam-wrapper)");
        }
        if find(&MODULE_DIRS, "pam_matrix.so").is_none() {
            bail!("pam_wrapper is not installed (apt-get install -y libpam-wrapper)");
        }
        Ok(())
    }

    /// Writes the service files into `dir`. `module_options` follow `pam_habitus.so`;
    /// `passwords`: `(user, password)` pairs the strong factor accepts.
    pub fn new(
        dir: &Path,
        pam_habitus: &Path,
        module_options: &str,
        passwords: &[(&str, &str)],
    ) -> Result<PamHarness> {
        PamHarness::available()?;
        let matrix = find(&MODULE_DIRS, "pam_matrix.so").context("pam_matrix.so")?;
        let permit = find(&SECURITY_DIRS, "pam_permit.so").context("pam_permit.so not found")?;
        std::fs::create_dir_all(dir)?;
        let passdb = dir.join("passdb");
        let service = "habitus-test".to_string();
        let mut db = String::new();
        for (user, password) in passwords {
            db.push_str(&format!("{user}:{password}:{service}\n"));
        }
        std::fs::write(&passdb, db)?;
        // The canonical stack of DESIGN.md §5 and examples/pam.d/sudo.
        std::fs::write(
            dir.join(&service),
            format!(
                "auth [success=1 default=ignore] {} {module_options}\n\
                 auth substack {}\n\
                 auth required {}\n\
                 account required {}\n\
                 session optional {} {module_options}\n",
                pam_habitus.display(),
                dir.join("habitus-stepup").display(),
                permit.display(),
                permit.display(),
                pam_habitus.display(),
            ),
        )?;
        // No `verbose`: pam_matrix 1.1.x crashes (SIGSEGV) printing its verbose message.
        std::fs::write(
            dir.join("habitus-stepup"),
            format!(
                "auth required {} passdb={}\n",
                matrix.display(),
                passdb.display()
            ),
        )?;
        Ok(PamHarness {
            dir: dir.to_path_buf(),
            service,
        })
    }

    /// Runs `pamtester -v SERVICE USER OPERATIONS…` with `stdin` as the typed input.
    pub fn run(&self, user: &str, operations: &[&str], stdin: &str) -> Result<PamOutcome> {
        self.run_with_env(user, operations, stdin, &[])
    }

    /// [`PamHarness::run`] with extra environment variables for pamtester.
    pub fn run_with_env(
        &self,
        user: &str,
        operations: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
    ) -> Result<PamOutcome> {
        self.run_full(user, operations, stdin, env, &[])
    }

    /// [`PamHarness::run`] with PAM items set before the operations (`("tty",
    /// "/dev/tty2")`, `("rhost", …)`: pamtester's `-I item=value`).
    pub fn run_with_items(
        &self,
        user: &str,
        operations: &[&str],
        stdin: &str,
        items: &[(&str, &str)],
    ) -> Result<PamOutcome> {
        self.run_full(user, operations, stdin, &[], items)
    }

    fn run_full(
        &self,
        user: &str,
        operations: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
        items: &[(&str, &str)],
    ) -> Result<PamOutcome> {
        let _serial = WrapperLock::acquire()?;
        let start = Instant::now();
        let mut command = Command::new("pamtester");
        // Its own session, without a controlling terminal: habitusd places a caller by
        // its terminal, and the test runner's (a console, a pseudo-terminal or none)
        // must not decide a test.
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = command
            .arg("-v")
            .args(
                items
                    .iter()
                    .flat_map(|(item, value)| ["-I".to_string(), format!("{item}={value}")]),
            )
            .arg(&self.service)
            .arg(user)
            .args(operations)
            .env("LD_PRELOAD", WRAPPER_LIB)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", &self.dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting pamtester")?;
        if let Some(mut input) = child.stdin.take() {
            // A closed pipe just means pamtester asked for nothing.
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output()?;
        let elapsed = start.elapsed();
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(PamOutcome {
            success: out.status.success(),
            output,
            elapsed,
        })
    }

    /// `pam_authenticate` for `user`, typing `password` if asked.
    pub fn authenticate(&self, user: &str, password: &str) -> Result<PamOutcome> {
        self.run(user, &["authenticate"], &format!("{password}\n"))
    }
}
