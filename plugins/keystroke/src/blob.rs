//! Versioned envelopes for the opaque blobs the host stores for us.
//!
//! `MAGIC (4 bytes) | FORMAT_VERSION (1 byte) | JSON payload`. The magic says "this is a
//! keystroke profile/population" (so another plugin's blob is refused, not misread), the
//! version lets a later release migrate or refuse old profiles explicitly.

use habitus_plugin::PluginError;
use serde::{de::DeserializeOwned, Serialize};

pub const PROFILE_MAGIC: &[u8; 4] = b"HKSP";
pub const POPULATION_MAGIC: &[u8; 4] = b"HKSN";
pub const FORMAT_VERSION: u8 = 1;

pub fn encode<T: Serialize>(magic: &[u8; 4], value: &T) -> Result<Vec<u8>, PluginError> {
    let mut out = magic.to_vec();
    out.push(FORMAT_VERSION);
    serde_json::to_writer(&mut out, value)
        .map_err(|e| PluginError::invalid_input(format!("cannot encode blob: {e}")))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(
    magic: &[u8; 4],
    what: &str,
    blob: &[u8],
) -> Result<T, PluginError> {
    if blob.len() < 5 || &blob[..4] != magic {
        return Err(PluginError::invalid_profile(format!(
            "not a keystroke {what} (wrong magic; another plugin's blob?)"
        )));
    }
    if blob[4] != FORMAT_VERSION {
        return Err(PluginError::invalid_profile(format!(
            "keystroke {what} format version {} is not supported (this plugin reads {FORMAT_VERSION}); re-enrol",
            blob[4]
        )));
    }
    serde_json::from_slice(&blob[5..])
        .map_err(|e| PluginError::invalid_profile(format!("corrupted keystroke {what}: {e}")))
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
    }
}
