//! The users file: primary authentication (argon2id password hashes) and the optional TOTP
//! secret used as the step-up factor.
//!
//! ```toml
//! [users.alice]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # habitus-oidc user add alice
//! totp = "JBSWY3DPEHPK3PXP"                         # base32, optional
//! name = "Alice Example"                            # optional display name
//! email = "alice@example.com"                       # optional, `email` scope
//! email_verified = true                             # only if you verified it
//! ```
//!
//! With `[primary] method = "pam"` the password is checked by PAM and an entry needs no
//! `password`: it only carries the TOTP secret and the display name
//! (`habitus-oidc user add --no-password --totp alice`).
//!
//! Behaviour is never the only signal: a login always needs the password first.

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: BTreeMap<String, User>,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// PHC string (argon2id). Absent: this user cannot sign in with `method = "users-file"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Released with the `email` scope. Some relying parties create accounts from it
    /// (Okta just-in-time provisioning, Entra External ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the address was verified by whoever added it: relying parties that link
    /// or create accounts by email trust this, so set it only when it is true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("totp", &self.totp.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("invalid user name {0:?}: use 1-64 characters of a-z A-Z 0-9 . _ @ -")]
    BadName(String),
    #[error("no user {0:?} in the users file (add the user first)")]
    NoSuchUser(String),
    #[error("invalid email address {0:?}: use local@domain, at most 254 characters, no spaces")]
    BadEmail(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// A plausible address: one `@` with text on both sides, printable ASCII without spaces
/// or quotes, at most 254 characters. (Deliverability is the verifier's business.)
pub fn valid_email(e: &str) -> bool {
    let mut parts = e.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\'))
}

/// User names become `sub`, log lines and store keys: keep them plain.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

impl UsersFile {
    /// Reads the file; a missing file is an empty user list.
    pub fn load(path: &Path) -> Result<UsersFile, UsersError> {
        let err = |reason: String| UsersError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersFile::default()),
            Err(e) => return Err(err(e.to_string())),
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "readable by group or others: run `chmod 600 {}`",
                path.display()
            )));
        }
        let file: UsersFile =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim().replace('\n', " ")))?;
        for (name, user) in &file.users {
            if !valid_user_name(name) {
                return Err(err(format!("invalid user name {name:?}")));
            }
            if user
                .password
                .as_deref()
                .is_some_and(|p| PasswordHash::new(p).is_err())
            {
                return Err(err(format!(
                    "users.{name}.password is not a PHC hash string"
                )));
            }
            if let Some(e) = &user.email {
                if !valid_email(e) {
                    return Err(err(format!(
                        "users.{name}.email {e:?} is not an address (local@domain, at most 254 characters, no spaces)"
                    )));
                }
            } else if user.email_verified {
                return Err(err(format!("users.{name}.email_verified without email")));
            }
            if let Some(t) = &user.totp {
                if crate::totp::decode_base32(t).map_or(true, |k| k.len() < 10) {
                    return Err(err(format!(
                        "users.{name}.totp must be base32 of at least 80 bits"
                    )));
                }
            }
        }
        Ok(file)
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        use std::io::Write;
        let err = |reason: String| UsersError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = toml::to_string(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Adds or replaces `name` with an argon2id hash of `password` (`None`: an entry for
    /// PAM users, holding only the TOTP secret and name).
    pub fn set(
        &mut self,
        name: &str,
        password: Option<&str>,
        totp: Option<String>,
    ) -> Result<(), UsersError> {
        if !valid_user_name(name) {
            return Err(UsersError::BadName(name.to_string()));
        }
        let hash = password.map(hash_password).transpose()?;
        // Replacing a user keeps the details that are not credentials.
        let previous = self.users.get(name);
        let user = User {
            password: hash,
            totp,
            name: previous.and_then(|u| u.name.clone()),
            email: previous.and_then(|u| u.email.clone()),
            email_verified: previous.is_some_and(|u| u.email_verified),
        };
        self.users.insert(name.to_string(), user);
        Ok(())
    }

    /// Sets (or with `None` removes) `name`'s email address for the `email` scope.
    pub fn set_email(
        &mut self,
        name: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<(), UsersError> {
        let user = self
            .users
            .get_mut(name)
            .ok_or_else(|| UsersError::NoSuchUser(name.to_string()))?;
        if let Some(e) = email {
            if !valid_email(e) {
                return Err(UsersError::BadEmail(e.to_string()));
            }
        }
        user.email = email.map(str::to_string);
        user.email_verified = email.is_some() && verified;
        Ok(())
    }

    /// Checks a password. Unknown users cost the same time as known ones (a dummy hash is
    /// verified), so response time does not reveal which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        // Only a user with a password hash can pass: an entry without one (PAM users) is
        // checked against the dummy hash like an unknown name, and refused whatever the
        // result, so the dummy's own password opens nothing.
        let user = self.users.get(name).filter(|u| u.password.is_some());
        let hash = match user.and_then(|u| u.password.clone()) {
            Some(h) => h,
            None => DUMMY
                .get_or_init(|| hash_password("dummy password").unwrap_or_default())
                .clone(),
        };
        let ok = PasswordHash::new(&hash)
            .map(|h| verify_hash(&h, password.as_bytes()))
            .unwrap_or(false);
        if ok {
            user
        } else {
            None
        }
    }
}

pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// Argon2 working memory kept between password checks, one buffer per check that ran
/// at once. Each check needs `m` KiB (19 MiB by default); allocated afresh every time,
/// glibc kept up to twice that per thread arena once freed (≈ 600 MB on two cores after
/// a burst of logins). Reused, the memory stays at one buffer per concurrent check
/// (habitus-oidc bounds those, see `provider::password_check_slots`).
static WORK_MEMORY: std::sync::Mutex<Vec<Vec<Block>>> = std::sync::Mutex::new(Vec::new());
/// At most this many buffers are kept: habitus-oidc runs at most 8 checks at once.
const MAX_POOLED_BUFFERS: usize = 8;

/// Whether `password` hashes to `hash` (a PHC string's parts), with pooled memory: the
/// same computation as `argon2`'s `verify_password`, and the same constant-time compare.
fn verify_hash(hash: &PasswordHash<'_>, password: &[u8]) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    // As argon2's own verify_password: every parameter from the PHC string (keyid and
    // data included), and the output length of the stored hash.
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    if params.output_len().is_some_and(|n| n != expected.len()) {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let pool = || WORK_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
    let mut memory = pool().pop().unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let ok = argon2
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..])
        .is_ok()
        && crate::store::ct_eq(&out, expected.as_bytes());
    // What stays in the pool holds nothing derived from this password (≈ 2 ms for the
    // default 19 MiB, against ≈ 30 ms for the check).
    memory[..blocks].fill(Block::default());
    out.fill(0);
    let mut pool = pool();
    // Never more buffers than checks may run at once: a burst past the bound (checks
    // outside habitus-oidc's login path) frees its extra memory instead of keeping it.
    if pool.len() < MAX_POOLED_BUFFERS {
        pool.push(memory);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pooled check agrees with argon2's own `verify_password` for other parameters,
    /// variants and output lengths than the default (one pooled buffer serves them all).
    #[test]
    fn pooled_verification_matches_argon2s_own() {
        use argon2::password_hash::PasswordVerifier;
        for (algorithm, m, t, p, len) in [
            (Algorithm::Argon2id, 19 * 1024, 2, 1, 32),
            (Algorithm::Argon2id, 64, 3, 2, 16),
            (Algorithm::Argon2i, 256, 1, 1, 64),
            (Algorithm::Argon2d, 128, 2, 4, 32),
        ] {
            let params = Params::new(m, t, p, Some(len)).expect("params");
            let hasher = Argon2::new(algorithm, Version::V0x13, params);
            let salt = SaltString::generate(&mut OsRng);
            let phc = hasher
                .hash_password(b"correct horse", &salt)
                .expect("hash")
                .to_string();
            let hash = PasswordHash::new(&phc).expect("parse");
            for (password, genuine) in [(&b"correct horse"[..], true), (b"correct horsf", false)] {
                assert_eq!(verify_hash(&hash, password), genuine, "{phc}");
                assert_eq!(
                    Argon2::default().verify_password(password, &hash).is_ok(),
                    genuine
                );
            }
        }
    }

    #[test]
    fn add_save_load_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        let mut f = UsersFile::load(&path).expect("missing = empty");
        f.set(
            "alice",
            Some("correct horse"),
            Some("JBSWY3DPEHPK3PXPJBSW".into()),
        )
        .expect("set");
        f.set("pamuser", None, Some("JBSWY3DPEHPK3PXPJBSW".into()))
            .expect("set without password");
        assert!(f.set("bad name", Some("x"), None).is_err());
        f.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"));
        let f = UsersFile::load(&path).expect("load");
        assert!(f.verify("alice", "correct horse").is_some());
        assert!(f.verify("alice", "wrong").is_none());
        assert!(f.verify("bob", "correct horse").is_none());
        // Email: set, kept when the password is replaced, refused when malformed.
        let mut f = f;
        f.set_email("alice", Some("alice@example.com"), true)
            .expect("email");
        f.set(
            "alice",
            Some("correct horse"),
            Some("JBSWY3DPEHPK3PXPJBSW".into()),
        )
        .expect("replace");
        assert_eq!(f.users["alice"].email.as_deref(), Some("alice@example.com"));
        assert!(f.users["alice"].email_verified);
        for bad in [
            "alice",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@b@example.com",
            "a@.example.com",
        ] {
            assert!(f.set_email("alice", Some(bad), true).is_err(), "{bad}");
        }
        assert!(f.set_email("nobody", Some("n@example.com"), false).is_err());
        f.save(&path).expect("save");
        let f = UsersFile::load(&path).expect("load with email");
        assert_eq!(f.users["alice"].email.as_deref(), Some("alice@example.com"));
        std::fs::write(&path, "[users.x]\nemail_verified = true\n").expect("write");
        assert!(UsersFile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("email_verified without email"));
        std::fs::write(&path, "[users.x]\nemail = \"not an address\"\n").expect("write");
        assert!(UsersFile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("is not an address"));
        // An entry without a password (PAM users) never passes the users-file check.
        assert!(f.users["pamuser"].totp.is_some());
        assert!(f.verify("pamuser", "").is_none());
        assert!(f.verify("pamuser", "dummy password").is_none());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(UsersFile::load(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
    }
}
