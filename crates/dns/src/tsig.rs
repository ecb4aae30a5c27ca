//! TSIG (RFC 8945) with HMAC-SHA256: verifying a signed request and signing responses,
//! including the later messages of a multi-message zone transfer. Works on raw bytes, because a
//! MAC covers the message exactly as it was sent.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Seconds of clock difference accepted, and put in our signatures.
pub const FUDGE: u16 = 300;
const TSIG_TYPE: u16 = 250;
/// Bytes of an HMAC-SHA256 MAC.
const MAC_LEN: usize = 32;
const CLASS_ANY: u16 = 255;
/// RFC 8945 error codes.
pub const BADSIG: u16 = 16;
pub const BADKEY: u16 = 17;
pub const BADTIME: u16 = 18;

/// A key: its name (lowercase, no trailing dot) and secret.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub secret: Vec<u8>,
}

/// A verified request's signature, needed to sign the response.
#[derive(Debug, Clone)]
pub struct Signed {
    pub key: Key,
    pub mac: Vec<u8>,
}

/// Why a request's TSIG was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigFailure {
    Missing,
    Malformed,
    /// An RFC 8945 error code.
    Rejected(u16),
}

fn name_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    out
}

fn algorithm_wire() -> Vec<u8> {
    name_wire("hmac-sha256")
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn variables(key: &str, time: u64, error: u16, other: &[u8]) -> Vec<u8> {
    let mut v = name_wire(key);
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&algorithm_wire());
    v.extend_from_slice(&time.to_be_bytes()[2..]);
    v.extend_from_slice(&FUDGE.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// Reads a name in wire form at `at` without following pointers; returns it dotted and its length.
fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let start = at;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    Some((labels.join("."), at - start))
}

/// Verifies the TSIG record that ends `packet`, with the key `find_key` returns for its name.
pub fn verify_request(
    packet: &[u8],
    now: u64,
    find_key: impl Fn(&str) -> Option<Key>,
) -> Result<Signed, TsigFailure> {
    if packet.len() < 12 || u16::from_be_bytes([packet[10], packet[11]]) == 0 {
        return Err(TsigFailure::Missing);
    }
    // Walk the message to the last additional record, which must be the TSIG.
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(packet, at).ok_or(TsigFailure::Malformed)? + 4;
    }
    let records = usize::from(count(6)) + usize::from(count(8)) + usize::from(count(10)) - 1;
    for _ in 0..records {
        at = skip_record(packet, at).ok_or(TsigFailure::Malformed)?;
    }
    let start = at;
    let (key_name, name_len) = read_name(packet, start).ok_or(TsigFailure::Malformed)?;
    let h = start + name_len;
    let fixed = packet.get(h..h + 10).ok_or(TsigFailure::Malformed)?;
    if u16::from_be_bytes([fixed[0], fixed[1]]) != TSIG_TYPE
        || u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_ANY
    {
        return Err(TsigFailure::Missing);
    }
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    if h + 10 + rdlen != packet.len() {
        return Err(TsigFailure::Malformed);
    }
    let rdata = &packet[h + 10..];
    let (algorithm, alg_len) = read_name(rdata, 0).ok_or(TsigFailure::Malformed)?;
    let rest = rdata.get(alg_len..).ok_or(TsigFailure::Malformed)?;
    if rest.len() < 10 {
        return Err(TsigFailure::Malformed);
    }
    let time = u64::from_be_bytes([0, 0, rest[0], rest[1], rest[2], rest[3], rest[4], rest[5]]);
    let fudge = u16::from_be_bytes([rest[6], rest[7]]);
    let mac_len = usize::from(u16::from_be_bytes([rest[8], rest[9]]));
    let mac = rest
        .get(10..10 + mac_len)
        .ok_or(TsigFailure::Malformed)?
        .to_vec();
    let tail = rest.get(10 + mac_len..).ok_or(TsigFailure::Malformed)?;
    if tail.len() < 6 {
        return Err(TsigFailure::Malformed);
    }
    let original_id = [tail[0], tail[1]];
    let error = u16::from_be_bytes([tail[2], tail[3]]);
    let other_len = usize::from(u16::from_be_bytes([tail[4], tail[5]]));
    let other = tail.get(6..6 + other_len).ok_or(TsigFailure::Malformed)?;
    if algorithm != "hmac-sha256" {
        return Err(TsigFailure::Rejected(BADKEY));
    }
    let key = find_key(&key_name).ok_or(TsigFailure::Rejected(BADKEY))?;
    let mut message = packet[..start].to_vec();
    message[..2].copy_from_slice(&original_id);
    let arcount = u16::from_be_bytes([message[10], message[11]]) - 1;
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
    let expected = hmac(
        &key.secret,
        &[&message, &variables(&key.name, time, error, other)],
    );
    if mac.len() < 16 || expected.get(..mac.len()) != Some(mac.as_slice()) {
        return Err(TsigFailure::Rejected(BADSIG));
    }
    if now.abs_diff(time) > u64::from(fudge) {
        return Err(TsigFailure::Rejected(BADTIME));
    }
    Ok(Signed { key, mac })
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l if l > 63 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// The offset after the resource record at `at`.
fn skip_record(packet: &[u8], at: usize) -> Option<usize> {
    let h = skip_name(packet, at)?;
    let fixed = packet.get(h..h + 10)?;
    let end = h + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    (end <= packet.len()).then_some(end)
}

/// The bytes [`sign`] adds to a message signed with `key`.
pub fn signature_len(key: &Key) -> usize {
    // Owner, type, class, TTL and length; then algorithm, time, fudge, MAC size and MAC,
    // original id, error and other-data length.
    name_wire(&key.name).len() + 10 + algorithm_wire().len() + 6 + 2 + 2 + MAC_LEN + 2 + 2 + 2
}

/// Appends a TSIG record to `message` (an encoded DNS message without one). `prior` is the MAC
/// of the request (first response) or of the previous message; `first` selects full TSIG
/// variables (the first message) or timers only (later messages of a transfer). Returns the MAC.
pub fn sign(
    message: &mut Vec<u8>,
    key: &Key,
    prior: Option<&[u8]>,
    first: bool,
    now: u64,
) -> Vec<u8> {
    let prior_part = prior.map(|p| {
        let mut v = (p.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(p);
        v
    });
    let vars = if first {
        variables(&key.name, now, 0, &[])
    } else {
        let mut v = now.to_be_bytes()[2..].to_vec();
        v.extend_from_slice(&FUDGE.to_be_bytes());
        v
    };
    let mac = hmac(
        &key.secret,
        &[prior_part.as_deref().unwrap_or(&[]), message, &vars],
    );
    let original_id = [message[0], message[1]];
    let mut rdata = algorithm_wire();
    rdata.extend_from_slice(&now.to_be_bytes()[2..]);
    rdata.extend_from_slice(&FUDGE.to_be_bytes());
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&original_id);
    rdata.extend_from_slice(&[0, 0, 0, 0]);
    message.extend_from_slice(&name_wire(&key.name));
    message.extend_from_slice(&TSIG_TYPE.to_be_bytes());
    message.extend_from_slice(&CLASS_ANY.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    message.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    message.extend_from_slice(&rdata);
    let arcount = u16::from_be_bytes([message[10], message[11]]).saturating_add(1);
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            name: "transfer.key".into(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        }
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let mut request = vec![
            0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e',
            0, 0, 252, 0, 1,
        ];
        sign(&mut request, &key(), None, true, 1_000_000);
        let ok = verify_request(&request, 1_000_010, |n| (n == "transfer.key").then(key))
            .expect("verifies");
        assert_eq!(ok.mac.len(), 32);
        let mut tampered = request.clone();
        tampered[14] ^= 0x20;
        assert_eq!(
            verify_request(&tampered, 1_000_010, |_| Some(key())).err(),
            Some(TsigFailure::Rejected(BADSIG))
        );
        assert_eq!(
            verify_request(&request, 1_000_010, |_| None).err(),
            Some(TsigFailure::Rejected(BADKEY))
        );
        assert_eq!(
            verify_request(&request, 2_000_000, |_| Some(key())).err(),
            Some(TsigFailure::Rejected(BADTIME))
        );
        assert_eq!(request.len(), 25 + signature_len(&key()));
        let unsigned = &request[..25];
        let mut unsigned = unsigned.to_vec();
        unsigned[11] = 0;
        assert_eq!(
            verify_request(&unsigned, 1_000_010, |_| Some(key())).err(),
            Some(TsigFailure::Missing)
        );
    }
}
