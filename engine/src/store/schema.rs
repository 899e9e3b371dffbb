//! Opening the database file safely and bringing its schema up to date.
//!
//! - The file is created by us with mode 0600 before SQLite sees it, and an existing file
//!   (or `-wal`/`-shm` sidecar) readable by group/other is refused: SQLite creates its
//!   sidecars with the main file's mode, so getting the main file right covers them.
//! - A file that is not SQLite, or is SQLite but not ours, is refused before anything is
//!   written to it, so pointing the daemon at the wrong path never damages that file.
//! - Schema changes are an ordered list of migrations; migration `i` takes `user_version`
//!   `i` to `i + 1` inside one immediate transaction (so two processes opening a fresh
//!   file at once cannot both run it). A file from a newer Habitus is refused, not
//!   "upgraded" backwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::crypto::Sealer;
use super::{ProfileStore, StoreError};

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: profiles, per-day adaptation counters, population blobs, key check.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value BLOB NOT NULL
     ) STRICT;
     CREATE TABLE profiles (
         user        TEXT NOT NULL,
         plugin      TEXT NOT NULL,
         nonce       BLOB NOT NULL,
         ciphertext  BLOB NOT NULL,
         windows     INTEGER NOT NULL CHECK (windows >= 0),
         enrolled_at INTEGER NOT NULL,
         updated_at  INTEGER NOT NULL,
         revision    INTEGER NOT NULL CHECK (revision >= 1),
         adaptations INTEGER NOT NULL CHECK (adaptations >= 0),
         PRIMARY KEY (user, plugin)
     ) STRICT;
     CREATE TABLE adaptations_per_day (
         user   TEXT NOT NULL,
         plugin TEXT NOT NULL,
         day    INTEGER NOT NULL,
         count  INTEGER NOT NULL CHECK (count >= 0),
         PRIMARY KEY (user, plugin, day),
         FOREIGN KEY (user, plugin) REFERENCES profiles (user, plugin) ON DELETE CASCADE
     ) STRICT;
     CREATE TABLE populations (
         plugin     TEXT PRIMARY KEY NOT NULL,
         nonce      BLOB NOT NULL,
         ciphertext BLOB NOT NULL
     ) STRICT;",
    // 1 -> 2: users who asked to be forgotten, so no restart learns them again. A keyed
    // hash of the name, never the name (forget erases the name from the file).
    "CREATE TABLE forgotten (
         user_tag  BLOB PRIMARY KEY NOT NULL,
         at        INTEGER NOT NULL
     ) STRICT;",
];

const _: () = assert!(MIGRATIONS.len() == ProfileStore::SCHEMA_VERSION as usize);

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const KEY_CHECK: &str = "key_check";
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Creates the parent directory and the file (0600) if missing; refuses an existing file
/// that is not SQLite or that group/other may access. `true`: the file was created here
/// (empty, for SQLite to initialise).
pub(super) fn prepare_file(path: &Path) -> Result<bool, StoreError> {
    let io_err = |action: &'static str| {
        move |source| StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("create the directory of"))?;
    }
    if !path.exists() {
        // Checked before the file exists: a refusal must not leave an empty file behind,
        // which the next start would take for a truncated store.
        check_sidecars(path)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // New and empty: SQLite will initialise it.
        Ok(_) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create")(e)),
    }

    let meta = fs::metadata(path).map_err(io_err("inspect"))?;
    if !meta.is_file() {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
        });
    }
    // Identify before judging permissions: a stranger's file gets "wrong path", not "chmod".
    let mut header = Vec::with_capacity(SQLITE_MAGIC.len());
    File::open(path)
        .and_then(|f| f.take(SQLITE_MAGIC.len() as u64).read_to_end(&mut header))
        .map_err(io_err("read"))?;
    if header.is_empty() {
        // SQLite writes its header as soon as the store creates a file (the schema is
        // set up right after), so an existing empty file was truncated or made by hand:
        // taken as a new store, every profile and every "forgotten" mark would be lost
        // without a word, and forgotten users would be learned again.
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "the file exists but is empty, so its profiles are gone; restore it, or move it away to start a new store".into(),
        });
    }
    if header != SQLITE_MAGIC {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
        });
    }
    check_private(path, meta.permissions().mode())?;
    check_sidecars(path)?;
    Ok(false)
}

/// A leftover `-wal`/`-shm` readable by others would leak page images (or, if SQLite
/// reused it, keep the leak going): refuse it like the main file.
fn check_sidecars(path: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        let sidecar = Path::new(&sidecar);
        match fs::metadata(sidecar) {
            Ok(m) => check_private(sidecar, m.permissions().mode())?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    action: "inspect",
                    path: sidecar.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn check_private(path: &Path, mode: u32) -> Result<(), StoreError> {
    if mode & 0o077 == 0 {
        Ok(())
    } else {
        Err(StoreError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        })
    }
}

/// Opens the connection and applies the PRAGMAs every connection needs.
pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let not_db = |e| not_a_database(path, e);
    // No SQLITE_OPEN_CREATE: `prepare_file` made the file, with the right mode.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(not_db)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(not_db)?;
    // Reads the header first: a non-database fails here, before anything is written.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_db)?;
    if version < 0 {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
        });
    }
    if version > i64::from(ProfileStore::SCHEMA_VERSION) {
        return Err(newer_schema(version));
    }
    if version == 0 {
        // A version-0 file must be empty; otherwise it belongs to someone else.
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(not_db)?;
        if objects > 0 {
            return Err(StoreError::NotADatabase {
                path: path.to_path_buf(),
            });
        }
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(not_db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("cannot use write-ahead logging (journal mode stays {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Runs the pending migrations, each in its own immediate transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Ok(index) = usize::try_from(version) else {
            return Err(newer_schema(version));
        };
        if index >= MIGRATIONS.len() {
            if index > MIGRATIONS.len() {
                return Err(newer_schema(version));
            }
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[index])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

/// Stores the key check value on first open; afterwards verifies it (wrong key → error).
pub(super) fn check_key(
    conn: &mut Connection,
    sealer: &Sealer,
    path: &Path,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY_CHECK], |r| {
            r.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    match stored {
        Some(value) if sealer.verify_key_check(&value) => Ok(()),
        Some(_) => Err(StoreError::WrongKey {
            path: path.to_path_buf(),
        }),
        None => {
            let rows: i64 = tx.query_row(
                "SELECT (SELECT count(*) FROM profiles) + (SELECT count(*) FROM populations)",
                [],
                |r| r.get(0),
            )?;
            if rows > 0 {
                // Creating a check value now would bless whatever key we happen to have.
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "the key check value is missing but profiles exist".into(),
                });
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![KEY_CHECK, sealer.key_check_value()?],
            )?;
            tx.commit()?;
            Ok(())
        }
    }
}

/// Recomputes the key check for [`ProfileStore::check`].
pub(super) fn key_check_matches(conn: &Connection, sealer: &Sealer) -> Result<bool, StoreError> {
    let value: Vec<u8> =
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [KEY_CHECK], |r| {
            r.get(0)
        })?;
    Ok(sealer.verify_key_check(&value))
}

fn newer_schema(found: i64) -> StoreError {
    StoreError::NewerSchema {
        found: u32::try_from(found).unwrap_or(u32::MAX),
        supported: ProfileStore::SCHEMA_VERSION,
    }
}

fn not_a_database(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_path_buf(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite(e),
    }
}
