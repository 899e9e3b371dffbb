//! A ready-made envelope for the opaque blobs (profiles, populations) a plugin hands the
//! host to store.
//!
//! ```text
//! MAGIC (4 bytes) | FORMAT (1 byte) | PAYLOAD LENGTH (u32 LE) | PAYLOAD | FNV-1a 64 of the rest (u64 LE)
//! ```
//!
//! * The **magic** says whose blob it is and what it holds (e.g. `b"HSCP"`: scroll profile,
//!   `b"HSCN"`: scroll population), so another plugin's blob, or a population given where
//!   a profile is expected, is refused instead of misread.
//! * The **format** is the plugin's own profile version: bump it when the payload layout
//!   changes and decide, in [`open`]'s caller, whether an old one is migrated or refused
//!   ("re-enrol").
//! * The **length** and **checksum** catch truncation and corruption (a bit flipped on
//!   disk, a blob cut short), which a plain decoder might read as a valid, wrong profile.
//!   The checksum is not a signature: the engine encrypts and authenticates profiles at
//!   rest; this only makes accidents loud.
//!
//! Using it is optional; any format that refuses foreign, truncated and corrupted blobs
//! with [`ErrorKind::INVALID_PROFILE`](crate::ErrorKind::INVALID_PROFILE) passes the
//! conformance kit.

use crate::PluginError;

const HEADER: usize = 4 + 1 + 4;
const TRAILER: usize = 8;

/// FNV-1a, 64 bits: tiny, dependency-free, and good enough to notice accidents.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Wraps `payload` in the envelope.
///
/// # Panics
///
/// If `payload` is 4 GiB or more (no profile should be).
pub fn seal(magic: &[u8; 4], format: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("blob payload under 4 GiB");
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(magic);
    out.push(format);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A checked envelope: the format version the blob was written with, and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub format: u8,
    pub payload: &'a [u8],
}

/// Checks magic, length and checksum and returns the payload; `what` names the blob in
/// error messages (e.g. `"scroll profile"`). Every failure is `INVALID_PROFILE`.
pub fn open<'a>(magic: &[u8; 4], what: &str, blob: &'a [u8]) -> Result<Opened<'a>, PluginError> {
    if blob.len() < HEADER + TRAILER || &blob[..4] != magic {
        return Err(PluginError::invalid_profile(format!(
            "not a {what} (wrong magic or too short: another plugin's blob?)"
        )));
    }
    let len = u32::from_le_bytes([blob[5], blob[6], blob[7], blob[8]]) as usize;
    if blob.len() != HEADER + len + TRAILER {
        return Err(PluginError::invalid_profile(format!(
            "truncated or padded {what}: {} bytes, the header says {}",
            blob.len(),
            HEADER + len + TRAILER
        )));
    }
    let (body, sum) = blob.split_at(HEADER + len);
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    if fnv1a(body) != u64::from_le_bytes(stored) {
        return Err(PluginError::invalid_profile(format!(
            "corrupted {what} (checksum mismatch)"
        )));
    }
    Ok(Opened {
        format: blob[4],
        payload: &body[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn round_trip() {
        let blob = seal(b"TEST", 3, b"hello");
        let opened = open(b"TEST", "test blob", &blob).unwrap();
        assert_eq!(opened.format, 3);
        assert_eq!(opened.payload, b"hello");
        let empty = seal(b"TEST", 1, b"");
        assert_eq!(open(b"TEST", "test blob", &empty).unwrap().payload, b"");
    }

    #[test]
    fn refuses_foreign_truncated_and_corrupted_blobs() {
        let blob = seal(b"TEST", 1, &[7u8; 40]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (seal(b"OTHR", 1, &[7u8; 40]), "wrong magic"),
            (blob[..blob.len() - 1].to_vec(), "truncated"),
            (blob[..3].to_vec(), "wrong magic"),
            (Vec::new(), "wrong magic"),
            (
                {
                    let mut b = blob.clone();
                    b[20] ^= 0x04;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = blob.clone();
                    b.push(0);
                    b
                },
                "padded",
            ),
        ];
        for (bad, expected) in cases {
            let err = open(b"TEST", "test blob", &bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::INVALID_PROFILE);
            assert!(err.message.contains(expected), "{err}");
        }
    }
}
