//! `habitus export USER`: everything stored about a user, as JSON a person can read.

use serde_json::{json, Value};

use super::StoredProfile;

/// One row of the per-day adaptation counter.
pub(super) struct DayCount {
    pub plugin: String,
    pub day: i64,
    pub count: i64,
}

pub(super) fn to_json(user: &str, profiles: &[StoredProfile], days: &[DayCount]) -> Value {
    let profiles: Vec<Value> = profiles
        .iter()
        .map(|p| {
            json!({
                "plugin": p.plugin,
                "revision": p.revision,
                "windows": p.windows,
                "enrolled_at": p.enrolled_at,
                "updated_at": p.updated_at,
                "adaptations": p.adaptations,
                "blob_base64": base64(&p.blob),
                "content": readable_content(&p.blob),
            })
        })
        .collect();
    let days: Vec<Value> = days
        .iter()
        .map(|d| json!({ "plugin": d.plugin, "day": d.day, "count": d.count }))
        .collect();
    json!({ "user": user, "profiles": profiles, "adaptations_per_day": days })
}

/// Plugins' profile blobs are conventionally the SDK envelope (`habitus_plugin::blob`:
/// 4 ASCII magic bytes, a format byte, a u32 LE payload length, a JSON payload, an 8-byte
/// checksum) or, in older plugins, magic, version byte and JSON (`HKSP\x01{...}`). When a
/// blob has either shape, show the JSON itself so the export is readable; otherwise
/// `null` (the base64 still shows every byte).
pub(super) fn readable_content(blob: &[u8]) -> Value {
    let Some((magic, rest)) = blob.split_first_chunk::<4>() else {
        return Value::Null;
    };
    let Some((_version, body)) = rest.split_first() else {
        return Value::Null;
    };
    if !magic.iter().all(u8::is_ascii_graphic) {
        return Value::Null;
    }
    // The envelope: length, payload, checksum (not verified here: the plugin does that).
    if let Some((len, tail)) = body.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() == len.saturating_add(8) {
            if let Ok(v) = serde_json::from_slice(&tail[..len]) {
                return v;
            }
        }
    }
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// Standard base64 (RFC 4648 §4) with padding.
pub(super) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn store_readable_content_only_for_magic_version_json() {
        assert_eq!(readable_content(b"HKSP\x01{\"a\":1}"), json!({"a": 1}));
        let enveloped = [&b"HKSP\x02\x07\x00\x00\x00{\"a\":2}"[..], &[0u8; 8]].concat();
        assert_eq!(readable_content(&enveloped), json!({"a": 2}));
        // Length disagreeing with the size: not the envelope, and not JSON either.
        assert_eq!(
            readable_content(&enveloped[..enveloped.len() - 1]),
            Value::Null
        );
        assert_eq!(readable_content(b"HKSP\x01not json"), Value::Null);
        assert_eq!(readable_content(b"\x00KSP\x01{\"a\":1}"), Value::Null);
        assert_eq!(readable_content(b"HKSP"), Value::Null);
        assert_eq!(readable_content(b"HKSP\x01"), Value::Null);
    }
}
