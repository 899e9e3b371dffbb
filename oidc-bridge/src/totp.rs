//! TOTP (RFC 6238, HMAC-SHA1, 30 s steps, 6 digits) with ring, as the step-up factor.

use ring::hmac;

const STEP_S: u64 = 30;
const DIGITS: u32 = 6;

/// RFC 4648 base32 (no padding needed; case and spaces ignored).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

pub fn encode_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut bits: u32 = 0;
    let mut n = 0;
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 5 {
            n -= 5;
            out.push(ALPHABET[((bits >> n) & 31) as usize] as char);
        }
        bits &= (1 << n) - 1;
    }
    if n > 0 {
        out.push(ALPHABET[((bits << (5 - n)) & 31) as usize] as char);
    }
    out
}

/// The code for time step `counter` (HOTP, RFC 4226).
pub fn hotp(key: &[u8], counter: u64) -> u32 {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
        &counter.to_be_bytes(),
    );
    let h = tag.as_ref();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    bin % 10u32.pow(DIGITS)
}

pub fn totp_at(key: &[u8], unix_s: u64) -> u32 {
    hotp(key, unix_s / STEP_S)
}

/// Checks `code` against the steps around `unix_s` (±1 step of clock skew). Returns the
/// matching step so the caller can refuse its reuse.
pub fn verify(secret_b32: &str, code: &str, unix_s: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let given: u32 = code.parse().ok()?;
    let key = decode_base32(secret_b32)?;
    let now = unix_s / STEP_S;
    let mut matched = None;
    // Check every candidate (no early exit) so timing does not reveal which step matched.
    for step in [now.saturating_sub(1), now, now + 1] {
        if crate::store::ct_eq(&hotp(&key, step).to_be_bytes(), &given.to_be_bytes()) {
            matched = Some(step);
        }
    }
    matched
}

/// A fresh random 160-bit secret, base32.
pub fn new_secret() -> Option<String> {
    let mut key = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).ok()?;
    Some(encode_base32(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        let key = b"12345678901234567890";
        // RFC 6238 appendix B (8 digits there; the last 6 digits here).
        for (t, expected) in [
            (59, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(totp_at(key, t), expected % 1_000_000, "t = {t}");
        }
    }

    #[test]
    fn base32_round_trip_and_verify() {
        let b32 = encode_base32(b"12345678901234567890");
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            decode_base32(&b32).as_deref(),
            Some(&b"12345678901234567890"[..])
        );
        let code = format!("{:06}", totp_at(b"12345678901234567890", 1234567890));
        assert!(verify(&b32, &code, 1234567890).is_some());
        assert!(
            verify(&b32, &code, 1234567890 + 31).is_some(),
            "one step of skew"
        );
        assert!(verify(&b32, &code, 1234567890 + 95).is_none());
        assert!(verify(&b32, "12345", 0).is_none());
        assert!(decode_base32("not base32!").is_none());
    }
}
