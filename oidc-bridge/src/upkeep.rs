//! Background upkeep of the provider database, on a thread of its own:
//!
//! * **WAL checkpoints off the request path.** Every commit appends pages to the WAL; a
//!   checkpoint copies them into the database file and fsyncs it. Left to SQLite, the
//!   commit that crosses the threshold does that inline, while the token endpoint holds
//!   the shared connection, and every request behind it waits (it was the p99 of
//!   `/token`). Here a second connection ([`Checkpointer`]) checkpoints every 250 ms
//!   (see [`checkpoint`]); the inline threshold stays only as a backstop
//!   (`store::WAL_BACKSTOP_PAGES`).
//! * **Pruning.** Expired sessions (with their refresh tokens) and expired, used
//!   schema-1 refresh tokens are deleted once a minute, in batches of [`PRUNE_BATCH`]
//!   rows so the shared connection is held for a few milliseconds at a time. Nothing
//!   deleted them before: the tables only grew.
//!
//! The thread holds the database weakly: it ends when the provider is dropped.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::provider::{lock, now_unix};
use crate::store::{Checkpointer, Db, DbError};

const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows per pruning transaction (each kind).
pub const PRUNE_BATCH: i64 = 500;

/// Starts the upkeep thread of `db`.
pub fn start(db: &Arc<Mutex<Db>>) -> std::io::Result<()> {
    let path = lock(db).path().to_path_buf();
    let weak = Arc::downgrade(db);
    std::thread::Builder::new()
        .name("oidc-upkeep".into())
        .spawn(move || run(&weak, &path))?;
    Ok(())
}

fn run(db: &Weak<Mutex<Db>>, path: &Path) {
    let checkpointer = match Checkpointer::open(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!(
                "habitus-oidc: warning: no background checkpoints ({e}); commits checkpoint inline"
            );
            None
        }
    };
    // Errors are logged when they start and when they stop, not at every pass.
    let mut checkpoint_failing = false;
    let mut next_prune = Instant::now();
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(db) = db.upgrade() else {
            return;
        };
        if let Some(c) = &checkpointer {
            let r = checkpoint(c, &db);
            match r {
                Ok(_) if checkpoint_failing => {
                    eprintln!("habitus-oidc: background checkpoints work again");
                    checkpoint_failing = false;
                }
                Ok(_) => {}
                Err(e) if !checkpoint_failing => {
                    eprintln!("habitus-oidc: error: background checkpoint: {e}");
                    checkpoint_failing = true;
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            if let Err(e) = prune(&db, now_unix()) {
                eprintln!("habitus-oidc: error: pruning expired rows: {e}");
            }
        }
    }
}

/// Frames left for the final, locked checkpoint pass (≈ 1 ms of copying).
const FINISH_FRAMES: i64 = 256;

/// Checkpoints the WAL so that the next commit starts it over. The copying is done in
/// passes on the upkeep thread's own connection while commits go on; each pass copies
/// what the commits wrote during the one before, so the passes shrink (a pass copies far
/// faster than commits write). When one is down to [`FINISH_FRAMES`], a last pass runs
/// with the shared connection held, so no commit slips in and the WAL ends fully copied.
/// Without that last step the WAL is never fully copied under a steady load and only
/// the inline backstop ever restarts it.
fn checkpoint(c: &Checkpointer, db: &Mutex<Db>) -> Result<(), DbError> {
    let mut seen = 0;
    for _ in 0..8 {
        let (frames, _) = c.checkpoint()?;
        // Frames written since the previous pass (all of them if the WAL started over).
        let new = if frames >= seen {
            frames - seen
        } else {
            frames
        };
        seen = frames;
        if new <= FINISH_FRAMES {
            break;
        }
    }
    lock(db).checkpoint()?;
    Ok(())
}

/// Deletes every row that expired by `now`, a batch at a time. Returns how many.
pub fn prune(db: &Mutex<Db>, now: i64) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let n = lock(db).prune_expired(now, PRUNE_BATCH)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        // Let the request handlers have the connection between batches (std's mutex is
        // not fair: re-locking at once could starve them).
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::BehaviorClaim;
    use crate::store::{RefreshGrant, Rotation, SsoSession};

    fn session(sid: &str, expires: i64) -> SsoSession {
        SsoSession {
            sid: sid.into(),
            user: "alice".into(),
            auth_time: 1,
            acr: "urn:habitus:loa:1".into(),
            amr: vec!["pwd".into()],
            behavior: BehaviorClaim::default(),
            expires,
        }
    }

    #[test]
    fn checkpoints_let_the_next_commit_start_the_wal_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Mutex::new(Db::open(&dir.path().join("oidc.db")).expect("open"));
        for i in 0..300 {
            lock(&db)
                .put_session(&session(&format!("s{i}"), 1000), &format!("c{i}"))
                .expect("put");
        }
        let c = Checkpointer::open(lock(&db).path()).expect("checkpointer");
        let (before, _) = lock(&db).checkpoint().expect("count");
        assert!(
            before > 50,
            "300 commits should fill the WAL ({before} frames)"
        );
        checkpoint(&c, &db).expect("checkpoint");
        lock(&db)
            .put_session(&session("after", 1000), "after")
            .expect("put");
        let (after, done) = lock(&db).checkpoint().expect("count");
        assert!(
            after < 10 && done == after,
            "the WAL started over: {after} frames after, {before} before"
        );
    }

    #[test]
    fn prune_removes_expired_sessions_and_used_tokens_in_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Mutex::new(Db::open(&dir.path().join("oidc.db")).expect("open"));
        let grant = |sid: &str| RefreshGrant {
            sid: sid.into(),
            client: "rp".into(),
            scope: "openid".into(),
        };
        {
            let mut d = lock(&db);
            d.put_session(&session("live", 10_000), "c1").expect("put");
            d.put_session(&session("gone", 100), "c2").expect("put");
            d.issue_refresh(&grant("gone"), 5, 50).expect("issue");
            // A family in the live session, refreshed 1200 times, expired at 200.
            let (_, mut token) = d
                .issue_refresh(&grant("live"), 5, 195)
                .expect("issue")
                .expect("live");
            for _ in 0..1200 {
                match d.rotate_refresh(&token, "rp", 10, 190).expect("rotate") {
                    Rotation::Rotated { token: t, .. } => token = t,
                    other => panic!("{other:?}"),
                }
            }
            // Schema-1 tokens of the live session (as an older release left them):
            // 1100 used and expired, one expired but never used.
            for i in 0..1101 {
                d.put_schema1_token(&format!("old{i}"), "live", 150, i < 1100)
                    .expect("insert");
            }
        }
        assert_eq!(lock(&db).count("refresh_families").expect("count"), 2);
        assert_eq!(lock(&db).count("refresh_tokens").expect("count"), 1101);
        assert_eq!(lock(&db).prune_expired(50, 10).expect("prune"), 0);
        // 1 session + 1100 used tokens, three batches of 500.
        assert_eq!(prune(&db, 200).expect("prune"), 1101);
        let d = lock(&db);
        assert_eq!(d.count("sessions").expect("count"), 1);
        assert_eq!(
            d.count("refresh_families").expect("count"),
            1,
            "the gone session's family went with it; the live one stays"
        );
        assert_eq!(
            d.count("refresh_tokens").expect("count"),
            1,
            "the never-used token stays until its session goes"
        );
        assert_eq!(d.session_clients("live").expect("clients"), vec!["rp"]);
    }
}
