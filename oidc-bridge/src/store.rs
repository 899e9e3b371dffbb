//! What must survive a restart: single sign-on sessions (`sid`) and refresh tokens, in an
//! embedded SQLite file (WAL, 0600). Authorization codes and login transactions are memory
//! only: they live 60 s / 10 min, and losing them on restart just means logging in again.
//!
//! Secrets are stored hashed (SHA-256): the browser's session cookie and refresh tokens are
//! 256-bit random values, so a plain hash is enough and a stolen database file cannot be
//! replayed against the provider.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::behavior::BehaviorClaim;

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
/// checkpoints every 100 ms off the request path, so this is only a backstop that keeps
/// the WAL bounded (≈ 40 MB) should that thread fall behind or stop. SQLite's default
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

/// What presenting a refresh token led to ([`Db::rotate_refresh`]).
// Returned once per token request and matched at once: boxing the big variant would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Rotation {
    /// The token was live: it is used now, and the new token is stored for the same grant.
    Rotated {
        grant: RefreshGrant,
        session: SsoSession,
    },
    /// Never issued, pruned, or revoked.
    Unknown,
    /// Presented a second time: every refresh token of its session is revoked.
    Replayed,
    /// Past its expiry (now used, like any presented token).
    Expired,
    /// Issued to another client (now used: burned).
    OtherClient,
    /// Its session has ended or expired (the token is now used).
    SessionEnded,
}

/// A refresh token's grant.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshGrant {
    pub sid: String,
    pub client: String,
    pub scope: String,
    pub nonce: Option<String>,
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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('schema', '1');
             CREATE TABLE IF NOT EXISTS sessions (
                 sid TEXT PRIMARY KEY, cookie_hash BLOB NOT NULL UNIQUE, user TEXT NOT NULL,
                 auth_time INTEGER NOT NULL, acr TEXT NOT NULL, amr TEXT NOT NULL,
                 behavior TEXT NOT NULL, expires INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS refresh_tokens (
                 token_hash BLOB PRIMARY KEY, sid TEXT NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
                 client TEXT NOT NULL, scope TEXT NOT NULL, nonce TEXT,
                 expires INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS refresh_by_sid ON refresh_tokens(sid);
             -- For pruning (`prune_expired`); added after schema 1 shipped, compatibly.
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
        let schema: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })?;
        if schema != "1" {
            return Err(file_err(format!(
                "schema {schema} is newer than this habitus-oidc understands (1)"
            )));
        }
        Ok(Db {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
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
        self.conn
            .execute("DELETE FROM refresh_tokens WHERE sid = ?1", [sid])?;
        Ok(self
            .conn
            .execute("DELETE FROM sessions WHERE sid = ?1", [sid])?
            > 0)
    }

    /// Clients that received tokens under `sid` (every token response stores a refresh
    /// token row, kept until it expires or the session ends).
    pub fn session_clients(&self, sid: &str) -> Result<Vec<String>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT client FROM refresh_tokens WHERE sid = ?1 ORDER BY client")?;
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

    fn put_refresh(
        conn: &Connection,
        token: &str,
        g: &RefreshGrant,
        expires: i64,
    ) -> Result<(), DbError> {
        conn.prepare_cached(
            "INSERT INTO refresh_tokens (token_hash, sid, client, scope, nonce, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            sha256(token.as_bytes()),
            g.sid,
            g.client,
            g.scope,
            g.nonce,
            expires
        ])?;
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

    /// Stores refresh token `token` for `grant` if its session is still live, and returns
    /// that session; one transaction (the authorization-code grant). The token expires
    /// `lifetime_s` from now, or with its session if that is sooner.
    pub fn issue_refresh(
        &mut self,
        token: &str,
        grant: &RefreshGrant,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Option<SsoSession>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(session) = Self::live_session(&tx, &grant.sid, now)? else {
            return Ok(None);
        };
        Self::put_refresh(&tx, token, grant, (now + lifetime_s).min(session.expires))?;
        tx.commit()?;
        Ok(Some(session))
    }

    /// Redeems refresh token `token` presented by `client` and, if it was live, stores
    /// `new_token` in its place (rotation: each token is single use). One transaction:
    /// the old token is marked used, the session looked up and the new token stored
    /// together, or not at all.
    ///
    /// A token presented a second time means it leaked: every refresh token of its
    /// session is revoked. A token presented by another client than its own is burned.
    pub fn rotate_refresh(
        &mut self,
        token: &str,
        client: &str,
        new_token: &str,
        now: i64,
        lifetime_s: i64,
    ) -> Result<Rotation, DbError> {
        let hash = sha256(token.as_bytes());
        // IMMEDIATE: the transaction always writes, so it takes the write lock up front
        // rather than upgrading from a read (which can fail with SQLITE_BUSY mid-way).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(String, String, String, Option<String>, i64, i64)> = tx
            .prepare_cached(
                "SELECT sid, client, scope, nonce, expires, used FROM refresh_tokens WHERE token_hash = ?1",
            )?
            .query_row(
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((sid, owner, scope, nonce, expires, used)) = row else {
            return Ok(Rotation::Unknown);
        };
        if used != 0 {
            tx.execute("DELETE FROM refresh_tokens WHERE sid = ?1", [&sid])?;
            tx.commit()?;
            return Ok(Rotation::Replayed);
        }
        tx.prepare_cached("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1")?
            .execute([&hash])?;
        let outcome = if expires <= now {
            Rotation::Expired
        } else if owner != client {
            Rotation::OtherClient
        } else {
            let grant = RefreshGrant {
                sid,
                client: owner,
                scope,
                nonce,
            };
            match Self::live_session(&tx, &grant.sid, now)? {
                None => Rotation::SessionEnded,
                Some(session) => {
                    let new_expires = (now + lifetime_s).min(session.expires);
                    Self::put_refresh(&tx, new_token, &grant, new_expires)?;
                    Rotation::Rotated { grant, session }
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Removes up to `limit` expired rows and returns how many went (the upkeep thread
    /// calls it in small batches so the database is never held for long): sessions past
    /// their expiry (their refresh tokens with them), and refresh tokens that are both
    /// expired and used. An expired token that was never used is kept until its session
    /// goes: it is how `session_clients` still knows which clients to tell when the
    /// session ends.
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
        let table = match table {
            "sessions" => "sessions",
            "outbox" => "outbox",
            _ => "refresh_tokens",
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
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }
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
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
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
            nonce: None,
        };
        let rotated = Rotation::Rotated {
            grant: g.clone(),
            session: s.clone(),
        };
        assert_eq!(
            db.issue_refresh("rt1", &g, 5, 500).expect("issue"),
            Some(s.clone())
        );
        assert_eq!(
            db.issue_refresh("rt2", &g, 5, 500).expect("issue"),
            Some(s.clone())
        );
        assert_eq!(
            db.rotate_refresh("rt1", "rp", "rt1b", 5, 500).expect("q"),
            rotated
        );
        assert_eq!(
            db.rotate_refresh("rt1b", "rp", "rt1c", 6, 500).expect("q"),
            rotated,
            "the rotated token works once"
        );
        assert_eq!(
            db.rotate_refresh("rt1", "rp", "x", 7, 500).expect("q"),
            Rotation::Replayed,
            "single use"
        );
        for t in ["rt2", "rt1c", "x"] {
            assert_eq!(
                db.rotate_refresh(t, "rp", "y", 8, 500).expect("q"),
                Rotation::Unknown,
                "{t}: the session's tokens are revoked on reuse"
            );
        }
        // Another client presenting the token burns it.
        db.issue_refresh("rt3", &g, 5, 500).expect("issue");
        assert_eq!(
            db.rotate_refresh("rt3", "other", "z", 9, 500).expect("q"),
            Rotation::OtherClient
        );
        assert_eq!(
            db.rotate_refresh("z", "other", "z2", 9, 500).expect("q"),
            Rotation::Unknown,
            "nothing was issued"
        );
        assert_eq!(
            db.rotate_refresh("rt3", "rp", "z3", 9, 500).expect("q"),
            Rotation::Replayed
        );
        // Expiry: the token's own (lifetime 20 s from 5), and never past the session's.
        db.issue_refresh("rt4", &g, 5, 20).expect("issue");
        assert_eq!(
            db.rotate_refresh("rt4", "rp", "w", 25, 500).expect("q"),
            Rotation::Expired
        );
        db.issue_refresh("rt5", &g, 5, 5000).expect("issue");
        assert_eq!(
            db.rotate_refresh("rt5", "rp", "rt5b", 10, 5000).expect("q"),
            rotated
        );
        assert_eq!(
            db.rotate_refresh("rt5b", "rp", "rt5c", 1000, 5000)
                .expect("q"),
            Rotation::Expired,
            "rt5b expired with the session at 1000"
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
        db.issue_refresh("rt8", &g2, 5, 500).expect("issue");
        db.conn
            .execute("UPDATE sessions SET expires = 6 WHERE sid = 's2'", [])
            .expect("update");
        assert_eq!(
            db.rotate_refresh("rt8", "rp", "u", 7, 500).expect("q"),
            Rotation::SessionEnded
        );
        db.issue_refresh("rt6", &g, 5, 500).expect("issue");
        assert!(db.end_session("s1").expect("end"));
        assert_eq!(
            db.rotate_refresh("rt6", "rp", "v", 5, 500).expect("q"),
            Rotation::Unknown
        );
        assert_eq!(db.issue_refresh("rt7", &g, 5, 500).expect("issue"), None);
        let mode = std::fs::metadata(dir.path().join("oidc.db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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
