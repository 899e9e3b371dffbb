//! Versioned envelopes for the opaque blobs the host stores for us.
//!
//! `MAGIC (4 bytes) | FORMAT_VERSION (1 byte) | FINGERPRINT (8 bytes, LE) | JSON payload`.
//! The magic says "this is a touch profile/population" (so another plugin's blob is
//! refused, not misread), the version lets a later release migrate or refuse old blobs
//! explicitly, and the fingerprint (FNV-1a of the payload) is checked on decoding, so a
//! truncated or bit-flipped blob is refused. The fingerprint also finds a profile in the
//! plugin's cache of decoded profiles (see `lib.rs`), which then compares the bytes.

use habitus_plugin::PluginError;
use serde::{de::DeserializeOwned, Serialize};

pub const PROFILE_MAGIC: &[u8; 4] = b"HTCP";
pub const POPULATION_MAGIC: &[u8; 4] = b"HTCN";
pub const FORMAT_VERSION: u8 = 1;
/// Magic, version and fingerprint.
pub const HEADER_LEN: usize = 13;

/// 64-bit FNV-1a.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn encode<T: Serialize>(magic: &[u8; 4], value: &T) -> Result<Vec<u8>, PluginError> {
    let payload = serde_json::to_vec(value)
        .map_err(|e| PluginError::invalid_input(format!("cannot encode blob: {e}")))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&fingerprint(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The stored fingerprint of a blob whose header is well formed.
pub fn stored_fingerprint(blob: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = blob.get(5..HEADER_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

pub fn decode<T: DeserializeOwned>(
    magic: &[u8; 4],
    what: &str,
    blob: &[u8],
) -> Result<T, PluginError> {
    if blob.len() < HEADER_LEN || &blob[..4] != magic {
        return Err(PluginError::invalid_profile(format!(
            "not a touch {what} (wrong magic; another plugin's blob?)"
        )));
    }
    if blob[4] != FORMAT_VERSION {
        return Err(PluginError::invalid_profile(format!(
            "touch {what} format version {} is not supported (this plugin reads {FORMAT_VERSION}); re-enrol",
            blob[4]
        )));
    }
    let payload = &blob[HEADER_LEN..];
    if stored_fingerprint(blob) != Some(fingerprint(payload)) {
        return Err(PluginError::invalid_profile(format!(
            "corrupted touch {what}: fingerprint mismatch (truncated or altered)"
        )));
    }
    serde_json::from_slice(payload)
        .map_err(|e| PluginError::invalid_profile(format!("corrupted touch {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let blob = encode(PROFILE_MAGIC, &vec![1.5f64, 2.0]).unwrap();
        let v: Vec<f64> = decode(PROFILE_MAGIC, "profile", &blob).unwrap();
        assert_eq!(v, vec![1.5, 2.0]);
        let err = decode::<Vec<f64>>(POPULATION_MAGIC, "population", &blob).unwrap_err();
        assert!(err.message.contains("wrong magic"), "{err}");
        let err =
            decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &blob[..blob.len() - 2]).unwrap_err();
        assert!(err.message.contains("corrupted"), "{err}");
        let mut flipped = blob.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        let err = decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &flipped).unwrap_err();
        assert!(err.message.contains("corrupted"), "{err}");
        let mut newer = blob.clone();
        newer[4] = 9;
        let err = decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &newer).unwrap_err();
        assert!(err.message.contains("version 9"), "{err}");
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", b"").is_err());
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", b"HKSP\x01[1]").is_err());
    }
}
