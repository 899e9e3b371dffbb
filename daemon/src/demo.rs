//! `habitus demo`: the whole path on one machine, in a temporary directory.
//!
//! 1. Starts habitusd with a private socket, store and secrets (no evdev: the input is
//!    replayed, so the demo behaves the same on any machine).
//! 2. Enrols `alice` from recorded typing: Aalto participant A's sentences 1–10, or a
//!    synthetic typist when the data set is absent.
//! 3. Opens a session for alice, replays A's *other* sentences (11–15) into it, and runs
//!    `sudo`'s stack (pam_habitus.so → substack with a password → pam_permit) through
//!    pamtester: trusted behaviour skips the password.
//! 4. Opens a fresh session and replays participant B typing as alice: behaviour drifts
//!    and the same stack asks for the password (right one passes, wrong one fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use habitus::client::call;
use habitus::pamtest::PamHarness;
use habitus::replay;
use habitus_protocol::{RequestBody, ResponseBody, WireEvent};

use crate::admin::print_status;

#[derive(Args)]
pub struct DemoArgs {
    /// The Aalto 136M-keystrokes subset (default: ../shared/datasets/aalto-136m-subset,
    /// and synthetic typists when that is missing; a folder given here must hold it).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Keep the demo's files (config, store, replays, log) here instead of a temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Kills habitusd when the demo ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Recordings {
    source: String,
    /// Other people's typing, for the population model (empty for synthetic data).
    others: Vec<Vec<WireEvent>>,
    enrol: Vec<WireEvent>,
    genuine: Vec<WireEvent>,
    impostor: Vec<WireEvent>,
}

/// Where the demo looks for the Aalto subset unless `--data` is given.
const DEFAULT_DATA: &str = "../shared/datasets/aalto-136m-subset";

/// The typing the demo replays. `explicit`: the folder was named with `--data`, so
/// falling back to synthetic typists would hide a typo.
fn recordings(data: &Path, explicit: bool) -> Result<Recordings> {
    let dir = data.join("keystrokes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().contains("_keystrokes.txt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.len() >= 2 {
        let a = &files[0];
        let b = &files[1];
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let others = habitus::population::aalto_people(&files[2..], 100).unwrap_or_default();
        return Ok(Recordings {
            others,
            source: format!(
                "Aalto 136M keystrokes: alice = {} (sentences 1-10 enrol, 11-15 live), impostor = {} (sentences 11-15)",
                name(a),
                name(b)
            ),
            enrol: replay::from_aalto(a, 0..10)?,
            genuine: replay::from_aalto(a, 10..15)?,
            impostor: replay::from_aalto(b, 10..15)?,
        });
    }
    if explicit {
        bail!(
            "--data {}: no Aalto keystroke files there (at least two keystrokes/*_keystrokes.txt[.gz] are needed)",
            data.display()
        );
    }
    println!(
        "note: {} not found; using synthetic typists instead (pass --data DIR, the aalto-136m-subset folder, to use real typing)",
        data.display()
    );
    Ok(Recordings {
        others: Vec::new(),
        source: "synthetic typists (alice: 95 ms holds, 190 ms gaps; impostor: 140 ms, 260 ms)"
            .into(),
        enrol: replay::synthetic_typist(600, 95.0, 190.0, 1),
        genuine: replay::synthetic_typist(300, 95.0, 190.0, 2),
        impostor: replay::synthetic_typist(300, 140.0, 260.0, 3),
    })
}

fn ingest(socket: &Path, user: &str, events: &[WireEvent]) -> Result<()> {
    for batch in events.chunks(200) {
        let reply = call(
            socket,
            RequestBody::Ingest {
                user: user.into(),
                events: batch.to_vec(),
            },
            Duration::from_secs(10),
        )?;
        if let ResponseBody::Done { message } = reply {
            println!("  ingest: {message}");
        }
    }
    Ok(())
}

fn session(socket: &Path, user: &str, open: bool) -> Result<()> {
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
    call(socket, body, Duration::from_secs(5))?;
    Ok(())
}

fn show_status(socket: &Path, user: &str) -> Result<()> {
    if let ResponseBody::Status { users } = call(
        socket,
        RequestBody::Status {
            user: Some(user.into()),
        },
        Duration::from_secs(5),
    )? {
        print_status(&users)?;
    }
    Ok(())
}

fn pam_step(harness: Option<&PamHarness>, user: &str, password: &str, label: &str) -> Result<bool> {
    let Some(h) = harness else {
        return Ok(false);
    };
    let outcome = h.authenticate(user, password)?;
    println!(
        "  sudo stack, typing {label}: {} in {:.1} ms{}",
        if outcome.success {
            "AUTHENTICATED"
        } else {
            "DENIED"
        },
        outcome.elapsed.as_secs_f64() * 1000.0,
        if outcome.prompted() {
            " (the strong factor asked for the password)"
        } else {
            " (no password asked)"
        }
    );
    for line in outcome.output.lines().filter(|l| l.contains("Habitus")) {
        println!("    pam_habitus says: {}", line.trim());
    }
    Ok(outcome.success && !outcome.prompted())
}

pub fn run(args: DemoArgs) -> Result<()> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("cannot locate the habitus executable's directory")?;
    let habitusd = exe_dir.join("habitusd");
    let module = exe_dir.join("libpam_habitus.so");
    if !habitusd.exists() {
        bail!(
            "{} is missing: build the workspace first (cargo build --release --workspace)",
            habitusd.display()
        );
    }
    // Read first: a bad --data is refused before anything is started.
    let rec = match &args.data {
        Some(data) => recordings(data, true)?,
        None => recordings(Path::new(DEFAULT_DATA), false)?,
    };
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("--dir {}: cannot create the directory", d.display()))?;
            d.clone()
        }
        None => {
            temp = habitus::scratch::ScratchDir::new("habitus-demo")?;
            temp.0.clone()
        }
    };
    let socket = dir.join("habitusd.sock");
    let config = dir.join("habitusd.toml");
    // alice is a replay, not someone logged in here: this machine's logind records
    // (whose session is in front, who is logged in remotely) are not hers, so the demo's
    // daemon is pointed at none.
    let no_logind = dir.join("no-logind");
    std::fs::write(
        &config,
        format!(
            "version = 1\nsocket = {:?}\ndatabase = {:?}\nsecrets = {:?}\nplugin_dir = {:?}\n\n[input]\nevdev = false\nlogind_seat = {:?}\nlogind_sessions = {:?}\n",
            socket,
            dir.join("profiles.sqlite"),
            dir.join("secrets.key"),
            exe_dir,
            no_logind.join("seat0"),
            no_logind.join("sessions"),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;

    println!("== 1. habitusd");
    let log = std::fs::File::create(dir.join("habitusd.log"))
        .with_context(|| format!("creating {}", dir.join("habitusd.log").display()))?;
    let child = Command::new(&habitusd)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", habitusd.display()))?;
    let _daemon = Daemon(child);
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "habitusd did not start; its log: {}",
                std::fs::read_to_string(dir.join("habitusd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "  running, socket {} (files in {})",
        socket.display(),
        dir.display()
    );

    if !rec.others.is_empty() {
        // What `habitus population build` does on an installation.
        let secrets = habitus_engine::Secrets::load_or_create(&dir.join("secrets.key"))?;
        let mut store = habitus_engine::ProfileStore::open(&dir.join("profiles.sqlite"), &secrets)?;
        let library =
            habitus_engine::PluginLibrary::load(&exe_dir.join("libhabitus_keystroke.so"))?;
        let plugin = library.instantiate("mode = \"free\"")?;
        let blob = habitus::population::build(&plugin, &rec.others, &secrets.key_hasher(), 100)?;
        store.put_population("keystroke", &blob)?;
        println!(
            "  population model from {} other Aalto participants installed",
            rec.others.len()
        );
    }
    println!("\n== 2. enrol alice\n  data: {}", rec.source);
    match call(
        &socket,
        RequestBody::Enroll {
            user: "alice".into(),
            events: rec.enrol.clone(),
        },
        Duration::from_secs(60),
    )? {
        ResponseBody::Done { message } => println!("  {message}"),
        other => bail!("unexpected reply: {other:?}"),
    }

    // pam_habitus.so believes only a daemon running as root, on a root-owned socket.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("  note: not running as root, so pam_habitus.so will (rightly) distrust this habitusd and always ask for the password; run `sudo habitus demo` to see the skip");
    }
    let harness = match PamHarness::new(
        &dir.join("pam.d"),
        &module,
        &format!("socket={} timeout_ms=300", socket.display()),
        &[("alice", "correct horse")],
    ) {
        Ok(h) if module.exists() => Some(h),
        Ok(_) => {
            println!("  ({} missing: PAM steps skipped)", module.display());
            None
        }
        Err(e) => {
            println!("  (PAM steps skipped: {e})");
            None
        }
    };

    println!("\n== 3. alice types (her sentences not used for enrolment)");
    session(&socket, "alice", true)?;
    ingest(&socket, "alice", &rec.genuine)?;
    show_status(&socket, "alice")?;
    let genuine_ok = pam_step(harness.as_ref(), "alice", "", "no password")?;
    session(&socket, "alice", false)?;

    println!("\n== 4. someone else types at alice's session");
    session(&socket, "alice", true)?;
    ingest(&socket, "alice", &rec.impostor)?;
    show_status(&socket, "alice")?;
    let _ = pam_step(harness.as_ref(), "alice", "wrong guess", "a wrong password")?;
    let _ = pam_step(
        harness.as_ref(),
        "alice",
        "correct horse",
        "alice's password",
    )?;
    session(&socket, "alice", false)?;

    println!();
    if harness.is_some() {
        println!(
            "genuine behaviour {} the step-up; see {} for habitusd's log",
            if genuine_ok {
                "skipped"
            } else {
                "did NOT skip"
            },
            dir.join("habitusd.log").display()
        );
    }
    Ok(())
}
