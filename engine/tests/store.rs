//! The profile store and the secrets file against real files: permissions, encryption at
//! rest, refusal of wrong keys / foreign files / newer schemas, the adaptation budget,
//! forget and export, and crash safety under SIGKILL.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use habitus_engine::secrets::SecretsError;
use habitus_engine::{AdaptOutcome, ProfileStore, Secrets, StoreError, StoredProfile};
use serde_json::json;

const DAY: i64 = 86_400;

fn secrets(seed: u8) -> Secrets {
    Secrets {
        store_key: [seed; 32],
        key_id_secret: [seed ^ 0x5a; 16],
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state/profiles.db")
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

/// The database file and its WAL, as raw bytes.
fn raw_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = fs::read(path).expect("read db");
    if let Ok(wal) = fs::read(sidecar(path, "-wal")) {
        bytes.extend_from_slice(&wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn raw_conn(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw open")
}

fn open(path: &Path) -> ProfileStore {
    ProfileStore::open(path, &secrets(1)).expect("open store")
}

#[test]
fn store_file_created_private_and_reopens_with_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = open(&path);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("parent")), 0o700);

    store
        .put_profile("alice", "keystroke", b"template-1", 12, 1_000)
        .expect("put");
    let wal = sidecar(&path, "-wal");
    assert!(wal.exists(), "WAL journal expected after a write");
    assert_eq!(mode(&wal) & 0o077, 0, "WAL readable by group/other");
    assert_eq!(mode(&sidecar(&path, "-shm")) & 0o077, 0);
    let before = store.profile("alice", "keystroke").expect("read");
    assert_eq!(
        before,
        Some(StoredProfile {
            user: "alice".into(),
            plugin: "keystroke".into(),
            blob: b"template-1".to_vec(),
            windows: 12,
            enrolled_at: 1_000,
            updated_at: 1_000,
            revision: 1,
            adaptations: 0,
        })
    );
    drop(store);

    let store = open(&path);
    assert_eq!(store.profile("alice", "keystroke").expect("read"), before);
    assert_eq!(store.users().expect("users"), vec!["alice".to_owned()]);
    store.check().expect("check");
}

#[test]
fn store_group_readable_file_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(open(&path));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = ProfileStore::open(&path, &secrets(1)).expect_err("0640 must be refused");
    assert!(
        matches!(err, StoreError::Permissions { mode: 0o640, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut store = open(&path);

    // A group-readable WAL sidecar is refused the same way.
    store.put_profile("alice", "k", b"t", 1, 1).expect("put");
    let wal = sidecar(&path, "-wal");
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).expect("chmod wal");
    let err = ProfileStore::open(&path, &secrets(1)).expect_err("0644 WAL must be refused");
    assert!(
        matches!(&err, StoreError::Permissions { path: p, mode: 0o644 } if p == &wal),
        "{err}"
    );
    drop(store);
}

#[test]
fn secrets_file_created_private_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("etc/habitus/secrets");
    let first = Secrets::load_or_create(&path).expect("create");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("parent")), 0o700);
    let raw = fs::read(&path).expect("read");
    assert_eq!(raw.len(), 48);
    assert_ne!(raw, vec![0u8; 48], "secrets must be random");

    let second = Secrets::load_or_create(&path).expect("reload");
    assert_eq!(second.store_key, first.store_key);
    assert_eq!(second.key_id_secret, first.key_id_secret);
    assert_eq!(fs::read(&path).expect("read"), raw, "file rewritten");
    assert_eq!(
        first.key_hasher().key_id(30),
        second.key_hasher().key_id(30)
    );

    let other = Secrets::load_or_create(&dir.path().join("other")).expect("create");
    assert_ne!(other.store_key, first.store_key);
    let shown = format!("{first:?}");
    assert!(shown.contains("redacted"), "{shown}");
    assert!(
        !shown.contains(&format!("{:?}", first.store_key)),
        "key printed"
    );
    assert!(
        !shown.contains(&format!("{:?}", first.key_id_secret)),
        "secret printed"
    );
}

#[test]
fn secrets_group_readable_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secrets");
    fs::write(&path, [7u8; 48]).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Secrets::load_or_create(&path).expect_err("0644 must be refused");
    assert!(matches!(err, SecretsError::Permissions { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("chmod 600"), "{message}");
    assert!(message.contains("0644"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(
        fs::read(&path).expect("read"),
        vec![7u8; 48],
        "file changed"
    );

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let loaded = Secrets::load_or_create(&path).expect("0600 accepted");
    assert_eq!(loaded.store_key, [7u8; 32]);
}

#[test]
fn secrets_wrong_length_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for len in [0usize, 47, 49, 4096] {
        let path = dir.path().join(format!("secrets-{len}"));
        fs::write(&path, vec![1u8; len]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Secrets::load_or_create(&path).expect_err("wrong length must be refused");
        assert!(
            matches!(err, SecretsError::Malformed { len: l, .. } if l == len as u64),
            "{len}: {err}"
        );
        assert_eq!(fs::read(&path).expect("read").len(), len, "file changed");
    }
}

#[test]
fn store_plaintext_never_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let marker = b"HABITUS-PLAINTEXT-MARKER-5e1f0c";
    let blob = [&b"HKSP\x01{\"m\":\""[..], marker, b"\"}"].concat();
    let mut store = open(&path);
    store
        .put_profile("alice", "keystroke", &blob, 3, 10)
        .expect("put");
    store
        .adapt_profile("alice", "keystroke", &blob, 20, 5)
        .expect("adapt");
    store
        .put_population("keystroke", &blob)
        .expect("population");
    // Sanity: the blob really was written and the search would find it if it were there.
    assert!(contains(&blob, marker));
    assert_eq!(
        store
            .profile("alice", "keystroke")
            .expect("read")
            .expect("some")
            .blob,
        blob
    );
    let live = raw_bytes(&path);
    assert!(live.len() > 4096, "expected pages on disk");
    assert!(contains(&live, b"alice"), "search does not see the file");
    assert!(!contains(&live, marker), "plaintext blob in db or WAL");
    drop(store);
    assert!(
        !contains(&raw_bytes(&path), marker),
        "plaintext after close"
    );
}

#[test]
fn store_wrong_key_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = ProfileStore::open(&path, &secrets(1)).expect("open");
    store
        .put_profile("alice", "keystroke", b"t", 1, 1)
        .expect("put");
    drop(store);
    let err = ProfileStore::open(&path, &secrets(2)).expect_err("wrong key must fail");
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    // The right key still works afterwards.
    let store = ProfileStore::open(&path, &secrets(1)).expect("reopen");
    assert!(store.profile("alice", "keystroke").expect("read").is_some());
}

#[test]
fn store_tampered_ciphertext_fails_decrypt_and_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = open(&path);
    store
        .put_profile("alice", "keystroke", b"alice-template", 4, 1)
        .expect("put");
    store
        .put_profile("bob", "keystroke", b"bob-template", 4, 1)
        .expect("put");
    store.check().expect("clean store checks");
    drop(store);

    let conn = raw_conn(&path);
    let mut ciphertext: Vec<u8> = conn
        .query_row(
            "SELECT ciphertext FROM profiles WHERE user = 'alice'",
            [],
            |r| r.get(0),
        )
        .expect("select");
    ciphertext[3] ^= 0x01;
    let changed = conn
        .execute(
            "UPDATE profiles SET ciphertext = ?1 WHERE user = 'alice'",
            [&ciphertext],
        )
        .expect("update");
    assert_eq!(changed, 1);
    drop(conn);

    let store = open(&path);
    match store.profile("alice", "keystroke") {
        Err(StoreError::Decrypt { user, plugin }) => {
            assert_eq!((user.as_str(), plugin.as_str()), ("alice", "keystroke"));
        }
        other => panic!("expected Decrypt, got {other:?}"),
    }
    assert!(matches!(
        store.profiles("alice"),
        Err(StoreError::Decrypt { .. })
    ));
    let err = store.check().expect_err("check must fail");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("alice"), "{err}");
    assert_eq!(
        store
            .profile("bob", "keystroke")
            .expect("bob unaffected")
            .expect("some")
            .blob,
        b"bob-template"
    );
}

#[test]
fn store_ciphertext_moved_to_other_user_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = open(&path);
    store
        .put_profile("alice", "keystroke", b"alice-template", 4, 1)
        .expect("put");
    store
        .put_profile("mallory", "keystroke", b"mallory-template", 4, 1)
        .expect("put");
    drop(store);
    let conn = raw_conn(&path);
    let changed = conn
        .execute(
            "UPDATE profiles SET (nonce, ciphertext) =
                 (SELECT nonce, ciphertext FROM profiles WHERE user = 'mallory')
             WHERE user = 'alice'",
            [],
        )
        .expect("copy");
    assert_eq!(changed, 1);
    drop(conn);
    let store = open(&path);
    assert!(matches!(
        store.profile("alice", "keystroke"),
        Err(StoreError::Decrypt { .. })
    ));
    assert!(store.check().is_err());
}

#[test]
fn store_newer_schema_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(open(&path));
    raw_conn(&path)
        .pragma_update(None, "user_version", 99)
        .expect("set version");
    let err = ProfileStore::open(&path, &secrets(1)).expect_err("newer schema must fail");
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: ProfileStore::SCHEMA_VERSION
            }
        ),
        "{err}"
    );
    let version: i64 = raw_conn(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("read version");
    assert_eq!(version, 99, "open must not touch a newer file");
}

fn pseudo_random_bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// An existing empty file is a truncated store (or one made by hand), not a new one:
/// refused, so that lost profiles and "forgotten" marks are noticed.
#[test]
fn store_empty_existing_file_refused_and_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("profiles.db");
    fs::write(&path, b"").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = ProfileStore::open(&path, &secrets(1)).expect_err("empty must fail");
    assert!(matches!(&err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("exists but is empty"), "{err}");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 0, "modified");
    // A store that does not exist yet is still created (and reopens).
    let fresh = dir.path().join("fresh.sqlite");
    drop(open(&fresh));
    drop(open(&fresh));
    // A first start refused (here for a leftover log others may read) leaves no empty
    // file behind, so once the cause is fixed the store is created as new.
    let first = dir.path().join("first.sqlite");
    let wal = sidecar(&first, "-wal");
    fs::write(&wal, b"").expect("write");
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(ProfileStore::open(&first, &secrets(1)).is_err());
    assert!(!first.exists(), "an empty store file was left behind");
    fs::remove_file(&wal).expect("rm");
    drop(open(&first));
}

#[test]
fn store_garbage_file_refused_and_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = pseudo_random_bytes(8192, 0x1234_5678_9abc_def1);
    let mut with_magic = b"SQLite format 3\0".to_vec();
    with_magic.extend_from_slice(&garbage[16..]);
    for (name, bytes) in [("random.db", garbage), ("magic-then-random.db", with_magic)] {
        let path = dir.path().join(name);
        fs::write(&path, &bytes).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = ProfileStore::open(&path, &secrets(1)).expect_err("garbage must fail");
        assert!(
            matches!(&err, StoreError::NotADatabase { path: p } if p == &path),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(fs::read(&path).expect("read"), bytes, "{name} modified");
        assert!(!sidecar(&path, "-wal").exists(), "{name}: WAL created");
    }
}

#[test]
fn store_foreign_sqlite_database_refused_and_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other-app.db");
    let conn = raw_conn(&path);
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
        .expect("create");
    drop(conn);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = fs::read(&path).expect("read");
    let err = ProfileStore::open(&path, &secrets(1)).expect_err("foreign db must fail");
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert_eq!(fs::read(&path).expect("read"), before);
}

#[test]
fn store_adapt_respects_daily_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&db_path(&dir));
    let day10 = 10 * DAY + 3_600;
    assert_eq!(
        store
            .adapt_profile("alice", "keystroke", b"x", day10, 2)
            .expect("adapt"),
        AdaptOutcome::NotEnrolled
    );
    assert!(
        store.users().expect("users").is_empty(),
        "NotEnrolled wrote"
    );

    store
        .put_profile("alice", "keystroke", b"v0", 5, day10)
        .expect("enrol");
    let adapt = |store: &mut ProfileStore, blob: &[u8], now: i64| {
        store
            .adapt_profile("alice", "keystroke", blob, now, 2)
            .expect("adapt")
    };
    assert_eq!(adapt(&mut store, b"a1", day10 + 1), AdaptOutcome::Applied);
    assert_eq!(adapt(&mut store, b"a2", day10 + 2), AdaptOutcome::Applied);
    let after_two = store
        .profile("alice", "keystroke")
        .expect("read")
        .expect("some");
    assert_eq!(after_two.blob, b"a2");
    assert_eq!((after_two.revision, after_two.adaptations), (3, 2));
    assert_eq!(
        (after_two.enrolled_at, after_two.updated_at),
        (day10, day10 + 2)
    );
    assert_eq!(after_two.windows, 5);

    // Last second of the same UTC day: still refused, nothing written.
    assert_eq!(
        adapt(&mut store, b"a3", 11 * DAY - 1),
        AdaptOutcome::DailyLimitReached
    );
    assert_eq!(
        store.profile("alice", "keystroke").expect("read"),
        Some(after_two.clone())
    );

    // Next UTC day: a fresh budget.
    assert_eq!(adapt(&mut store, b"a4", 11 * DAY), AdaptOutcome::Applied);
    let next_day = store
        .profile("alice", "keystroke")
        .expect("read")
        .expect("some");
    assert_eq!(next_day.blob, b"a4");
    assert_eq!((next_day.revision, next_day.adaptations), (4, 3));

    // The budget is per plugin.
    store
        .put_profile("alice", "mouse", b"m0", 5, day10)
        .expect("enrol");
    assert_eq!(
        store
            .adapt_profile("alice", "mouse", b"m1", 11 * DAY, 1)
            .expect("adapt"),
        AdaptOutcome::Applied
    );
    // A zero budget never adapts.
    assert_eq!(
        store
            .adapt_profile("alice", "mouse", b"m2", 12 * DAY, 0)
            .expect("adapt"),
        AdaptOutcome::DailyLimitReached
    );

    let export = store.export("alice").expect("export");
    assert_eq!(
        export["adaptations_per_day"],
        json!([
            {"plugin": "keystroke", "day": 10, "count": 2},
            {"plugin": "keystroke", "day": 11, "count": 1},
            {"plugin": "mouse", "day": 11, "count": 1},
        ])
    );
}

#[test]
fn store_reenrolment_bumps_revision_and_keeps_day_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&db_path(&dir));
    store
        .put_profile("alice", "keystroke", b"v0", 5, 100)
        .expect("enrol");
    assert_eq!(
        store
            .adapt_profile("alice", "keystroke", b"a1", 200, 1)
            .expect("adapt"),
        AdaptOutcome::Applied
    );
    store
        .put_profile("alice", "keystroke", b"v1", 9, 300)
        .expect("re-enrol");
    let p = store
        .profile("alice", "keystroke")
        .expect("read")
        .expect("some");
    assert_eq!(p.blob, b"v1");
    assert_eq!((p.revision, p.adaptations, p.windows), (3, 0, 9));
    assert_eq!((p.enrolled_at, p.updated_at), (300, 300));
    // Re-enrolling is not a way around today's adaptation budget.
    assert_eq!(
        store
            .adapt_profile("alice", "keystroke", b"a2", 400, 1)
            .expect("adapt"),
        AdaptOutcome::DailyLimitReached
    );
}

#[test]
fn store_forget_erases_only_that_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = open(&path);
    let victim = "alice-forget-marker-93c1";
    store
        .put_profile(victim, "keystroke", b"a-k", 3, 1)
        .expect("put");
    store
        .put_profile(victim, "mouse", b"a-m", 3, 1)
        .expect("put");
    store
        .put_profile("bob", "keystroke", b"b-k", 3, 1)
        .expect("put");
    for (user, plugin) in [(victim, "keystroke"), ("bob", "keystroke")] {
        assert_eq!(
            store
                .adapt_profile(user, plugin, b"adapted", 2, 5)
                .expect("adapt"),
            AdaptOutcome::Applied
        );
    }
    let bob_before = store.profile("bob", "keystroke").expect("read");
    assert!(contains(&raw_bytes(&path), victim.as_bytes()));

    // Two profiles and one day counter.
    assert_eq!(store.forget(victim).expect("forget"), 3);
    assert_eq!(store.profile(victim, "keystroke").expect("read"), None);
    assert!(store.profiles(victim).expect("read").is_empty());
    assert_eq!(store.users().expect("users"), vec!["bob".to_owned()]);
    let export = store.export(victim).expect("export");
    assert_eq!(export["profiles"], json!([]));
    assert_eq!(export["adaptations_per_day"], json!([]));
    assert_eq!(store.profile("bob", "keystroke").expect("read"), bob_before);
    assert_eq!(
        store.export("bob").expect("export")["adaptations_per_day"],
        json!([{"plugin": "keystroke", "day": 0, "count": 1}])
    );
    // Marked forgotten (so no restart learns them again), by a keyed tag: the name is
    // checked absent from the file below.
    assert!(store.is_forgotten(victim).expect("mark"));
    assert!(!store.is_forgotten("bob").expect("mark"));
    assert_eq!(store.forget(victim).expect("forget again"), 0);
    store.check().expect("check after forget");
    // secure_delete + WAL truncation: the name is gone from the bytes on disk too.
    assert!(
        !contains(&raw_bytes(&path), victim.as_bytes()),
        "forgotten user still readable in the database file or WAL"
    );
    store.clear_forgotten(victim).expect("clear");
    assert!(!store.is_forgotten(victim).expect("mark"));
}

#[test]
fn store_export_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&db_path(&dir));
    let random = pseudo_random_bytes(40, 99);
    store
        .put_profile("alice", "mouse", &random, 7, 50)
        .expect("put");
    store
        .put_profile("alice", "keystroke", b"HKSP\x01{\"a\":1}", 12, 100)
        .expect("put");
    store
        .adapt_profile("alice", "keystroke", b"HKSP\x01{\"a\":2}", DAY + 5, 3)
        .expect("adapt");
    let export = store.export("alice").expect("export");
    assert_eq!(
        export,
        json!({
            "user": "alice",
            "profiles": [
                {
                    "plugin": "keystroke",
                    "revision": 2,
                    "windows": 12,
                    "enrolled_at": 100,
                    "updated_at": DAY + 5,
                    "adaptations": 1,
                    "blob_base64": "SEtTUAF7ImEiOjJ9",
                    "content": {"a": 2},
                },
                {
                    "plugin": "mouse",
                    "revision": 1,
                    "windows": 7,
                    "enrolled_at": 50,
                    "updated_at": 50,
                    "adaptations": 0,
                    "blob_base64": export["profiles"][1]["blob_base64"].clone(),
                    "content": null,
                },
            ],
            "adaptations_per_day": [{"plugin": "keystroke", "day": 1, "count": 1}],
        })
    );
    let b64 = export["profiles"][1]["blob_base64"]
        .as_str()
        .expect("string");
    assert_eq!(b64.len(), 56, "40 bytes encode to 56 characters");
    let body = b64
        .strip_suffix("==")
        .expect("40 bytes need two padding characters");
    assert!(body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
    assert_eq!(
        store.export("nobody").expect("export"),
        json!({"user": "nobody", "profiles": [], "adaptations_per_day": []})
    );
}

#[test]
fn store_population_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let mut store = open(&path);
    assert_eq!(store.population("keystroke").expect("read"), None);
    store
        .put_population("keystroke", b"population-1")
        .expect("put");
    store
        .put_population("keystroke", b"population-2")
        .expect("replace");
    drop(store);
    let store = open(&path);
    assert_eq!(
        store.population("keystroke").expect("read"),
        Some(b"population-2".to_vec())
    );
    assert_eq!(store.population("mouse").expect("read"), None);
    assert!(
        store.users().expect("users").is_empty(),
        "population is no user"
    );
    store.check().expect("check");
}

#[test]
fn store_rejects_invalid_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&db_path(&dir));
    for (user, plugin) in [("", "k"), ("a\nb", "k"), ("alice", ""), ("alice", "k\0")] {
        let err = store
            .put_profile(user, plugin, b"t", 1, 1)
            .expect_err("invalid name must be refused");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    let long = "u".repeat(257);
    assert!(store.put_profile(&long, "k", b"t", 1, 1).is_err());
    assert!(store.users().expect("users").is_empty());
}

#[test]
fn store_put_profiles_stores_all_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&db_path(&dir));
    let bad: [(&str, &[u8], u32); 2] = [("keystroke", b"k1", 3), ("mouse\0", b"m1", 3)];
    assert!(store.put_profiles("alice", &bad, 1).is_err());
    assert!(
        store.profiles("alice").expect("read").is_empty(),
        "the valid first profile must not be stored alone"
    );
    let good: [(&str, &[u8], u32); 2] = [("keystroke", b"k1", 3), ("mouse", b"m1", 4)];
    store.put_profiles("alice", &good, 1).expect("put");
    let stored = store.profiles("alice").expect("read");
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|p| p.revision == 1));
}

const CHILD_ENV: &str = "HABITUS_STORE_DURABILITY_CHILD";
const CHILD_READY: &str = "HABITUS-DURABILITY-CHILD-READY";
const DURABILITY_TEST: &str = "store_survives_sigkill_during_adaptation";

/// In the child: adapt as fast as possible until killed, each blob naming its revision.
fn durability_child(path: &Path) {
    let mut store = open(path);
    let mut revision = store
        .profile("alice", "keystroke")
        .expect("read")
        .expect("enrolled")
        .revision;
    println!("{CHILD_READY}");
    let deadline = Instant::now() + Duration::from_secs(20); // in case the parent died
    while Instant::now() < deadline {
        revision += 1;
        let blob = format!("rev{revision}");
        let outcome = store
            .adapt_profile(
                "alice",
                "keystroke",
                blob.as_bytes(),
                revision as i64,
                u32::MAX,
            )
            .expect("adapt");
        assert_eq!(outcome, AdaptOutcome::Applied);
    }
}

#[test]
fn store_survives_sigkill_during_adaptation() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        durability_child(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    open(&path)
        .put_profile("alice", "keystroke", b"rev1", 1, 1)
        .expect("enrol");

    let exe = std::env::current_exe().expect("current exe");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut last_revision = 1;
    let mut kills = 0;
    for _ in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                DURABILITY_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest may print "test NAME ... " on the same line first.
            .any(|line| line.contains(CHILD_READY));
        assert!(ready, "child exited before it was ready");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(500 + seed % 15_000));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(!status.success(), "child finished instead of being killed");
        kills += 1;

        let store = open(&path);
        store.check().expect("check after SIGKILL");
        let profile = store
            .profile("alice", "keystroke")
            .expect("decrypts after SIGKILL")
            .expect("still enrolled");
        assert_eq!(
            profile.blob,
            format!("rev{}", profile.revision).into_bytes(),
            "blob does not match its revision"
        );
        assert_eq!(profile.updated_at, profile.revision as i64);
        assert_eq!(profile.adaptations, profile.revision - 1);
        assert!(
            profile.revision >= last_revision,
            "committed adaptations lost: {} < {last_revision}",
            profile.revision
        );
        last_revision = profile.revision;
    }
    println!("durability: {kills} SIGKILLs survived, final revision {last_revision}");
    assert!(last_revision > 1, "the child never committed an adaptation");
}

/// The other users a session is compared with: one plugin, never the user themself, the
/// most recently updated first, no more than asked for; a forgotten user is gone.
#[test]
fn other_users_profiles_are_the_most_recent_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&db_path(&dir));
    for (user, at) in [("alice", 10), ("bob", 30), ("carol", 20), ("dave", 40)] {
        store
            .put_profile(user, "keystroke", user.as_bytes(), 5, at)
            .unwrap();
    }
    store.put_profile("erin", "mouse", b"erin", 5, 50).unwrap();
    let names = |store: &ProfileStore, user: &str, limit: usize| -> Vec<String> {
        store
            .others_profiles("keystroke", user, limit)
            .unwrap()
            .into_iter()
            .map(|p| {
                assert_eq!(p.blob, p.user.as_bytes(), "decrypted");
                p.user
            })
            .collect()
    };
    assert_eq!(names(&store, "alice", 8), ["dave", "bob", "carol"]);
    assert_eq!(names(&store, "dave", 2), ["bob", "carol"]);
    assert!(names(&store, "alice", 0).is_empty());
    store.forget("bob").unwrap();
    assert_eq!(names(&store, "alice", 8), ["dave", "carol"]);
}
