//! Installation secrets: the key that encrypts profiles at rest ([`crate::store`]) and the
//! secret that keys the key-id hash ([`crate::keyid`]).
//!
//! Both live in one small file of exactly [`Secrets::FILE_LEN`] raw bytes (32 store key, then
//! 16 key-id secret), created on first use from the operating system's random generator.
//! Why the checks are strict:
//!
//! - Whoever reads this file can decrypt every stored profile and match key ids back to key
//!   codes, so an existing file must be a regular file owned by the effective uid with no
//!   group/other permission bits. We refuse to start rather than keep using a leaked key, and
//!   the error says which `chmod`/`chown` to run.
//! - A symbolic link or a FIFO at the path is refused too (`O_NOFOLLOW | O_NONBLOCK`, then
//!   `fstat` on the opened descriptor, so what we check is what we read).
//! - Creation writes a complete temporary file (mode 0600) and then hard-links it into place.
//!   `link(2)` fails if the name exists, so two processes starting at once (daemon and CLI)
//!   both end up with the same secrets, and nobody ever reads a half-written file.
//! - The bytes are never printed: `Debug` is written by hand and redacts them.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::KeyHasher;

const STORE_KEY_LEN: usize = 32;
const KEY_ID_SECRET_LEN: usize = 16;

/// Installation secrets: the key that encrypts profiles at rest and the key-id hashing secret.
#[derive(Clone)]
pub struct Secrets {
    pub store_key: [u8; STORE_KEY_LEN],
    pub key_id_secret: [u8; KEY_ID_SECRET_LEN],
}

/// Why the secrets file could not be used. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot {action} secrets file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("secrets file {} is not safe to use: {found}; {fix}", path.display())]
    Permissions {
        path: PathBuf,
        /// What was found, e.g. "mode 0644, owner uid 1000".
        found: String,
        /// What to run or change.
        fix: String,
    },
    #[error(
        "secrets file {} is {len} bytes, expected {expected}: it is damaged or not a Habitus secrets file; restore it from backup (profiles encrypted with the lost key cannot be read)",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        len: u64,
        expected: usize,
    },
    #[error("cannot create secrets file {}: the system random generator failed ({reason}); retry once the system has entropy", path.display())]
    Random { path: PathBuf, reason: String },
}

impl Secrets {
    /// Length of the secrets file: 32 bytes of store key, then 16 bytes of key-id secret.
    pub const FILE_LEN: usize = STORE_KEY_LEN + KEY_ID_SECRET_LEN;

    /// Reads the secrets file (exactly 48 raw bytes: 32 store key, then 16 key-id secret).
    ///
    /// If the file does not exist it is created (and missing parent directories, mode 0700)
    /// with fresh random bytes, mode 0600, without races. An existing file must be a regular
    /// file owned by the effective uid with no group/other permission bits, else
    /// [`SecretsError::Permissions`]; a wrong length is [`SecretsError::Malformed`].
    pub fn load_or_create(path: &Path) -> Result<Secrets, SecretsError> {
        if let Some(secrets) = load_existing(path)? {
            return Ok(secrets);
        }
        create(path)?;
        // Whether we linked our file into place or lost the race to another process, the
        // file at `path` is now complete; read it through the same checks as always.
        match load_existing(path)? {
            Some(secrets) => Ok(secrets),
            None => Err(SecretsError::Io {
                action: "read",
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "the file disappeared right after it was created",
                ),
            }),
        }
    }

    /// The key-id hasher keyed with this installation's secret.
    pub fn key_hasher(&self) -> KeyHasher {
        KeyHasher::new(self.key_id_secret)
    }

    fn from_bytes(bytes: &[u8; Self::FILE_LEN]) -> Secrets {
        let mut store_key = [0u8; STORE_KEY_LEN];
        let mut key_id_secret = [0u8; KEY_ID_SECRET_LEN];
        store_key.copy_from_slice(&bytes[..STORE_KEY_LEN]);
        key_id_secret.copy_from_slice(&bytes[STORE_KEY_LEN..]);
        Secrets {
            store_key,
            key_id_secret,
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key material, not even partially.
        f.write_str("Secrets { store_key: <redacted>, key_id_secret: <redacted> }")
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        // Best effort: do not leave key material in freed memory. Volatile writes so the
        // compiler cannot drop the stores as dead.
        for byte in self
            .store_key
            .iter_mut()
            .chain(self.key_id_secret.iter_mut())
        {
            // SAFETY: `byte` is a valid, aligned, exclusive reference to a u8.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// Opens and validates an existing secrets file; `Ok(None)` if there is no file at `path`.
fn load_existing(path: &Path) -> Result<Option<Secrets>, SecretsError> {
    let io_err = |source| SecretsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut file = match OpenOptions::new()
        .read(true)
        // No symlinks; and a FIFO must not block us before we can see it is not a file.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SecretsError::Permissions {
                path: path.to_path_buf(),
                found: "a symbolic link".into(),
                fix: "replace the link with the file it points to (mode 0600)".into(),
            })
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    check_metadata(path, &meta)?;

    // Read at most one byte more than expected, so a huge file is not slurped.
    let mut bytes = Vec::with_capacity(Secrets::FILE_LEN + 1);
    (&mut file)
        .take(Secrets::FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let exact: &[u8; Secrets::FILE_LEN] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretsError::Malformed {
                path: path.to_path_buf(),
                len: meta.len().max(bytes.len() as u64),
                expected: Secrets::FILE_LEN,
            })?;
    let secrets = Secrets::from_bytes(exact);
    bytes.fill(0);
    Ok(Some(secrets))
}

fn check_metadata(path: &Path, meta: &fs::Metadata) -> Result<(), SecretsError> {
    let shown = path.display();
    if !meta.file_type().is_file() {
        return Err(SecretsError::Permissions {
            path: path.to_path_buf(),
            found: "not a regular file".into(),
            fix: format!("remove {shown} so a new one is created, or put the real file there"),
        });
    }
    let mode = meta.mode() & 0o7777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut fixes = Vec::new();
    if meta.uid() != euid {
        fixes.push(format!("chown {euid} {shown}"));
    }
    if mode & 0o077 != 0 {
        fixes.push(format!("chmod 600 {shown}"));
    }
    if fixes.is_empty() {
        return Ok(());
    }
    Err(SecretsError::Permissions {
        path: path.to_path_buf(),
        found: format!(
            "mode {mode:04o}, owner uid {}; it must be owned by uid {euid} with no group/other access",
            meta.uid()
        ),
        fix: format!(
            "run `{}` (and consider the key leaked if others could read it)",
            fixes.join(" && ")
        ),
    })
}

/// Creates the secrets file with fresh random bytes unless another process got there first.
fn create(path: &Path) -> Result<(), SecretsError> {
    let io_err = |action, source| SecretsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| io_err("create the directory of the", e))?;

    let mut bytes = [0u8; Secrets::FILE_LEN];
    let mut tag = [0u8; 8];
    let random = getrandom::getrandom(&mut bytes).and_then(|()| getrandom::getrandom(&mut tag));
    if let Err(e) = random {
        return Err(SecretsError::Random {
            path: path.to_path_buf(),
            reason: e.to_string(),
        });
    }

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secrets".into());
    let tmp = parent.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(tag)
    ));
    let result = write_new_file(&tmp, &bytes)
        .map_err(|e| io_err("write a temporary file next to the", e))
        .and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Someone else created it meanwhile: theirs wins, ours is discarded.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("create", e)),
        });
    bytes.fill(0);
    // The temporary name is ours alone; removing it cannot affect the linked file.
    let _ = fs::remove_file(&tmp);
    result?;
    // Make the new directory entry durable too, or a crash could lose the key after
    // profiles were already encrypted with it.
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_err("sync the directory of the", e))
}

fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_debug_is_redacted() {
        let s = Secrets {
            store_key: [0xAB; 32],
            key_id_secret: [0xCD; 16],
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("171") && !shown.contains("205"));
    }

    #[test]
    fn secrets_created_then_reused_and_split_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/secrets");
        let first = Secrets::load_or_create(&path).expect("create");
        let raw = fs::read(&path).expect("read");
        assert_eq!(raw.len(), Secrets::FILE_LEN);
        assert_eq!(&raw[..32], &first.store_key);
        assert_eq!(&raw[32..], &first.key_id_secret);
        let meta = fs::metadata(dir.path().join("a")).expect("dir");
        assert_eq!(meta.mode() & 0o777, 0o700);
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secrets")]);
    }

    #[test]
    fn secrets_symlink_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        Secrets::load_or_create(&real).expect("create");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let err = Secrets::load_or_create(&link).expect_err("symlink must be refused");
        assert!(matches!(err, SecretsError::Permissions { .. }), "{err}");
    }
}
