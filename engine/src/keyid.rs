//! Key identities: a keyed hash of the key code, so timing can be matched per key and
//! per digraph while the text cannot be read back without the installation secret.

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// Hashes key codes with a per-installation 128-bit secret (SipHash-2-4, a PRF designed
/// for short inputs).
#[derive(Clone)]
pub struct KeyHasher {
    key: [u8; 16],
}

impl KeyHasher {
    pub fn new(secret: [u8; 16]) -> KeyHasher {
        KeyHasher { key: secret }
    }

    /// The key id of `code` (an evdev key code, a JavaScript keyCode, or any stable
    /// per-key number the source uses).
    pub fn key_id(&self, code: u32) -> u32 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write_u32(code);
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(<secret>)") // never print the secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_secret_and_are_stable() {
        let a = KeyHasher::new([1; 16]);
        let b = KeyHasher::new([2; 16]);
        assert_eq!(a.key_id(30), a.key_id(30));
        assert_ne!(a.key_id(30), a.key_id(31));
        assert_ne!(a.key_id(30), b.key_id(30));
        assert!(!format!("{a:?}").contains('1'));
    }
}
