//! Authenticated encryption of stored blobs (XChaCha20-Poly1305).
//!
//! - Every write draws a fresh random 24-byte nonce. XChaCha's nonce is long enough that
//!   random nonces never collide in practice, so there is no counter to keep consistent
//!   across crashes, restores or two processes sharing the file.
//! - The associated data binds a ciphertext to its row (user and plugin, length-prefixed so
//!   no two pairs encode alike). A blob copied into another user's row, or from a profile
//!   row into a population row, fails authentication instead of silently becoming that
//!   user's template.
//! - A key check value (a constant encrypted under the store key) lives in the `meta`
//!   table, so a wrong key is reported at open time rather than as "every profile is
//!   corrupt" later.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use super::StoreError;

pub(super) const NONCE_LEN: usize = 24;

const PROFILE_AAD_TAG: &[u8] = b"habitus-profile-v1\0";
const POPULATION_AAD_TAG: &[u8] = b"habitus-population-v1\0";
const KEY_CHECK_AAD: &[u8] = b"habitus-key-check-v1\0";
const KEY_CHECK_PLAINTEXT: &[u8] = b"Habitus store key check";

/// A blob as stored: random nonce and ciphertext (which ends with the 16-byte tag).
pub(super) struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// The store key, ready to encrypt and decrypt.
pub(super) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Only possible for messages far beyond the store's own size limit.
            .map_err(|_| StoreError::Invalid {
                what: "blob",
                reason: "too large to encrypt".into(),
            })?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// The plaintext, or `None` if the nonce is malformed or authentication fails.
    pub fn open(&self, aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }

    /// A fresh key check value: nonce followed by the encrypted constant.
    pub fn key_check_value(&self) -> Result<Vec<u8>, StoreError> {
        let sealed = self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
        let mut value = sealed.nonce.to_vec();
        value.extend_from_slice(&sealed.ciphertext);
        Ok(value)
    }

    /// Whether `value` (from [`Sealer::key_check_value`]) was made with this key.
    pub fn verify_key_check(&self, value: &[u8]) -> bool {
        if value.len() < NONCE_LEN {
            return false;
        }
        let (nonce, ciphertext) = value.split_at(NONCE_LEN);
        self.open(KEY_CHECK_AAD, nonce, ciphertext).as_deref() == Some(KEY_CHECK_PLAINTEXT)
    }
}

/// Associated data for the profile of `user` for `plugin`.
pub(super) fn profile_aad(user: &str, plugin: &str) -> Vec<u8> {
    let mut aad = PROFILE_AAD_TAG.to_vec();
    push_field(&mut aad, user);
    push_field(&mut aad, plugin);
    aad
}

/// Associated data for the population blob of `plugin`.
pub(super) fn population_aad(plugin: &str) -> Vec<u8> {
    let mut aad = POPULATION_AAD_TAG.to_vec();
    push_field(&mut aad, plugin);
    aad
}

fn push_field(aad: &mut Vec<u8>, field: &str) {
    // Names are at most a few hundred bytes (checked before use), so u32 cannot truncate.
    aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
    aad.extend_from_slice(field.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_crypto_round_trip_and_row_binding() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer
            .seal(&profile_aad("alice", "keystroke"), b"template")
            .expect("seal");
        let open = |aad: &[u8]| sealer.open(aad, &sealed.nonce, &sealed.ciphertext);
        assert_eq!(
            open(&profile_aad("alice", "keystroke")).as_deref(),
            Some(&b"template"[..])
        );
        assert_eq!(open(&profile_aad("bob", "keystroke")), None);
        assert_eq!(open(&profile_aad("alice", "mouse")), None);
        assert_eq!(open(&population_aad("keystroke")), None);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(profile_aad("ab", "c"), profile_aad("a", "bc"));
        // Fresh nonce per write.
        let again = sealer
            .seal(&profile_aad("alice", "keystroke"), b"template")
            .expect("seal");
        assert_ne!(again.nonce, sealed.nonce);
    }

    #[test]
    fn store_key_check_detects_other_key() {
        let value = Sealer::new(&[1; 32]).key_check_value().expect("seal");
        assert!(Sealer::new(&[1; 32]).verify_key_check(&value));
        assert!(!Sealer::new(&[2; 32]).verify_key_check(&value));
        assert!(!Sealer::new(&[1; 32]).verify_key_check(&value[..10]));
    }
}
