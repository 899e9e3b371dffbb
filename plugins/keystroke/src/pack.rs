//! Compact storage of per-id timing statistics inside the JSON blobs: a free-text cohort
//! holds hundreds of thousands of `(id, count, mean, population mean)` entries, which as
//! JSON numbers would be five times larger and slower to parse. They are packed as
//! little-endian binary (`u64` id, three `f32`) in one base64 string per list.
//!
//! Unpacking checks everything a scorer relies on (lengths, finite values, ids strictly
//! increasing) and reports a clear error otherwise.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::free::{Gallery, Stat, RHYTHM};

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("packed statistics: not base64 ({e})"))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.bytes.len() < N {
            return Err("packed statistics are truncated".into());
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Result<f64, String> {
        let v = f32::from_le_bytes(self.take::<4>()?) as f64;
        if v.is_finite() {
            Ok(v)
        } else {
            Err("packed statistics hold a non-finite value".into())
        }
    }
    fn f64(&mut self) -> Result<f64, String> {
        let v = f64::from_le_bytes(self.take::<8>()?);
        if v.is_finite() {
            Ok(v)
        } else {
            Err("packed statistics hold a non-finite value".into())
        }
    }
}

/// Packs galleries: per gallery its entry count, its rhythm vector (`f64`), then per
/// entry `id, n, mean, mu`.
pub fn pack_galleries(galleries: &[Gallery]) -> String {
    let mut b = Vec::new();
    b.extend_from_slice(&(galleries.len() as u32).to_le_bytes());
    for g in galleries {
        b.extend_from_slice(&(g.entries.len() as u32).to_le_bytes());
        for r in g.rhythm {
            b.extend_from_slice(&r.to_le_bytes());
        }
        for (id, s) in &g.entries {
            b.extend_from_slice(&id.to_le_bytes());
            for v in [s.n, s.mean, s.mu] {
                b.extend_from_slice(&(v as f32).to_le_bytes());
            }
        }
    }
    encode(&b)
}

pub fn unpack_galleries(text: &str) -> Result<Vec<Gallery>, String> {
    let bytes = decode(text)?;
    let mut r = Reader { bytes: &bytes };
    let count = r.u32()? as usize;
    // Every gallery takes at least 60 bytes: refuse absurd counts before allocating.
    if count > bytes.len() / 60 + 1 {
        return Err("packed statistics: gallery count exceeds the data".into());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let entries = r.u32()? as usize;
        if entries > r.bytes.len() / 20 + 1 {
            return Err("packed statistics: entry count exceeds the data".into());
        }
        let mut rhythm = [0.0; RHYTHM];
        for v in rhythm.iter_mut() {
            *v = r.f64()?;
        }
        let mut list: Vec<(u64, Stat)> = Vec::with_capacity(entries);
        for _ in 0..entries {
            let id = r.u64()?;
            let (n, mean, mu) = (r.f32()?, r.f32()?, r.f32()?);
            if list.last().is_some_and(|(last, _)| *last >= id) {
                return Err("packed statistics: ids are not strictly increasing".into());
            }
            if n <= 0.0 {
                return Err("packed statistics: a count is not positive".into());
            }
            list.push((id, Stat { n, mean, mu }));
        }
        out.push(Gallery {
            entries: list,
            rhythm,
        });
    }
    if !r.bytes.is_empty() {
        return Err("packed statistics: trailing bytes".into());
    }
    Ok(out)
}

/// `#[serde(with = "crate::pack::galleries")]`
pub mod galleries {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[Gallery], s: S) -> Result<S::Ok, S::Error> {
        pack_galleries(value).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Gallery>, D::Error> {
        let text = String::deserialize(d)?;
        unpack_galleries(&text).map_err(serde::de::Error::custom)
    }
}

/// `(id, value)` lists, sorted by id: `u64` id, `f32` value.
pub mod table {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[(u64, f64)], s: S) -> Result<S::Ok, S::Error> {
        let mut b = Vec::with_capacity(value.len() * 12);
        for (id, v) in value {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&(*v as f32).to_le_bytes());
        }
        encode(&b).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, f64)>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = decode(&text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 12 != 0 {
            return Err(serde::de::Error::custom(
                "packed table length is not a multiple of 12",
            ));
        }
        let mut r = Reader { bytes: &bytes };
        let mut out: Vec<(u64, f64)> = Vec::with_capacity(bytes.len() / 12);
        while !r.bytes.is_empty() {
            let id = r.u64().map_err(serde::de::Error::custom)?;
            let v = r.f32().map_err(serde::de::Error::custom)?;
            if out.last().is_some_and(|(last, _)| *last >= id) {
                return Err(serde::de::Error::custom(
                    "packed table: ids are not strictly increasing",
                ));
            }
            out.push((id, v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for n in 0..10 {
            let bytes: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
        assert!(decode("abc").is_err());
        assert!(decode("ab!d").is_err());
        assert!(decode("a=bc").is_err());
    }

    #[test]
    fn galleries_round_trip_and_bad_ones_are_refused() {
        let g = Gallery {
            entries: vec![
                (
                    3,
                    Stat {
                        n: 2.0,
                        mean: 4.5,
                        mu: 4.25,
                    },
                ),
                (
                    9,
                    Stat {
                        n: 1.0,
                        mean: -0.5,
                        mu: 0.0,
                    },
                ),
            ],
            rhythm: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        };
        let text = pack_galleries(&[g.clone(), g.clone()]);
        assert_eq!(unpack_galleries(&text).unwrap(), vec![g.clone(), g.clone()]);
        let mut swapped = g.clone();
        swapped.entries.reverse();
        assert!(unpack_galleries(&pack_galleries(&[swapped]))
            .unwrap_err()
            .contains("increasing"));
        let short = &text[..text.len() - 8];
        assert!(unpack_galleries(short).is_err());
    }
}
