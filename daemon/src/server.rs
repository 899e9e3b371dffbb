//! The socket server and the input sources around [`Core`].
//!
//! A single-threaded tokio runtime: scoring a window takes microseconds and the store
//! is touched only on enrolment and (rate-limited) adaptation, so one thread answers
//! PAM in well under a millisecond and there is no lock contention to reason about.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use habitus_engine::loader::{default_plugin_dirs, find_plugin};
use habitus_engine::{ProfileStore, Secrets};
use habitus_protocol::{
    decode_request, encode, error_reply, frame_len, ErrorKind, ProtocolError, RequestBody,
    Response, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::core::{log, Core, ModalityPlugin};
use crate::peer::Peer;

/// A client may stay connected and silent this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a frame's first byte arrived, the rest of it must follow within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; beyond that a client gets a "busy" error at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections one non-root uid may hold at once, so that one local user cannot take
/// every slot (root's, such as pam_habitus.so inside sudo, are not capped).
const MAX_CONNECTIONS_PER_UID: usize = 8;
/// A reply must be taken by the client within this time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events per batch when a replay source feeds the core.
const REPLAY_BATCH: usize = 20;

type SharedCore = Arc<Mutex<Core>>;
type UidCounts = Arc<Mutex<std::collections::HashMap<u32, usize>>>;

/// Holds one of a uid's connection slots; released on drop.
struct UidSlot {
    counts: UidCounts,
    uid: u32,
}

impl UidSlot {
    fn take(counts: &UidCounts, uid: u32) -> Option<UidSlot> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(uid).or_insert(0);
        if uid != 0 && *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            counts: counts.clone(),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

fn lock(core: &SharedCore) -> MutexGuard<'_, Core> {
    // A panic while holding the lock cannot leave Core half-updated in a way that
    // matters more than stopping would: keep serving.
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// Loads plugins, opens the store and builds the core.
pub fn build_core(config: &Config) -> Result<Core> {
    let secrets = Secrets::load_or_create(&config.secrets)
        .with_context(|| "loading the installation secrets")?;
    let store = ProfileStore::open(&config.database, &secrets)
        .with_context(|| "opening the profile store")?;
    let plugins = load_plugins(config)?;
    Ok(Core::new(
        config.clone(),
        plugins,
        store,
        secrets.key_hasher(),
    ))
}

/// Loads every configured plugin library and instantiates it with its settings: what
/// start-up does, and what `habitusd --check-config` checks (so a missing plugin or
/// settings it refuses fail the check, not the next start).
pub fn load_plugins(config: &Config) -> Result<Vec<ModalityPlugin>> {
    let dirs = match &config.plugin_dir {
        Some(d) => vec![d.clone()],
        None => default_plugin_dirs(),
    };
    let mut plugins = Vec::new();
    for (name, pc) in &config.plugins {
        let library = find_plugin(&dirs, name).map_err(anyhow::Error::msg)?;
        let instance = library
            .instantiate(&pc.settings)
            .with_context(|| format!("plugin {name}: settings refused"))?;
        let window_events = config
            .session
            .window_events
            .get(name)
            .copied()
            .unwrap_or(50)
            .max(1);
        log::info(&format!(
            "plugin {name} {} from {}",
            library.descriptor.version,
            library.path.display()
        ));
        plugins.push(ModalityPlugin {
            name: name.clone(),
            instance: Arc::new(instance),
            window_events,
            enrol_windows: pc.enrol_windows,
        });
    }
    Ok(plugins)
}

/// One habitusd per profile store: a second one (another socket, the same database)
/// would keep its own live sessions, learners and daily adaptation counts for the same
/// users, and both would enrol and adapt their profiles. An exclusive `flock` on
/// `DATABASE.lock` (not on the database itself, whose locking is SQLite's) refuses the
/// second at start-up; `habitus population build` and other one-off writers do not take
/// it, and SQLite orders their writes.
pub fn lock_store(database: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // As the store itself would create it (0700); taken before the store is opened.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the store lock {}", path.display()))?;
    // SAFETY: the descriptor is open for the call's duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "another habitusd is already using {} (it holds {}): stop it first, or give this one another database",
                database.display(),
                path.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

/// Binds the socket: parent directory created 0755, a stale socket replaced, anything
/// else at the path refused, the new socket 0666 (requests are authorised per peer).
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating socket directory {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        // Another user able to write the directory could swap the socket for a link
        // between bind and chmod, or stand up their own socket later.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid || meta.mode() & 0o022 != 0 {
            bail!(
                "socket directory {} must be owned by uid {euid} and writable by nobody else (owner {}, mode {:o})",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another habitusd is already listening on {}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Runs habitusd until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    // First, before secrets, store or plugins are touched; held until the process ends
    // (the kernel drops the lock with it).
    let _store_lock = lock_store(&config.database)?;
    let core = build_core(&config)?;
    let listener = bind_socket(&config.socket)?;
    let clock = core.clock();
    let hasher = core.key_hasher();
    let core: SharedCore = Arc::new(Mutex::new(core));

    let (device_tx, mut device_rx) = tokio::sync::mpsc::channel(1024);
    if config.input.evdev {
        crate::evdev::spawn(config.input.evdev_dir.clone(), hasher, clock, device_tx);
    } else {
        drop(device_tx);
    }
    let device_core = core.clone();
    tokio::spawn(async move {
        while let Some(events) = device_rx.recv().await {
            lock(&device_core).device_events(&events);
        }
    });
    // Remote logind sessions are looked for every 2 s, so that one that ends before any
    // `assess` still keeps its user "remote" for `input.remote_hold_s`.
    let remote_core = core.clone();
    let sessions_dir = config.input.logind_sessions.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            every.tick().await;
            let (core, dir) = (remote_core.clone(), sessions_dir.clone());
            // Reads a directory of small files: off the async threads, and before taking
            // the core.
            let _ = tokio::task::spawn_blocking(move || {
                let users = crate::peer::remote_session_users(&dir);
                lock(&core).note_remote_users(&users);
            })
            .await;
        }
    });
    for source in config.replay.clone() {
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(e) = replay_source(&core, &source.user, &source.file, source.speed).await {
                log::error(&format!("replay {}: {e:#}", source.file.display()));
            }
        });
    }

    log::info(&format!("listening on {}", config.socket.display()));
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_uid: UidCounts = Arc::default();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        log::error(&format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    // Full: say so at once rather than stall the accept loop.
                    tokio::spawn(refuse_busy(stream));
                    continue;
                };
                let (core, per_uid) = (core.clone(), per_uid.clone());
                tokio::spawn(async move {
                    connection(stream, core, per_uid).await;
                    drop(permit);
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    log::info("stopped");
    Ok(())
}

/// Serves one client: frames in, frames out, until it hangs up, goes idle or breaks
/// the framing. Every undecodable request gets an error reply, never silence.
async fn refuse_busy(mut stream: UnixStream) {
    let reply = Response::error(
        ErrorKind::Internal,
        "habitusd is busy: too many connections",
    );
    let _ = tokio::time::timeout(Duration::from_millis(200), send(&mut stream, &reply)).await;
}

async fn connection(mut stream: UnixStream, core: SharedCore, per_uid: UidCounts) {
    let peer = match stream.peer_cred() {
        Ok(cred) => {
            let (uid, pid) = (cred.uid(), cred.pid().map(|p| p as u32));
            // NSS (LDAP, sssd) may block: never on the runtime thread.
            match tokio::task::spawn_blocking(move || Peer::from_cred(uid, pid)).await {
                Ok(peer) => peer,
                Err(_) => return,
            }
        }
        Err(e) => {
            log::error(&format!("peer credentials unavailable: {e}"));
            return;
        }
    };
    let Some(_slot) = UidSlot::take(&per_uid, peer.uid) else {
        let reply = Response::error(
            ErrorKind::PermissionDenied,
            format!(
                "uid {} already holds {MAX_CONNECTIONS_PER_UID} connections",
                peer.uid
            ),
        );
        let _ = tokio::time::timeout(WRITE_TIMEOUT, send(&mut stream, &reply)).await;
        return;
    };
    // A stale client (typically a pam_habitus.so built before the last protocol change)
    // is otherwise only "behaviour check unavailable" on its side: say why here, once
    // per connection so a retrying client cannot flood the log.
    let mut version_logged = false;
    loop {
        let mut header = [0u8; 4];
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut header[..1])).await {
            Ok(Ok(_)) => {}
            _ => return, // closed, broken or idle
        }
        // A frame has started: the rest of it, length prefix included, must arrive by one
        // deadline (a client that sends two bytes of a prefix must not hold the slot for
        // the idle time).
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut header[1..])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = match frame_len(header) {
            Ok(n) => n,
            Err(e) => {
                // The stream cannot be resynchronised after a bad length: answer, close.
                // Bounded like every other write: a client that never reads must not
                // hold this task (and its connection slot) forever.
                let _ =
                    tokio::time::timeout(WRITE_TIMEOUT, send(&mut stream, &error_reply(&e))).await;
                return;
            }
        };
        // Grown as bytes arrive, so a header announcing 4 MiB costs nothing until the
        // client actually sends them.
        let mut body = Vec::new();
        let mut limited = (&mut stream).take(len as u64);
        match tokio::time::timeout_at(deadline, limited.read_to_end(&mut body)).await {
            Ok(Ok(n)) if n == len => {}
            _ => return,
        }
        let response = match decode_request(&body) {
            // Off the runtime's threads: a request may look up accounts through NSS
            // (LDAP, sssd), which can block, and read /proc.
            Ok(request) => {
                let (core, peer) = (core.clone(), peer.clone());
                match tokio::task::spawn_blocking(move || lock(&core).handle(&peer, request.body))
                    .await
                {
                    Ok(response) => response,
                    Err(_) => return,
                }
            }
            Err(e) => {
                if let ProtocolError::UnsupportedVersion { found } = e {
                    if !version_logged {
                        version_logged = true;
                        log::warn(&version_refusal(&peer, found));
                    }
                }
                error_reply(&e)
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, send(&mut stream, &response)).await {
            Ok(Ok(())) => {}
            _ => return, // a client that does not read its replies loses its slot
        }
    }
}

/// The log line for a request in another protocol version.
fn version_refusal(peer: &Peer, found: u64) -> String {
    format!(
        "refused a request from uid {}{}: the peer speaks protocol version {found}, this daemon speaks {PROTOCOL_VERSION}: rebuild/reinstall pam_habitus.so (or the habitus command line, habitus-oidc) from the same release as habitusd",
        peer.uid,
        peer.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )
}

async fn send(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let frame = match encode(response) {
        Ok(f) => f,
        Err(e) => encode(&Response::error(ErrorKind::Internal, e.to_string()))
            .map_err(std::io::Error::other)?,
    };
    stream.write_all(&frame).await
}

/// Feeds a replay file as if its user were typing now (at `speed` × recorded pace).
async fn replay_source(core: &SharedCore, user: &str, file: &Path, speed: f64) -> Result<()> {
    let events = crate::replay::read(file)?;
    log::info(&format!(
        "replaying {} events of {user} from {}",
        events.len(),
        file.display()
    ));
    let peer = Peer::root();
    for batch in events.chunks(REPLAY_BATCH) {
        let response = lock(core).handle(
            &peer,
            RequestBody::Ingest {
                user: user.to_string(),
                events: batch.to_vec(),
            },
        );
        if let habitus_protocol::ResponseBody::Error { message, .. } = response.body {
            bail!("{message}");
        }
        if speed > 0.0 {
            if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
                let span = (last.t_us - first.t_us) as f64 / speed;
                tokio::time::sleep(Duration::from_micros(span as u64)).await;
            }
        }
    }
    Ok(())
}
