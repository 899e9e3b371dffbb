//! What must survive a restart: single sign-on sessions (`sid`) and refresh tokens, in an
//! embedded SQLite file (WAL, 0600). Authorization codes and login transactions are memory
//! only: they live 60 s / 10 min, and losing them on restart just means logging in again.
//!
//! Secrets are stored hashed (SHA-256): the browser's session cookie and refresh tokens are
//! 256-bit random values, so a plain hash is enough and a stolen database file cannot be
//! replayed against the provider.
//!
//! **Refresh tokens** are single use and come in families: an authorization-code grant
//! starts a family (one row), and each refresh replaces the family's secret in place, so
//! a token is `<family>.<secret>` (the family a random 63-bit number in hex, the secret
//! 256 random bits). A family's old secret presented again means a token leaked: every
//! refresh token of the session is revoked. One row per login rather than one per
//! refresh keeps a token request to one small update (schema 2). Tokens issued under
//! schema 1 (one row per token, `refresh_tokens`) are still honoured once each and
//! rotate into a family; that table empties as they expire.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::behavior::BehaviorClaim;
use crate::provider::random_token;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("provider database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("provider database {path}: {reason}")]
    File { path: String, reason: String },
}

pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// WAL pages after which a commit checkpoints inline. The upkeep thread (`upkeep`)
/// checkpoints every 250 ms off the request path, so this is only a backstop that keeps
/// the WAL bounded (≈ 200 MB) should that thread fall behind or stop. SQLite's default
/// (1,000) made every few hundredth token request copy the WAL and fsync while holding
/// the database: the p99 of the token endpoint.
const WAL_BACKSTOP_PAGES: i64 = 50_000;

/// A single sign-on session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsoSession {
    pub sid: String,
    pub user: String,
    pub auth_time: i64,
    pub acr: String,
    pub amr: Vec<String>,
    pub behavior: BehaviorClaim,
    pub expires: i64,
}

/// The schema this build writes; it migrates 1 (adds `refresh_families`).
const SCHEMA: &str = "2";

/// What presenting a refresh token led to ([`Db::rotate_refresh`]).
// Returned once per token request and matched at once: boxing the big variant would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Rotation {
    /// The token was live: it is used now, and `token` replaces it for the same grant.
    Rotated {
        grant: RefreshGrant,
        session: SsoSession,
        token: String,
    },
    /// Never issued, pruned, or revoked.
    Unknown,
    /// Presented a second time: every refresh token of its session is revoked.
    Replayed,
    /// Past its expiry (now burned, like any token presented and refused).
    Expired,
    /// Issued to another client (now burned).
    OtherClient,
    /// Its session has ended or expired (the token is now burned).
    SessionEnded,
}

/// A refresh token's grant.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshGrant {
    pub sid: String,
    pub client: String,
    pub scope: String,
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A signal delivery as kept in the outbox (see [`Db::outbox_add`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    pub url: String,
    pub content_type: String,
    /// The `Authorization` header the receiver asked for (a secret, like the stream
    /// configuration beside it; the database file is 0600).
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    /// RFC 8935 push (only 202 is success) rather than back-channel logout (any 2xx).
    pub push: bool,
    /// For logs: what it is and for whom.
    pub what: String,
    /// Unix time after which the token is no longer valid, if it has one.
    pub expires: Option<i64>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let file_err = |reason: String| DbError::File {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| file_err(e.to_string()))?;
        }
        let conn = Connection::open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        // The version first: a file of a newer schema is refused before anything in it
        // changes.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('schema', '2');",
        )?;
        let schema: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })?;
        if schema != SCHEMA && schema != "1" {
            return Err(file_err(format!(
                "schema {schema} is newer than this habitus-oidc understands ({SCHEMA})"
            )));
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (
                 sid TEXT PRIMARY KEY, cookie_hash BLOB NOT NULL UNIQUE, user TEXT NOT NULL,
                 auth_time INTEGER NOT NULL, acr TEXT NOT NULL, amr TEXT NOT NULL,
                 behavior TEXT NOT NULL, expires INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS refresh_tokens (
                 token_hash BLOB PRIMARY KEY, sid TEXT NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
                 client TEXT NOT NULL, scope TEXT NOT NULL, nonce TEXT,
                 expires INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS refresh_by_sid ON refresh_tokens(sid);
             -- Schema 2. secret_hash is empty once the family is burned.
             CREATE TABLE IF NOT EXISTS refresh_families (
                 family INTEGER PRIMARY KEY, secret_hash BLOB NOT NULL,
                 sid TEXT NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
                 client TEXT NOT NULL, scope TEXT NOT NULL, expires INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS families_by_sid ON refresh_families(sid);
             -- For pruning (`prune_expired`).
             CREATE INDEX IF NOT EXISTS refresh_by_expiry ON refresh_tokens(expires);
             CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires);
             CREATE TABLE IF NOT EXISTS ssf_streams (
                 receiver TEXT PRIMARY KEY, config TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL,
                 content_type TEXT NOT NULL, authorization TEXT, body BLOB NOT NULL,
                 push INTEGER NOT NULL, what TEXT NOT NULL, expires INTEGER);",
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if schema == "1" {
            // The tables above included schema 2's; only the version is left.
            conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", [SCHEMA])?;
        }
        Ok(Db {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    /// A 32-byte secret kept in the store under `name`, made (randomly) the first time it
    /// is asked for: keys whose tags must outlive a restart.
    pub fn secret(&self, name: &str) -> Result<[u8; 32], DbError> {
        let mut fresh = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh).map_err(
            |_| DbError::File {
                path: self.path().display().to_string(),
                reason: "the system random generator failed".into(),
            },
        )?;
        let key = format!("secret:{name}");
        let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![key, hex],
        )?;
        let stored: String =
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })?;
        let bytes: Option<Vec<u8>> = (stored.len() == 64
            && stored.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(&stored[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
        let mut out = [0u8; 32];
        match bytes {
            Some(b) => {
                out.copy_from_slice(&b);
                Ok(out)
            }
            None => Err(DbError::File {
                path: self.path().display().to_string(),
                reason: format!("meta {key} is not 64 hex digits"),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn put_session(&self, s: &SsoSession, cookie: &str) -> Result<(), DbError> {
        const SQL: &str = "INSERT INTO sessions
             (sid, cookie_hash, user, auth_time, acr, amr, behavior, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
        self.conn.prepare_cached(SQL)?.execute(params![
            s.sid,
            sha256(cookie.as_bytes()),
            s.user,
            s.auth_time,
            s.acr,
            serde_json::to_string(&s.amr).unwrap_or_default(),
            serde_json::to_string(&s.behavior).unwrap_or_default(),
            s.expires
        ])?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SsoSession> {
        let amr: String = r.get(4)?;
        let behavior: String = r.get(5)?;
        Ok(SsoSession {
            sid: r.get(0)?,
            user: r.get(1)?,
            auth_time: r.get(2)?,
            acr: r.get(3)?,
            amr: serde_json::from_str(&amr).unwrap_or_default(),
            behavior: serde_json::from_str(&behavior).unwrap_or_default(),
            expires: r.get(6)?,
        })
    }

    const COLS: &'static str = "sid, user, auth_time, acr, amr, behavior, expires";

    // Statements on the token and login paths are prepared once per connection
    // (`prepare_cached`): parsing SQL was a tenth of a refresh grant's CPU time.

    /// The live session named by a browser cookie.
    pub fn session_by_cookie(&self, cookie: &str, now: i64) -> Result<Option<SsoSession>, DbError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM sessions WHERE cookie_hash = ?1 AND expires > ?2",
                Self::COLS
            ))?
            .query_row(params![sha256(cookie.as_bytes()), now], Self::row)
            .optional()?)
    }

    pub fn session(&self, sid: &str, now: i64) -> Result<Option<SsoSession>, DbError> {
        Self::live_session(&self.conn, sid, now)
    }

    /// Ends a session and every refresh token issued under it.
    pub fn end_session(&self, sid: &str) -> Result<bool, DbError> {
        Self::revoke_refresh(&self.conn, sid)?;
        Ok(self
            .conn
            .execute("DELETE FROM sessions WHERE sid = ?1", [sid])?
            > 0)
    }

    /// Clients that received tokens under `sid` (every token response stores a refresh
    /// token family, kept until the session ends).
    pub fn session_clients(&self, sid: &str) -> Result<Vec<String>, DbError> {
        let mut st = self.conn.prepare(
            "SELECT client FROM refresh_families WHERE sid = ?1
             UNION SELECT client FROM refresh_tokens WHERE sid = ?1 ORDER BY 1",
        )?;
        let rows = st.query_map([sid], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records a live re-assessment of a session: its new `acr` and behaviour claim.
    pub fn update_session_behavior(
        &self,
        sid: &str,
        acr: &str,
        behavior: &BehaviorClaim,
    ) -> Result<bool, DbError> {
        Ok(self
            .conn
            .prepare_cached("UPDATE sessions SET acr = ?2, behavior = ?3 WHERE sid = ?1")?
            .execute(params![
                sid,
                acr,
                serde_json::to_string(behavior).unwrap_or_default()
            ])?
            > 0)
    }

    /// The SSF stream of `receiver` (its configuration as JSON).
    pub fn stream(&self, receiver: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT config FROM ssf_streams WHERE receiver = ?1",
                [receiver],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Creates the stream of `receiver`; `false` if it already has one.
    pub fn create_stream(&self, receiver: &str, config: &str) -> Result<bool, DbError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO ssf_streams (receiver, config) VALUES (?1, ?2)",
            params![receiver, config],
        )? > 0)
    }

    pub fn delete_stream(&self, receiver: &str) -> Result<bool, DbError> {
        Ok(self
            .conn
            .execute("DELETE FROM ssf_streams WHERE receiver = ?1", [receiver])?
            > 0)
    }

    /// Every stream: (receiver, configuration JSON).
    pub fn streams(&self) -> Result<Vec<(String, String)>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT receiver, config FROM ssf_streams ORDER BY receiver")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Every refresh token of session `sid`, on `conn` (which may be a transaction).
    fn revoke_refresh(conn: &Connection, sid: &str) -> Result<(), DbError> {
        conn.prepare_cached("DELETE FROM refresh_families WHERE sid = ?1")?
            .execute([sid])?;
        conn.prepare_cached("DELETE FROM refresh_tokens WHERE sid = ?1")?
            .execute([sid])?;
        Ok(())
    }

    /// On `conn`, which may be a transaction.
    fn live_session(conn: &Connection, sid: &str, now: i64) -> Result<Option<SsoSession>, DbError> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {} FROM sessions WHERE sid = ?1 AND expires > ?2",
                Self::COLS
            ))?
            .query_row(params![sid, now], Self::row)
            .optional()?)
    }

    /// Starts a refresh-token family for `grant` if its session is still live: returns
    /// the session and the family's first token. One transaction (the authorization-code
    /// grant). The family expires `lifetime_s` from now, or with its session if sooner.
    pub fn issue_refresh(
        &mut self,
        grant: &RefreshGrant,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Option<(SsoSession, String)>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(session) = Self::live_session(&tx, &grant.sid, now)? else {
            return Ok(None);
        };
        let token = Self::new_family(&tx, grant, (now + lifetime_s).min(session.expires))?;
        tx.commit()?;
        Ok(Some((session, token)))
    }

    fn new_family(conn: &Connection, g: &RefreshGrant, expires: i64) -> Result<String, DbError> {
        let secret = random_token();
        // A collision of two random 63-bit numbers fails the insert (primary key) and the
        // token request with it; it does not merge two families.
        let mut b = [0u8; 8];
        // The system generator failing is not recoverable for a security service.
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("system random generator");
        let family = (u64::from_be_bytes(b) >> 1) as i64;
        conn.prepare_cached(
            "INSERT INTO refresh_families (family, secret_hash, sid, client, scope, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            family,
            sha256(secret.as_bytes()),
            g.sid,
            g.client,
            g.scope,
            expires
        ])?;
        Ok(format!("{family:016x}.{secret}"))
    }

    /// Redeems refresh token `token` presented by `client` and, if it was live, replaces
    /// it (rotation: each token is single use). One transaction: the check, the session
    /// lookup and the new secret commit together or not at all.
    ///
    /// A token presented a second time means it leaked: every refresh token of its
    /// session is revoked. A token presented after its expiry, by another client than
    /// its own, or after its session ended is burned: its family can no longer refresh,
    /// and the rightful holder presenting it later counts as a second presentation.
    pub fn rotate_refresh(
        &mut self,
        token: &str,
        client: &str,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Rotation, DbError> {
        // IMMEDIATE: the transaction writes in most outcomes, so it takes the write lock
        // up front rather than upgrading from a read (which can fail with SQLITE_BUSY).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let outcome = match token.split_once('.') {
            Some((family, secret)) => {
                Self::rotate_family(&tx, family, secret, client, now, lifetime_s)?
            }
            None => Self::rotate_schema1(&tx, token, client, now, lifetime_s)?,
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn rotate_family(
        tx: &Connection,
        family: &str,
        secret: &str,
        client: &str,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Rotation, DbError> {
        // Exactly 16 hex digits: anything else was never issued.
        let family = match u64::from_str_radix(family, 16) {
            Ok(f) if family.len() == 16 && f >> 63 == 0 => f as i64,
            _ => return Ok(Rotation::Unknown),
        };
        let row: Option<(Vec<u8>, String, String, String, i64)> = tx
            .prepare_cached(
                "SELECT secret_hash, sid, client, scope, expires FROM refresh_families WHERE family = ?1",
            )?
            .query_row([family], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((secret_hash, sid, owner, scope, expires)) = row else {
            return Ok(Rotation::Unknown);
        };
        if !ct_eq(&sha256(secret.as_bytes()), &secret_hash) || secret_hash.is_empty() {
            Self::revoke_refresh(tx, &sid)?;
            return Ok(Rotation::Replayed);
        }
        let grant = RefreshGrant {
            sid,
            client: owner,
            scope,
        };
        let session = Self::live_session(tx, &grant.sid, now)?;
        let update = "UPDATE refresh_families SET secret_hash = ?2, expires = ?3 WHERE family = ?1";
        match session {
            Some(session) if expires > now && grant.client == client => {
                let new_secret = random_token();
                let new_expires = (now + lifetime_s).min(session.expires);
                tx.prepare_cached(update)?.execute(params![
                    family,
                    sha256(new_secret.as_bytes()),
                    new_expires
                ])?;
                Ok(Rotation::Rotated {
                    grant,
                    session,
                    token: format!("{family:016x}.{new_secret}"),
                })
            }
            session => {
                tx.prepare_cached(update)?
                    .execute(params![family, Vec::<u8>::new(), expires])?;
                Ok(if expires <= now {
                    Rotation::Expired
                } else if grant.client != client {
                    Rotation::OtherClient
                } else {
                    debug_assert!(session.is_none());
                    Rotation::SessionEnded
                })
            }
        }
    }

    /// A token issued under schema 1 (one row per token): honoured once, like before,
    /// and replaced by a family.
    fn rotate_schema1(
        tx: &Connection,
        token: &str,
        client: &str,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Rotation, DbError> {
        let hash = sha256(token.as_bytes());
        let row: Option<(String, String, String, i64, i64)> = tx
            .prepare_cached(
                "SELECT sid, client, scope, expires, used FROM refresh_tokens WHERE token_hash = ?1",
            )?
            .query_row([&hash], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((sid, owner, scope, expires, used)) = row else {
            return Ok(Rotation::Unknown);
        };
        if used != 0 {
            Self::revoke_refresh(tx, &sid)?;
            return Ok(Rotation::Replayed);
        }
        tx.prepare_cached("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1")?
            .execute([&hash])?;
        let grant = RefreshGrant {
            sid,
            client: owner,
            scope,
        };
        if expires <= now {
            return Ok(Rotation::Expired);
        }
        if grant.client != client {
            return Ok(Rotation::OtherClient);
        }
        let Some(session) = Self::live_session(tx, &grant.sid, now)? else {
            return Ok(Rotation::SessionEnded);
        };
        let token = Self::new_family(tx, &grant, (now + lifetime_s).min(session.expires))?;
        Ok(Rotation::Rotated {
            grant,
            session,
            token,
        })
    }

    /// A schema-1 refresh token row, as an older release stored it (tests of the upgrade
    /// path and of pruning).
    #[cfg(test)]
    pub(crate) fn put_schema1_token(
        &self,
        token: &str,
        sid: &str,
        expires: i64,
        used: bool,
    ) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO refresh_tokens (token_hash, sid, client, scope, expires, used)
             VALUES (?1, ?2, 'rp', 'openid', ?3, ?4)",
            params![sha256(token.as_bytes()), sid, expires, used],
        )?;
        Ok(())
    }

    /// Removes up to `limit` expired rows and returns how many went (the upkeep thread
    /// calls it in small batches so the database is never held for long): sessions past
    /// their expiry (their refresh tokens with them), and schema-1 refresh tokens that
    /// are both expired and used. Families, and an expired schema-1 token that was never
    /// used, are kept until their session goes: they are how `session_clients` knows
    /// which clients to tell when the session ends (a family never outlives its session).
    pub fn prune_expired(&mut self, now: i64, limit: i64) -> Result<usize, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let sessions = tx
            .prepare_cached(
                "DELETE FROM sessions WHERE sid IN
                 (SELECT sid FROM sessions WHERE expires <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, limit])?;
        let tokens = tx
            .prepare_cached(
                "DELETE FROM refresh_tokens WHERE rowid IN
                 (SELECT rowid FROM refresh_tokens WHERE expires <= ?1 AND used = 1 LIMIT ?2)",
            )?
            .execute(params![now, limit])?;
        tx.commit()?;
        Ok(sessions + tokens)
    }

    /// Keeps a signal delivery until it is done (delivered, refused for good, or given up
    /// after its retries), so one still pending when the provider stops is sent after the
    /// next start. Returns the row id.
    pub fn outbox_add(&self, d: &OutboxEntry) -> Result<i64, DbError> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (url, content_type, authorization, body, push, what, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                d.url,
                d.content_type,
                d.authorization,
                d.body,
                d.push,
                d.what,
                d.expires
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The delivery `id` is done.
    pub fn outbox_remove(&self, id: i64) -> Result<(), DbError> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Deliveries left over from an earlier run, oldest first, with their ids. Those whose
    /// token expired (`expires <= now`: a Logout Token is short-lived) are removed and
    /// returned apart, to be logged; sending them would only be refused.
    #[allow(clippy::type_complexity)]
    pub fn outbox_take_pending(
        &self,
        now: i64,
    ) -> Result<(Vec<(i64, OutboxEntry)>, Vec<OutboxEntry>), DbError> {
        let mut st = self.conn.prepare(
            "SELECT id, url, content_type, authorization, body, push, what, expires
             FROM outbox ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                OutboxEntry {
                    url: r.get(1)?,
                    content_type: r.get(2)?,
                    authorization: r.get(3)?,
                    body: r.get(4)?,
                    push: r.get(5)?,
                    what: r.get(6)?,
                    expires: r.get(7)?,
                },
            ))
        })?;
        let (mut pending, mut expired) = (Vec::new(), Vec::new());
        for row in rows {
            let (id, e) = row?;
            if e.expires.is_some_and(|x| x <= now) {
                self.outbox_remove(id)?;
                expired.push(e);
            } else {
                pending.push((id, e));
            }
        }
        Ok((pending, expired))
    }

    pub fn count(&self, table: &str) -> Result<i64, DbError> {
        // Table names cannot be bound as parameters: only these are ever interpolated.
        let table = match table {
            "sessions" => "sessions",
            "outbox" => "outbox",
            "refresh_tokens" => "refresh_tokens",
            "refresh_families" => "refresh_families",
            other => return Err(rusqlite::Error::InvalidParameterName(other.to_string()).into()),
        };
        Ok(self
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    }
}

impl Db {
    /// A PASSIVE checkpoint on the shared connection (see `upkeep`): with the caller
    /// holding the connection, no commit can come in between, so it leaves the WAL fully
    /// checkpointed and the next commit starts it over from the beginning. Returns
    /// (frames in the WAL, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64), DbError> {
        passive_checkpoint(&self.conn)
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `conn`: (frames in the WAL, frames checkpointed).
fn passive_checkpoint(conn: &Connection) -> Result<(i64, i64), DbError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?)
}

/// A second connection to the provider database that only checkpoints its WAL (copies
/// committed pages into the database file and fsyncs it). It runs on the upkeep thread,
/// so a checkpoint never holds the connection the request handlers share.
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    pub fn open(path: &Path) -> Result<Checkpointer, DbError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Checkpointer { conn })
    }

    /// A PASSIVE checkpoint: as many frames as it can without waiting for readers or
    /// the writer (the next one gets the rest). Returns (frames in the WAL, frames
    /// checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64), DbError> {
        passive_checkpoint(&self.conn)
    }
}

/// Equality without early exit: both sides are hashed to fixed-length digests first, so
/// neither length nor the position of the first difference shows in the timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (sha256(a), sha256(b));
    x.iter().zip(&y).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oidc.db");
        let db = Db::open(&path).expect("open");
        let a = db.secret("device_cookie").unwrap();
        assert_eq!(db.secret("device_cookie").unwrap(), a);
        assert_ne!(db.secret("other").unwrap(), a);
        drop(db);
        let db = Db::open(&path).expect("reopen");
        assert_eq!(db.secret("device_cookie").unwrap(), a, "lost at a restart");
        // A damaged value is an error, never a panic or a silently new key.
        db.conn
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'secret:device_cookie'",
                ["é".repeat(32)],
            )
            .unwrap();
        let e = db.secret("device_cookie").unwrap_err().to_string();
        assert!(e.contains("not 64 hex digits"), "{e}");
    }

    #[test]
    fn sessions_and_refresh_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(&dir.path().join("oidc.db")).expect("open");
        let s = SsoSession {
            sid: "s1".into(),
            user: "alice".into(),
            auth_time: 10,
            acr: "urn:habitus:loa:1".into(),
            amr: vec!["pwd".into(), "rba".into()],
            behavior: BehaviorClaim::default(),
            expires: 1000,
        };
        db.put_session(&s, "cookie").expect("put");
        assert_eq!(
            db.session_by_cookie("cookie", 5).expect("q"),
            Some(s.clone())
        );
        assert_eq!(
            db.session_by_cookie("cookie", 1000).expect("q"),
            None,
            "expired"
        );
        let g = RefreshGrant {
            sid: "s1".into(),
            client: "rp".into(),
            scope: "openid".into(),
        };
        // Rotates `t` and checks the outcome is a rotation of `g` in `s`: the new token.
        fn rotate(db: &mut Db, t: &str, now: i64, g: &RefreshGrant, s: &SsoSession) -> String {
            match db.rotate_refresh(t, "rp", now, 500).expect("rotate") {
                Rotation::Rotated {
                    grant,
                    session,
                    token,
                } => {
                    assert_eq!((&grant, &session), (g, s));
                    assert_ne!(token, t);
                    token
                }
                other => panic!("{t}: {other:?}"),
            }
        }
        let issue = |db: &mut Db, now: i64, lifetime: i64| {
            let (session, token) = db
                .issue_refresh(&g, now, lifetime)
                .expect("issue")
                .expect("live session");
            assert_eq!(session, s);
            token
        };
        let t1 = issue(&mut db, 5, 500);
        let t2 = issue(&mut db, 5, 500);
        assert_eq!(t1.len(), 16 + 1 + 43, "{t1}");
        let t1b = rotate(&mut db, &t1, 5, &g, &s);
        let t1c = rotate(&mut db, &t1b, 6, &g, &s);
        assert_eq!(t1c.split('.').next(), t1.split('.').next(), "same family");
        assert_eq!(
            db.count("refresh_families").expect("count"),
            2,
            "a row per family"
        );
        assert_eq!(
            db.rotate_refresh(&t1, "rp", 7, 500).expect("q"),
            Rotation::Replayed,
            "single use"
        );
        for t in [&t2, &t1c] {
            assert_eq!(
                db.rotate_refresh(t, "rp", 8, 500).expect("q"),
                Rotation::Unknown,
                "{t}: the session's tokens are revoked on reuse"
            );
        }
        // Malformed and made-up tokens are unknown, and revoke nothing.
        let t3 = issue(&mut db, 5, 500);
        let family = t3.split('.').next().expect("family").to_string();
        for bad in [
            "",
            ".",
            "x.y",
            "00000000000000001.abc",
            "ffffffffffffffff.abc",
            &format!(
                "{:016x}.abc",
                u64::from_str_radix(&family, 16).expect("hex") ^ 1
            ),
        ] {
            assert_eq!(
                db.rotate_refresh(bad, "rp", 9, 500).expect("q"),
                Rotation::Unknown,
                "{bad:?}"
            );
        }
        let t3 = rotate(&mut db, &t3, 9, &g, &s);
        // Another client presenting the token burns it: the family is done, and the
        // rightful client presenting it next counts as a replay.
        assert_eq!(
            db.rotate_refresh(&t3, "other", 9, 500).expect("q"),
            Rotation::OtherClient
        );
        assert_eq!(
            db.rotate_refresh(&t3, "rp", 9, 500).expect("q"),
            Rotation::Replayed
        );
        // Expiry: the family's own (lifetime 20 s from 5), and never past the session's.
        let t4 = issue(&mut db, 5, 20);
        assert_eq!(
            db.rotate_refresh(&t4, "rp", 25, 500).expect("q"),
            Rotation::Expired
        );
        let t5 = issue(&mut db, 5, 5000);
        let t5b = rotate(&mut db, &t5, 10, &g, &s);
        assert_eq!(
            db.rotate_refresh(&t5b, "rp", 1000, 5000).expect("q"),
            Rotation::Expired,
            "expired with the session at 1000"
        );
        // A session that ends by other means than `end_session` (its expiry moved).
        let s2 = SsoSession {
            sid: "s2".into(),
            ..s.clone()
        };
        db.put_session(&s2, "cookie2").expect("put");
        let g2 = RefreshGrant {
            sid: "s2".into(),
            ..g.clone()
        };
        let (_, t8) = db.issue_refresh(&g2, 5, 500).expect("issue").expect("live");
        db.conn
            .execute("UPDATE sessions SET expires = 6 WHERE sid = 's2'", [])
            .expect("update");
        assert_eq!(
            db.rotate_refresh(&t8, "rp", 7, 500).expect("q"),
            Rotation::SessionEnded
        );
        let t6 = issue(&mut db, 5, 500);
        assert_eq!(db.session_clients("s1").expect("clients"), vec!["rp"]);
        assert!(db.end_session("s1").expect("end"));
        assert_eq!(
            db.rotate_refresh(&t6, "rp", 5, 500).expect("q"),
            Rotation::Unknown
        );
        assert!(db.session_clients("s1").expect("clients").is_empty());
        assert_eq!(db.issue_refresh(&g, 5, 500).expect("issue"), None);
        let mode = std::fs::metadata(dir.path().join("oidc.db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn schema_1_files_migrate_and_their_refresh_tokens_rotate_into_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oidc.db");
        let s = SsoSession {
            sid: "s1".into(),
            user: "alice".into(),
            auth_time: 10,
            acr: "urn:habitus:loa:1".into(),
            amr: vec!["pwd".into()],
            behavior: BehaviorClaim::default(),
            expires: 1000,
        };
        {
            // A schema-1 file: no families table, and tokens one row each.
            let db = Db::open(&path).expect("open");
            db.put_session(&s, "cookie").expect("put");
            db.conn
                .execute_batch(
                    "DROP TABLE refresh_families;
                     UPDATE meta SET value = '1' WHERE key = 'schema';",
                )
                .expect("downgrade");
            for (token, used) in [
                ("old-live", false),
                ("old-used", true),
                ("old-other", false),
            ] {
                db.put_schema1_token(token, "s1", 500, used)
                    .expect("insert");
            }
        }
        let mut db = Db::open(&path).expect("migrates");
        let schema: String = db
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .expect("schema");
        assert_eq!(schema, "2");
        let Rotation::Rotated { token, grant, .. } =
            db.rotate_refresh("old-live", "rp", 5, 100).expect("rotate")
        else {
            panic!("a live schema-1 token rotates");
        };
        assert_eq!(grant.scope, "openid");
        assert!(token.contains('.'), "into a family: {token}");
        assert_eq!(
            db.rotate_refresh("old-live", "rp", 6, 100).expect("q"),
            Rotation::Replayed,
            "once"
        );
        assert_eq!(
            db.rotate_refresh(&token, "rp", 6, 100).expect("q"),
            Rotation::Unknown,
            "the replay revoked the session's family too"
        );
        assert_eq!(db.count("refresh_tokens").expect("count"), 0);
        drop(db);
        // A newer schema than this build knows is refused, and the file left alone.
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "UPDATE meta SET value = '3' WHERE key = 'schema'; DROP TABLE refresh_families;",
        )
        .expect("bump");
        drop(conn);
        let err = Db::open(&path).err().expect("refused").to_string();
        assert!(err.contains("schema 3 is newer"), "{err}");
        let conn = Connection::open(&path).expect("open");
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'refresh_families'",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(tables, 0, "nothing was created in the newer file");
    }

    #[test]
    fn outbox_keeps_deliveries_until_done_and_drops_expired_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oidc.db");
        let entry = |what: &str, expires: Option<i64>| OutboxEntry {
            url: "https://rp.example/bcl".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            authorization: Some("Bearer t".into()),
            body: vec![0, 1, 2, 255],
            push: false,
            what: what.into(),
            expires,
        };
        let (a, b, c) = {
            let db = Db::open(&path).expect("open");
            let a = db.outbox_add(&entry("a", None)).expect("add");
            let b = db.outbox_add(&entry("b", Some(100))).expect("add");
            let c = db.outbox_add(&entry("c", Some(50))).expect("add");
            (a, b, c)
        };
        // Reopened (a restart): what was not removed is still there, byte for byte.
        let db = Db::open(&path).expect("reopen");
        db.outbox_remove(a).expect("remove");
        let (pending, expired) = db.outbox_take_pending(60).expect("take");
        assert_eq!(pending, vec![(b, entry("b", Some(100)))]);
        assert_eq!(expired, vec![entry("c", Some(50))]);
        assert!(c > b && b > a);
        // Expired ones are gone; the pending one stays until removed.
        assert_eq!(db.count("outbox").expect("count"), 1);
        db.outbox_remove(b).expect("remove");
        assert_eq!(db.count("outbox").expect("count"), 0);
    }
}
