//! Versioned envelopes for the opaque blobs the host stores for us.
//!
//! `MAGIC (4 bytes) | FORMAT_VERSION (1 byte) | JSON payload | FNV-1a 64 of the rest (8 bytes LE)`.
//! The magic says "this is a mouse profile/population" (so another plugin's blob is
//! refused, not misread), the version lets a later release migrate or refuse old profiles
//! explicitly, the checksum makes a truncated or bit-flipped blob an error rather than a
//! silently different model (a flipped digit in a tree threshold still parses as JSON).
//! It is not a signature: the engine encrypts and authenticates profiles at rest.

use habitus_plugin::PluginError;
use serde::{de::DeserializeOwned, Serialize};

pub const PROFILE_MAGIC: &[u8; 4] = b"HMSP";
pub const POPULATION_MAGIC: &[u8; 4] = b"HMSN";
pub const FORMAT_VERSION: u8 = 1;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn encode<T: Serialize>(magic: &[u8; 4], value: &T) -> Result<Vec<u8>, PluginError> {
    let mut out = magic.to_vec();
    out.push(FORMAT_VERSION);
    serde_json::to_writer(&mut out, value)
        .map_err(|e| PluginError::invalid_input(format!("cannot encode blob: {e}")))?;
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(
    magic: &[u8; 4],
    what: &str,
    blob: &[u8],
) -> Result<T, PluginError> {
    if blob.len() < 13 || &blob[..4] != magic {
        return Err(PluginError::invalid_profile(format!(
            "not a mouse {what} (wrong magic; another plugin's blob?)"
        )));
    }
    if blob[4] != FORMAT_VERSION {
        return Err(PluginError::invalid_profile(format!(
            "mouse {what} format version {} is not supported (this plugin reads {FORMAT_VERSION}); re-enrol",
            blob[4]
        )));
    }
    let (body, sum) = blob.split_at(blob.len() - 8);
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    if fnv1a(body) != u64::from_le_bytes(stored) {
        return Err(PluginError::invalid_profile(format!(
            "corrupted mouse {what}: checksum mismatch (truncated or damaged)"
        )));
    }
    serde_json::from_slice(&body[5..])
        .map_err(|e| PluginError::invalid_profile(format!("corrupted mouse {what}: {e}")))
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
        let mut newer = blob.clone();
        newer[4] = 9;
        let err = decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &newer).unwrap_err();
        assert!(err.message.contains("version 9"), "{err}");
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", b"").is_err());
        for bit in 0..(blob.len() - 4) * 8 {
            let mut flipped = blob.clone();
            flipped[4 + bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &flipped).is_err(),
                "bit {bit} flipped unnoticed"
            );
        }
        let keystroke = b"HKSP\x01[1.0]";
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", keystroke).is_err());
    }
}
