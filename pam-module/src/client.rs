//! One request/response round trip with habitusd under a single hard deadline.
//!
//! Every step that can block (connect, write, each read) gets only the time that is left
//! of one overall deadline, so a hung, slow or malicious daemon can delay a login by at
//! most `timeout_ms` before the stack moves on to the strong factor.
//!
//! The daemon is authenticated by the kernel, not by the path alone: the socket file must
//! be a socket owned by root (so nobody else can have created it), and after connecting
//! the peer's credentials (`SO_PEERCRED`) must say uid 0 (so nobody else is listening
//! behind it, whatever happened to the path in between).

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use habitus_protocol::{ProtocolError, Request, Response};

/// The only uid habitusd may run as.
const DAEMON_UID: u32 = 0;

/// Why no usable answer came back. Every variant leads to `PAM_IGNORE`; they differ in
/// what the log tells the administrator to look at.
#[derive(Debug)]
pub enum ClientError {
    /// The socket path does not exist or cannot be examined: is habitusd running?
    SocketMissing(io::Error),
    /// Something other than a socket is at the path.
    NotASocket,
    /// The socket file is not owned by root: someone else may be impersonating habitusd.
    SocketOwner(u32),
    /// The path does not fit in a `sockaddr_un`.
    PathTooLong,
    Connect(io::Error),
    /// The peer's credentials could not be read.
    PeerCredentials(io::Error),
    /// The process behind the socket is not root.
    PeerUid(u32),
    /// The deadline passed before the answer was complete.
    Timeout,
    /// Reading, writing or decoding failed (EOF, garbage, another protocol version).
    Protocol(ProtocolError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::SocketMissing(e) => write!(f, "socket unavailable: {e}"),
            ClientError::NotASocket => write!(f, "socket path is not a socket"),
            ClientError::SocketOwner(uid) => write!(f, "socket owned by uid {uid}"),
            ClientError::PathTooLong => write!(f, "socket path too long"),
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::PeerCredentials(e) => write!(f, "peer credentials: {e}"),
            ClientError::PeerUid(uid) => write!(f, "daemon runs as uid {uid}, not root"),
            ClientError::Timeout => write!(f, "no answer before the deadline"),
            ClientError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> ClientError {
        match e {
            ProtocolError::Io(io) if is_timeout(&io) => ClientError::Timeout,
            other => ClientError::Protocol(other),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Sends `request` to the daemon at `socket` and returns its decoded answer, all within
/// `timeout`.
pub fn round_trip(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let deadline = Instant::now() + timeout;
    check_socket_file(socket)?;
    let stream = connect(socket, deadline)?;
    let peer = peer_uid(&stream).map_err(ClientError::PeerCredentials)?;
    if peer != DAEMON_UID {
        return Err(ClientError::PeerUid(peer));
    }
    let mut stream = DeadlineStream { stream, deadline };
    habitus_protocol::write_message(&mut stream, request)?;
    let body = habitus_protocol::read_frame(&mut stream)?;
    Ok(habitus_protocol::decode_response(&body)?)
}

/// `lstat`: the path itself (not a symlink target) must be a root-owned socket.
fn check_socket_file(socket: &Path) -> Result<(), ClientError> {
    let meta = std::fs::symlink_metadata(socket).map_err(ClientError::SocketMissing)?;
    if !meta.file_type().is_socket() {
        return Err(ClientError::NotASocket);
    }
    if meta.uid() != DAEMON_UID {
        return Err(ClientError::SocketOwner(meta.uid()));
    }
    Ok(())
}

/// Time left before `deadline`, or `Timeout` if none is.
fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ClientError::Timeout)
}

/// `connect(2)` bounded by the deadline. std's `UnixStream::connect` has no timeout, and a
/// unix-socket connect blocks when the daemon's accept backlog is full (a hung daemon);
/// Linux bounds that wait by the socket's send timeout, so set it first.
fn connect(socket: &Path, deadline: Instant) -> Result<UnixStream, ClientError> {
    let path = socket.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(ClientError::PathTooLong);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(ClientError::Connect(io::Error::last_os_error()));
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let stream = UnixStream::from(fd);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(ClientError::Connect)?;
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    loop {
        // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
        let rc = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {
                remaining(deadline)?;
            }
            _ if is_timeout(&err) => return Err(ClientError::Timeout),
            _ => return Err(ClientError::Connect(err)),
        }
    }
}

/// The uid of the process that created the listening socket (`SO_PEERCRED`).
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PEERCRED answer",
        ));
    }
    Ok(cred.uid)
}

/// A stream whose every read and write may only use the time left before `deadline`
/// (a daemon dripping one byte at a time cannot stretch the wait).
struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn time_left(&self) -> io::Result<Duration> {
        remaining(self.deadline).map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.time_left()?))?;
        self.stream.read(buf)
    }
}

impl Write for DeadlineStream {
    /// `send(MSG_NOSIGNAL)`, not `write(2)`: if habitusd hangs up first, a plain write
    /// would raise SIGPIPE, whose default action kills the host program (sudo, login) -
    /// Rust only ignores SIGPIPE in Rust executables, not in a library loaded by C.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.time_left()?))?;
        loop {
            // SAFETY: buf is valid for buf.len() bytes; the fd is owned by self.stream.
            let sent = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if sent >= 0 {
                return Ok(sent as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            self.time_left()?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use habitus_protocol::RequestBody;
    use std::os::unix::net::UnixListener;

    fn assess() -> Request {
        Request::new(RequestBody::Assess {
            user: "alice".into(),
            tty: None,
        })
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pam-habitus-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_socket_and_non_sockets_are_refused() {
        let dir = temp_dir("missing");
        let sock = dir.join("s");
        assert!(matches!(
            round_trip(&sock, &assess(), Duration::from_millis(50)),
            Err(ClientError::SocketMissing(_))
        ));
        std::fs::write(&sock, b"").unwrap();
        assert!(matches!(
            round_trip(&sock, &assess(), Duration::from_millis(50)),
            Err(ClientError::NotASocket)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SIGPIPE_CHILD_ENV: &str = "PAM_HABITUS_TEST_SIGPIPE_CHILD";

    /// Runs in a child process with SIGPIPE at its default action (as in sudo, unlike a
    /// Rust test binary, which ignores it): writing to a hung-up daemon must return an
    /// error, not kill the process.
    #[test]
    fn writing_to_a_hung_up_daemon_does_not_raise_sigpipe() {
        if std::env::var_os(SIGPIPE_CHILD_ENV).is_some() {
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let (ours, theirs) = UnixStream::pair().unwrap();
            drop(theirs);
            let mut stream = DeadlineStream {
                stream: ours,
                deadline: Instant::now() + Duration::from_secs(1),
            };
            let err = stream.write_all(b"hello").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "client::tests::writing_to_a_hung_up_daemon_does_not_raise_sigpipe",
                "--test-threads=1",
            ])
            .env(SIGPIPE_CHILD_ENV, "1")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "child died: {status:?}");
    }

    #[test]
    fn silent_daemon_times_out_on_time() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (socket and daemon must be uid 0)");
            return;
        }
        let dir = temp_dir("silent");
        let sock = dir.join("s");
        let _listener = UnixListener::bind(&sock).unwrap();
        // Never accepted: connect succeeds (backlog), the read times out.
        let start = Instant::now();
        let result = round_trip(&sock, &assess(), Duration::from_millis(100));
        let took = start.elapsed();
        assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        assert!(took >= Duration::from_millis(90), "{took:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
