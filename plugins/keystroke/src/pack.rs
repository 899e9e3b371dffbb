//! Compact storage of per-id timing statistics inside the JSON blobs: a free-text cohort
//! holds hundreds of thousands of `(id, count, mean, population mean)` entries, which as
//! JSON numbers would be five times larger and slower to parse. They are packed as
//! little-endian binary in one base64 string per list: galleries as `u64` id and three
//! `f32` per entry; a profile's S-norm cohort inverted ([`cohort`], 8 bytes per entry).
//!
//! Unpacking checks everything a scorer relies on (lengths, finite values, ids strictly
//! increasing) and reports a clear error otherwise.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cohort::Cohort;
use crate::free::{Gallery, Stat, RHYTHM};

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("packed statistics: not base64 ({e})"))
}

/// Decodes a list of fixed-size binary records, refusing a length that is not a whole
/// number of them.
fn decode_records(text: &str, size: usize, what: &str) -> Result<Vec<u8>, String> {
    let bytes = decode(text)?;
    if bytes.len() % size != 0 {
        return Err(format!("{what} length is not a multiple of {size}"));
    }
    Ok(bytes)
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
    fn u16(&mut self) -> Result<u16, String> {
        self.take::<2>().map(u16::from_le_bytes)
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

/// First word of an inverted cohort. A gallery list starts with its gallery count, which
/// can never be this large (each gallery takes at least 60 bytes), so the two layouts of
/// a profile's cohort cannot be mistaken for each other.
const INVERTED: u32 = 0xC0C0_1D01;

/// Packs an inverted cohort: `INVERTED`, the numbers of galleries, ids and entries (`u32`
/// each), every gallery's rhythm vector (`f64`), per id `u64 id, f32 population mean, u16
/// entries`, then per entry `u16 gallery, u16 count, f32 mean`.
pub fn pack_cohort(cohort: &Cohort) -> String {
    let mut b =
        Vec::with_capacity(16 + cohort.len() * 56 + cohort.ids.len() * 14 + cohort.entries() * 8);
    for v in [
        INVERTED,
        cohort.len() as u32,
        cohort.ids.len() as u32,
        cohort.entries() as u32,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for rhythm in &cohort.rhythms {
        for r in rhythm {
            b.extend_from_slice(&r.to_le_bytes());
        }
    }
    for (i, (id, mu)) in cohort.ids.iter().zip(&cohort.mu).enumerate() {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&(*mu as f32).to_le_bytes());
        let entries = cohort.starts[i + 1] - cohort.starts[i];
        b.extend_from_slice(&(entries as u16).to_le_bytes());
    }
    for e in 0..cohort.entries() {
        b.extend_from_slice(&cohort.gallery[e].to_le_bytes());
        // Whole numbers in 1..=65535: `Cohort::from_galleries` refuses anything else.
        b.extend_from_slice(&(cohort.n[e] as u16).to_le_bytes());
        b.extend_from_slice(&(cohort.mean[e] as f32).to_le_bytes());
    }
    encode(&b)
}

/// Reads either layout of a profile's cohort: inverted, or (free-text profiles written
/// before it) a gallery list, inverted on reading.
pub fn unpack_cohort(text: &str) -> Result<Cohort, String> {
    let bytes = decode(text)?;
    let mut r = Reader { bytes: &bytes };
    if bytes.len() < 4 || u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != INVERTED {
        return Cohort::from_galleries(&unpack_galleries(text)?);
    }
    r.u32()?;
    let (galleries, ids, entries) = (r.u32()? as u64, r.u32()? as u64, r.u32()? as u64);
    // Every size follows from the three counts: check them before allocating anything.
    if 16 + galleries * 56 + ids * 14 + entries * 8 != bytes.len() as u64 {
        return Err("packed cohort: its counts do not match its length".into());
    }
    if galleries > u16::MAX as u64 {
        return Err("packed cohort: too many galleries".into());
    }
    let mut cohort = Cohort::default();
    for _ in 0..galleries {
        let mut rhythm = [0.0; RHYTHM];
        for v in rhythm.iter_mut() {
            *v = r.f64()?;
        }
        cohort.rhythms.push(rhythm);
    }
    let mut counts = Vec::with_capacity(ids as usize);
    let mut start = 0u64;
    for _ in 0..ids {
        let id = r.u64()?;
        if cohort.ids.last().is_some_and(|&last| last >= id) {
            return Err("packed cohort: ids are not strictly increasing".into());
        }
        cohort.ids.push(id);
        cohort.mu.push(r.f32()?);
        let count = r.u16()?;
        if count == 0 {
            return Err("packed cohort: an id without entries".into());
        }
        counts.push(count);
        cohort.starts.push(start as u32);
        start += count as u64;
    }
    if start != entries {
        return Err("packed cohort: entries do not add up".into());
    }
    cohort.starts.push(start as u32);
    for count in counts {
        let mut last: Option<u16> = None;
        for _ in 0..count {
            let (gallery, n, mean) = (r.u16()?, r.u16()?, r.f32()?);
            if gallery as u64 >= galleries || last.is_some_and(|l| l >= gallery) {
                return Err("packed cohort: gallery numbers out of range or order".into());
            }
            if n == 0 {
                return Err("packed statistics: a count is not positive".into());
            }
            last = Some(gallery);
            cohort.gallery.push(gallery);
            cohort.n.push(n as f64);
            cohort.mean.push(mean);
        }
    }
    Ok(cohort)
}

/// `#[serde(with = "crate::pack::cohort")]`
pub mod cohort {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Cohort, s: S) -> Result<S::Ok, S::Error> {
        pack_cohort(value).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cohort, D::Error> {
        let text = String::deserialize(d)?;
        unpack_cohort(&text).map_err(serde::de::Error::custom)
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
        let bytes = decode_records(&text, 12, "packed table").map_err(serde::de::Error::custom)?;
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

/// Lists of model coefficients: `f32` each (the precision of the data they came from).
pub mod floats {
    use super::*;

    pub fn serialize<S: Serializer>(value: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut b = Vec::with_capacity(value.len() * 4);
        for v in value {
            b.extend_from_slice(&(*v as f32).to_le_bytes());
        }
        encode(&b).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = decode_records(&text, 4, "packed floats").map_err(serde::de::Error::custom)?;
        let mut r = Reader { bytes: &bytes };
        let mut out = Vec::with_capacity(bytes.len() / 4);
        while !r.bytes.is_empty() {
            out.push(r.f32().map_err(serde::de::Error::custom)?);
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
    fn floats_round_trip_at_f32_precision_and_bad_ones_are_refused() {
        #[derive(Debug, Serialize, Deserialize)]
        struct W(#[serde(with = "floats")] Vec<f64>);
        let v = vec![0.0, -1.5, 0.375, 3.25e7]; // exact in f32
        let text = serde_json::to_string(&W(v.clone())).unwrap();
        let back: W = serde_json::from_str(&text).unwrap();
        assert_eq!(back.0, v);
        let third: W =
            serde_json::from_str(&serde_json::to_string(&W(vec![0.1])).unwrap()).unwrap();
        assert_eq!(third.0, vec![0.1f32 as f64]);
        let nan = format!("\"{}\"", encode(&f32::NAN.to_le_bytes()));
        assert!(serde_json::from_str::<W>(&nan)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        let short = format!("\"{}\"", encode(&[0u8; 6]));
        assert!(serde_json::from_str::<W>(&short)
            .unwrap_err()
            .to_string()
            .contains("multiple of 4"));
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

    fn stat(n: f64, mean: f64, mu: f64) -> Stat {
        Stat { n, mean, mu }
    }

    #[test]
    fn cohorts_round_trip_read_the_gallery_layout_and_refuse_bad_ones() {
        let galleries = vec![
            Gallery {
                entries: vec![(3, stat(2.0, 4.5, 4.25)), (9, stat(1.0, -0.5, 0.0))],
                rhythm: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            },
            Gallery {
                entries: vec![(5, stat(3.0, 1.5, 2.0)), (9, stat(70.0, 0.25, 0.0))],
                rhythm: [7.0; RHYTHM],
            },
        ];
        let cohort = Cohort::from_galleries(&galleries).unwrap();
        assert_eq!(cohort.ids, vec![3, 5, 9]);
        assert_eq!(cohort.starts, vec![0, 1, 2, 4]);
        assert_eq!(cohort.gallery, vec![0, 1, 0, 1]);
        let text = pack_cohort(&cohort);
        assert_eq!(unpack_cohort(&text).unwrap(), cohort);
        // Profiles written before the inverted layout hold the galleries.
        assert_eq!(unpack_cohort(&pack_galleries(&galleries)).unwrap(), cohort);
        assert!(unpack_cohort(&pack_cohort(&Cohort::default()))
            .unwrap()
            .is_empty());
        // 16 + 2 × 56 + 3 × 14 + 4 × 8 bytes.
        let bytes = decode(&text).unwrap();
        assert_eq!(bytes.len(), 16 + 2 * 56 + 3 * 14 + 4 * 8);
        let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = bytes.clone();
            edit(&mut b);
            unpack_cohort(&encode(&b)).unwrap_err()
        };
        assert!(refused(&|b| b.truncate(b.len() - 1)).contains("length"));
        assert!(refused(&|b| b.push(0)).contains("length"));
        assert!(refused(&|b| b[12] = 5).contains("length")); // more entries claimed
        let ids_at = 16 + 2 * 56;
        assert!(
            refused(&|b| b[ids_at..ids_at + 8].copy_from_slice(&7u64.to_le_bytes()))
                .contains("increasing")
        );
        assert!(refused(&|b| b[ids_at + 12] = 2).contains("add up"));
        let entries_at = ids_at + 3 * 14;
        assert!(refused(&|b| b[entries_at] = 2).contains("gallery numbers")); // no gallery 2
        assert!(refused(&|b| b[entries_at + 16] = 1).contains("gallery numbers")); // 1, 1
        assert!(refused(&|b| b[entries_at + 2] = 0).contains("positive"));
        assert!(refused(
            &|b| b[entries_at + 4..entries_at + 8].copy_from_slice(&f32::NAN.to_le_bytes())
        )
        .contains("non-finite"));
    }
}
