//! Versioned envelopes for the opaque blobs the host stores for us: the SDK's
//! [`habitus_plugin::blob`] (`MAGIC | FORMAT | LENGTH | JSON payload | FNV-1a 64`).
//! The magic says "this is a keystroke profile/population" (so another plugin's blob is
//! refused, not misread), the format lets a later release migrate or refuse old profiles
//! explicitly, and length and checksum make a truncated or bit-flipped blob an error
//! rather than a silently different model (a flipped digit still parses as JSON).
//! Format 1 (no length or checksum) is refused: re-enrol.

use habitus_plugin::{blob, PluginError};
use serde::{de::DeserializeOwned, Serialize};

pub const PROFILE_MAGIC: &[u8; 4] = b"HKSP";
pub const POPULATION_MAGIC: &[u8; 4] = b"HKSN";
pub const FORMAT_VERSION: u8 = 2;

pub fn encode<T: Serialize>(magic: &[u8; 4], value: &T) -> Result<Vec<u8>, PluginError> {
    let payload = serde_json::to_vec(value)
        .map_err(|e| PluginError::invalid_input(format!("cannot encode blob: {e}")))?;
    Ok(blob::seal(magic, FORMAT_VERSION, &payload))
}

pub fn decode<T: DeserializeOwned>(
    magic: &[u8; 4],
    what: &str,
    bytes: &[u8],
) -> Result<T, PluginError> {
    let opened = blob::open(magic, &format!("keystroke {what}"), bytes)?;
    if opened.format != FORMAT_VERSION {
        return Err(PluginError::invalid_profile(format!(
            "keystroke {what} format version {} is not supported (this plugin reads {FORMAT_VERSION}); re-enrol",
            opened.format
        )));
    }
    serde_json::from_slice(opened.payload)
        .map_err(|e| PluginError::invalid_profile(format!("corrupted keystroke {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode(PROFILE_MAGIC, &vec![1.5f64, 2.0]).unwrap();
        let v: Vec<f64> = decode(PROFILE_MAGIC, "profile", &bytes).unwrap();
        assert_eq!(v, vec![1.5, 2.0]);
        let err = decode::<Vec<f64>>(POPULATION_MAGIC, "population", &bytes).unwrap_err();
        assert!(err.message.contains("wrong magic"), "{err}");
        let err =
            decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &bytes[..bytes.len() - 2]).unwrap_err();
        assert!(err.message.contains("truncated"), "{err}");
        // A newer format with a valid envelope: refused by version, not by checksum.
        let newer = blob::seal(PROFILE_MAGIC, 9, b"[1.0]");
        let err = decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &newer).unwrap_err();
        assert!(err.message.contains("version 9"), "{err}");
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", b"").is_err());
        // Every single-bit flip after the magic is noticed.
        for bit in 0..(bytes.len() - 4) * 8 {
            let mut flipped = bytes.clone();
            flipped[4 + bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &flipped).is_err(),
                "bit {bit} flipped unnoticed"
            );
        }
        // The format-1 layout of earlier releases is refused, not misread.
        let old = [&PROFILE_MAGIC[..], b"\x01[1.0]"].concat();
        assert!(decode::<Vec<f64>>(PROFILE_MAGIC, "profile", &old).is_err());
    }
}
