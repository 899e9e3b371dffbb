//! The profile store: enrolled templates per (user, plugin), their adaptation history and
//! the per-plugin population blobs, in one embedded SQLite file.
//!
//! Why it is built this way:
//!
//! - **WAL + `synchronous=FULL`.** A profile update is one transaction; with write-ahead
//!   logging a crash (even `kill -9` mid-write, or power loss with FULL) leaves either the
//!   old or the new profile, never a torn one, and readers (`habitus status`) do not block
//!   the daemon's writers. `busy_timeout` lets the CLI and the daemon share the file.
//! - **Encrypted at rest with the row bound in.** Blobs are XChaCha20-Poly1305 encrypted with
//!   the installation key ([`crate::Secrets`]); the associated data names the user and
//!   plugin, so a ciphertext moved to another row fails to decrypt ([`StoreError::Decrypt`])
//!   instead of letting one person pass as another (see `store/crypto.rs`).
//! - **0600, checked.** The file is created private, and an existing file or sidecar that
//!   group/other can read is refused with the `chmod` to run (see `store/schema.rs`).
//! - **`secure_delete`.** `habitus forget` must erase: deleted rows are overwritten with
//!   zeros rather than left in free pages, and the log is checkpointed and truncated
//!   afterwards so old page images do not linger in the `-wal` file either.
//! - **Rate-limited adaptation.** Templates follow slow drift, but an attacker who gets some
//!   sessions accepted must not be able to drag a template towards themselves quickly, so
//!   adaptations per UTC day are counted and capped in the same transaction that applies
//!   them.
//!
//! Blob contents are never logged or put in error messages.

mod crypto;
mod export;
mod schema;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::Secrets;
use crypto::{population_aad, profile_aad, Sealer};

/// The store. Holds one SQLite connection and the store key.
pub struct ProfileStore {
    conn: Connection,
    sealer: Sealer,
    /// Keys the tags of forgotten users ([`ProfileStore::is_forgotten`]).
    tag_key: [u8; 16],
    path: PathBuf,
}

/// A decrypted profile with its bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredProfile {
    pub user: String,
    pub plugin: String,
    /// The plugin's profile blob, decrypted.
    pub blob: Vec<u8>,
    /// Enrolment windows the profile was built from.
    pub windows: u32,
    /// Unix seconds of the (latest) enrolment.
    pub enrolled_at: i64,
    /// Unix seconds of the latest enrolment or adaptation.
    pub updated_at: i64,
    /// 1 at first enrolment, +1 per adaptation or re-enrolment.
    pub revision: u64,
    /// Adaptations applied since the (latest) enrolment.
    pub adaptations: u64,
}

/// What [`ProfileStore::adapt_profile`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptOutcome {
    /// The new blob was stored.
    Applied,
    /// Today's (UTC) adaptation budget for this user and plugin is spent; nothing written.
    DailyLimitReached,
    /// There is no profile to adapt; enrol first.
    NotEnrolled,
}

/// Why a store operation failed. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} profile database {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("profile database file {} has mode {mode:04o}, readable by group or others: run `chmod 600 {}`", path.display(), path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} is not a Habitus profile database; point the configuration at the right file or move this one aside", path.display())]
    NotADatabase { path: PathBuf },
    #[error("profile database schema version {found} is newer than this Habitus supports ({supported}); upgrade Habitus or restore a backup made by this version")]
    NewerSchema { found: u32, supported: u32 },
    #[error("profile database {} was created with a different store key; use the secrets file it was created with", path.display())]
    WrongKey { path: PathBuf },
    #[error("stored profile of user {user:?} for plugin {plugin:?} failed authentication (tampered or damaged); run `habitus forget {user}` and re-enrol, or restore a backup")]
    Decrypt { user: String, plugin: String },
    #[error("stored population for plugin {plugin:?} failed authentication (tampered or damaged); rebuild it")]
    PopulationDecrypt { plugin: String },
    #[error("profile database {} is damaged ({detail}); restore it from backup", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("profile database {}: {detail}; keep it on a local filesystem", path.display())]
    Unsupported { path: PathBuf, detail: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the system random generator failed ({0}); retry")]
    Random(String),
    #[error("profile database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Seconds per UTC day, for the adaptation budget.
const DAY_SECONDS: i64 = 86_400;
/// Per-day adaptation counters older than this many days are pruned (data minimisation).
const COUNTER_RETENTION_DAYS: i64 = 30;
/// Longest user or plugin name accepted, in bytes.
const MAX_NAME_LEN: usize = 256;

const PROFILE_COLUMNS: &str =
    "user, plugin, nonce, ciphertext, windows, enrolled_at, updated_at, revision, adaptations";

impl ProfileStore {
    /// The schema version this build creates and understands.
    pub const SCHEMA_VERSION: u32 = 2;
    /// Largest blob accepted (16 MiB); profiles are statistics, far smaller than this.
    pub const MAX_BLOB_LEN: usize = 16 << 20;

    /// Opens or creates the database at `path` (see the module docs for the checks).
    pub fn open(path: &Path, secrets: &Secrets) -> Result<ProfileStore, StoreError> {
        let created = schema::prepare_file(path)?;
        let sealer = Sealer::new(&secrets.store_key);
        let conn = (|| {
            let mut conn = schema::connect(path)?;
            schema::migrate(&mut conn)?;
            schema::check_key(&mut conn, &sealer, path)?;
            Ok(conn)
        })();
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // A store this call created and could not set up (a full disk, a file
                // system without WAL) is removed while still empty, so the next start
                // does not take it for a truncated store.
                if created && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        Ok(ProfileStore {
            conn,
            sealer,
            tag_key: secrets.key_id_secret,
            path: path.to_path_buf(),
        })
    }

    /// The database file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Enrols or re-enrols: replaces the profile. Revision becomes 1 for a new profile or
    /// old + 1; adaptations restart at 0; `enrolled_at` and `updated_at` become `now_unix`.
    pub fn put_profile(
        &mut self,
        user: &str,
        plugin: &str,
        blob: &[u8],
        windows: u32,
        now_unix: i64,
    ) -> Result<(), StoreError> {
        self.put_profiles(user, &[(plugin, blob, windows)], now_unix)
    }

    /// [`ProfileStore::put_profile`] for several plugins of one user, in one transaction:
    /// all are stored or none (an enrolment never leaves one plugin's new template beside
    /// another's old one).
    pub fn put_profiles(
        &mut self,
        user: &str,
        profiles: &[(&str, &[u8], u32)],
        now_unix: i64,
    ) -> Result<(), StoreError> {
        check_name("user", user)?;
        let mut sealed = Vec::with_capacity(profiles.len());
        for &(plugin, blob, windows) in profiles {
            check_name("plugin", plugin)?;
            check_blob(blob)?;
            sealed.push((
                plugin,
                self.sealer.seal(&profile_aad(user, plugin), blob)?,
                windows,
            ));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (plugin, sealed, windows) in sealed {
            // An upsert (not REPLACE) keeps the row and therefore its per-day counters, so
            // re-enrolling does not reset the adaptation budget.
            tx.execute(
                "INSERT INTO profiles (user, plugin, nonce, ciphertext, windows, enrolled_at,
                                       updated_at, revision, adaptations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1, 0)
                 ON CONFLICT (user, plugin) DO UPDATE SET
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                     windows = excluded.windows, enrolled_at = excluded.enrolled_at,
                     updated_at = excluded.updated_at, revision = revision + 1, adaptations = 0",
                params![
                    user,
                    plugin,
                    &sealed.nonce[..],
                    sealed.ciphertext,
                    windows,
                    now_unix
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The profile of `user` for `plugin`, decrypted, if enrolled.
    pub fn profile(&self, user: &str, plugin: &str) -> Result<Option<StoredProfile>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE user = ?1 AND plugin = ?2"),
                params![user, plugin],
                RawProfile::from_row,
            )
            .optional()?;
        row.map(|raw| raw.decrypt(&self.sealer, &self.path))
            .transpose()
    }

    /// Up to `limit` profiles for `plugin` of users other than `user`, decrypted, the
    /// most recently updated first (ties by name): the other people a live session of
    /// `user`'s is compared with. Only the rows returned are decrypted.
    pub fn others_profiles(
        &self,
        plugin: &str,
        user: &str,
        limit: usize,
    ) -> Result<Vec<StoredProfile>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE plugin = ?1 AND user <> ?2 \
             ORDER BY updated_at DESC, user LIMIT ?3"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![plugin, user, limit], RawProfile::from_row)?;
        rows.map(|raw| raw?.decrypt(&self.sealer, &self.path))
            .collect()
    }

    /// All profiles of `user`, decrypted, sorted by plugin.
    pub fn profiles(&self, user: &str) -> Result<Vec<StoredProfile>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE user = ?1 ORDER BY plugin"
        ))?;
        let rows = stmt.query_map([user], RawProfile::from_row)?;
        rows.map(|raw| raw?.decrypt(&self.sealer, &self.path))
            .collect()
    }

    /// Replaces the profile with an adapted one, at most `max_per_day` times per UTC day
    /// (`now_unix / 86400`) per user and plugin. All in one transaction.
    pub fn adapt_profile(
        &mut self,
        user: &str,
        plugin: &str,
        blob: &[u8],
        now_unix: i64,
        max_per_day: u32,
    ) -> Result<AdaptOutcome, StoreError> {
        check_blob(blob)?;
        let day = now_unix.div_euclid(DAY_SECONDS);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let enrolled: Option<i64> = tx
            .query_row(
                "SELECT revision FROM profiles WHERE user = ?1 AND plugin = ?2",
                params![user, plugin],
                |r| r.get(0),
            )
            .optional()?;
        if enrolled.is_none() {
            return Ok(AdaptOutcome::NotEnrolled);
        }
        let used: i64 = tx
            .query_row(
                "SELECT count FROM adaptations_per_day WHERE user = ?1 AND plugin = ?2 AND day = ?3",
                params![user, plugin, day],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if used >= i64::from(max_per_day) {
            return Ok(AdaptOutcome::DailyLimitReached);
        }
        let sealed = self.sealer.seal(&profile_aad(user, plugin), blob)?;
        tx.execute(
            "UPDATE profiles SET nonce = ?3, ciphertext = ?4, updated_at = ?5,
                 revision = revision + 1, adaptations = adaptations + 1
             WHERE user = ?1 AND plugin = ?2",
            params![user, plugin, &sealed.nonce[..], sealed.ciphertext, now_unix],
        )?;
        tx.execute(
            "INSERT INTO adaptations_per_day (user, plugin, day, count) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (user, plugin, day) DO UPDATE SET count = count + 1",
            params![user, plugin, day],
        )?;
        tx.execute(
            "DELETE FROM adaptations_per_day WHERE user = ?1 AND plugin = ?2 AND day < ?3",
            params![user, plugin, day.saturating_sub(COUNTER_RETENTION_DAYS)],
        )?;
        tx.commit()?;
        Ok(AdaptOutcome::Applied)
    }

    /// Users with at least one profile, sorted.
    pub fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT user FROM profiles ORDER BY user")?;
        let users = stmt.query_map([], |r| r.get(0))?;
        Ok(users.collect::<Result<_, _>>()?)
    }

    /// The tag recording that `user` was forgotten: a keyed hash (SipHash-2-4, 128 bits,
    /// keyed with the secrets file's key-id secret, domain-separated from key ids), so the
    /// file keeps no name after [`ProfileStore::forget`].
    fn forgotten_tag(&self, user: &str) -> Vec<u8> {
        use std::hash::Hasher as _;
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&self.tag_key);
        h.write(b"habitus forgotten user\0");
        h.write(user.as_bytes());
        siphasher::sip128::Hasher128::finish128(&h)
            .as_bytes()
            .to_vec()
    }

    /// Erases everything about `user` (profiles and counters) in one transaction and
    /// returns the number of rows removed. In the same transaction the user is marked
    /// forgotten (by tag, not name): learning from live input stays off for them, across
    /// restarts, until [`ProfileStore::clear_forgotten`] (an explicit enrolment).
    pub fn forget(&mut self, user: &str) -> Result<usize, StoreError> {
        let tag = self.forgotten_tag(user);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counters = tx.execute("DELETE FROM adaptations_per_day WHERE user = ?1", [user])?;
        let profiles = tx.execute("DELETE FROM profiles WHERE user = ?1", [user])?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT OR REPLACE INTO forgotten (user_tag, at) VALUES (?1, ?2)",
            rusqlite::params![tag, now],
        )?;
        tx.commit()?;
        // Move the deletion into the main file (where secure_delete zeroed the freed
        // content) and truncate the log, which still holds the old page images. The
        // erasure itself is already committed, so a busy reader postponing this is not an
        // error: the next checkpoint overwrites those frames.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(counters + profiles)
    }

    /// Whether `user` was forgotten and not enrolled explicitly since.
    pub fn is_forgotten(&self, user: &str) -> Result<bool, StoreError> {
        let tag = self.forgotten_tag(user);
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM forgotten WHERE user_tag = ?1",
            [&tag],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Ends the forgotten mark of `user` (an administrator enrolled them explicitly).
    pub fn clear_forgotten(&mut self, user: &str) -> Result<(), StoreError> {
        let tag = self.forgotten_tag(user);
        self.conn
            .execute("DELETE FROM forgotten WHERE user_tag = ?1", [&tag])?;
        Ok(())
    }

    /// Everything stored about `user`, as JSON: `{"user", "profiles": [{"plugin", "revision",
    /// "windows", "enrolled_at", "updated_at", "adaptations", "blob_base64", "content"}],
    /// "adaptations_per_day": [{"plugin", "day", "count"}]}`. `content` is the blob's JSON
    /// body when the blob is 4 ASCII magic bytes, a version byte and JSON, else `null`.
    pub fn export(&self, user: &str) -> Result<serde_json::Value, StoreError> {
        let profiles = self.profiles(user)?;
        let mut stmt = self.conn.prepare(
            "SELECT plugin, day, count FROM adaptations_per_day WHERE user = ?1
             ORDER BY plugin, day",
        )?;
        let days = stmt
            .query_map([user], |r| {
                Ok(export::DayCount {
                    plugin: r.get(0)?,
                    day: r.get(1)?,
                    count: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(export::to_json(user, &profiles, &days))
    }

    /// Verifies the file (`PRAGMA integrity_check`, foreign keys, key check) and that every
    /// profile and population decrypts; anything else is [`StoreError::Corrupt`].
    pub fn check(&self) -> Result<(), StoreError> {
        self.check_inner().map_err(|e| match e {
            StoreError::Sqlite(e) => StoreError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            },
            other => other,
        })
    }

    fn check_inner(&self) -> Result<(), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let report = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        if report != ["ok"] {
            let mut detail = report.into_iter().take(3).collect::<Vec<_>>().join("; ");
            detail.insert_str(0, "integrity check: ");
            return Err(corrupt(detail));
        }
        let dangling: i64 =
            self.conn
                .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
        if dangling > 0 {
            return Err(corrupt(format!("{dangling} rows with dangling references")));
        }
        if !schema::key_check_matches(&self.conn, &self.sealer)? {
            return Err(corrupt("the key check value does not verify".into()));
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {PROFILE_COLUMNS} FROM profiles"))?;
        for raw in stmt.query_map([], RawProfile::from_row)? {
            let raw = raw?;
            if let Err(e) = raw.decrypt(&self.sealer, &self.path) {
                return Err(match e {
                    StoreError::Decrypt { user, plugin } => corrupt(format!(
                        "the profile of user {user:?} for plugin {plugin:?} fails authentication"
                    )),
                    other => other,
                });
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT plugin, nonce, ciphertext FROM populations")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        for row in rows {
            let (plugin, nonce, ciphertext) = row?;
            if self
                .sealer
                .open(&population_aad(&plugin), &nonce, &ciphertext)
                .is_none()
            {
                return Err(corrupt(format!(
                    "the population of plugin {plugin:?} fails authentication"
                )));
            }
        }
        Ok(())
    }

    /// Stores the population blob of `plugin` (built from other users' data), replacing
    /// any previous one.
    pub fn put_population(&mut self, plugin: &str, blob: &[u8]) -> Result<(), StoreError> {
        check_name("plugin", plugin)?;
        check_blob(blob)?;
        let sealed = self.sealer.seal(&population_aad(plugin), blob)?;
        self.conn.execute(
            "INSERT INTO populations (plugin, nonce, ciphertext) VALUES (?1, ?2, ?3)
             ON CONFLICT (plugin) DO UPDATE SET nonce = excluded.nonce,
                 ciphertext = excluded.ciphertext",
            params![plugin, &sealed.nonce[..], sealed.ciphertext],
        )?;
        Ok(())
    }

    /// The population blob of `plugin`, decrypted, if one was stored.
    pub fn population(&self, plugin: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT nonce, ciphertext FROM populations WHERE plugin = ?1",
                [plugin],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(nonce, ciphertext)| {
            self.sealer
                .open(&population_aad(plugin), &nonce, &ciphertext)
                .ok_or_else(|| StoreError::PopulationDecrypt {
                    plugin: plugin.to_owned(),
                })
        })
        .transpose()
    }
}

impl fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A profile row as stored, before decryption.
struct RawProfile {
    user: String,
    plugin: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    windows: i64,
    enrolled_at: i64,
    updated_at: i64,
    revision: i64,
    adaptations: i64,
}

impl RawProfile {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawProfile> {
        Ok(RawProfile {
            user: r.get(0)?,
            plugin: r.get(1)?,
            nonce: r.get(2)?,
            ciphertext: r.get(3)?,
            windows: r.get(4)?,
            enrolled_at: r.get(5)?,
            updated_at: r.get(6)?,
            revision: r.get(7)?,
            adaptations: r.get(8)?,
        })
    }

    fn decrypt(self, sealer: &Sealer, path: &Path) -> Result<StoredProfile, StoreError> {
        let out_of_range = |column: &str| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "column {column} of the profile of user {:?} for plugin {:?} is out of range",
                self.user, self.plugin
            ),
        };
        let windows = u32::try_from(self.windows).map_err(|_| out_of_range("windows"))?;
        let revision = u64::try_from(self.revision).map_err(|_| out_of_range("revision"))?;
        let adaptations =
            u64::try_from(self.adaptations).map_err(|_| out_of_range("adaptations"))?;
        let Some(blob) = sealer.open(
            &profile_aad(&self.user, &self.plugin),
            &self.nonce,
            &self.ciphertext,
        ) else {
            return Err(StoreError::Decrypt {
                user: self.user,
                plugin: self.plugin,
            });
        };
        Ok(StoredProfile {
            user: self.user,
            plugin: self.plugin,
            blob,
            windows,
            enrolled_at: self.enrolled_at,
            updated_at: self.updated_at,
            revision,
            adaptations,
        })
    }
}

/// User and plugin names end up in logs and error messages: keep them printable and short.
fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("longer than {MAX_NAME_LEN} bytes")
    } else if name.chars().any(char::is_control) {
        "contains control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid { what, reason })
}

fn check_blob(blob: &[u8]) -> Result<(), StoreError> {
    if blob.len() > ProfileStore::MAX_BLOB_LEN {
        return Err(StoreError::Invalid {
            what: "blob",
            reason: format!(
                "{} bytes, more than the {} allowed",
                blob.len(),
                ProfileStore::MAX_BLOB_LEN
            ),
        });
    }
    Ok(())
}
