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

/// Why a request's TSIG could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigFailure {
    Missing,
    Malformed,
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

/// The one algorithm supported.
const ALGORITHM: &str = "hmac-sha256";

fn algorithm_wire() -> Vec<u8> {
    name_wire(ALGORITHM)
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

/// The TSIG variables (RFC 8945 §4.3.3) of a first message or a request.
fn variables(key: &str, algorithm: &str, timers: Timers, error: u16, other: &[u8]) -> Vec<u8> {
    let mut v = name_wire(key);
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&name_wire(algorithm));
    v.extend_from_slice(&timers.wire());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// Time signed and fudge.
#[derive(Debug, Clone, Copy)]
struct Timers {
    time: u64,
    fudge: u16,
}

impl Timers {
    fn wire(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..6].copy_from_slice(&self.time.to_be_bytes()[2..]);
        out[6..].copy_from_slice(&self.fudge.to_be_bytes());
        out
    }
}

/// Reads a name in wire form at `at` without following pointers; returns it dotted and its length.
pub(crate) fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
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

/// Whether the name in wire form at `at` (`len` bytes, as [`read_name`] read it) can name a
/// key or an algorithm: at most 255 bytes, of visible ASCII without dots or backslashes in a
/// label. Any other is refused as malformed, not echoed in an error.
fn is_key_name(packet: &[u8], at: usize, len: usize) -> bool {
    let Some(mut wire) = packet.get(at..at + len).filter(|_| len <= 255) else {
        return false;
    };
    while let Some((&n, rest)) = wire.split_first() {
        let Some(label) = rest.get(..usize::from(n)) else {
            return false;
        };
        if !label
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'\\'))
        {
            return false;
        }
        wire = &rest[usize::from(n)..];
    }
    true
}

/// The TSIG record that ends a request, as read (not yet verified).
#[derive(Debug, Clone)]
pub struct RequestTsig {
    /// The key's name, lowercase without the trailing dot.
    pub key_name: String,
    algorithm: String,
    timers: Timers,
    mac: Vec<u8>,
    original_id: [u8; 2],
    error: u16,
    other: Vec<u8>,
    /// Where the record starts: the MAC covers the message before it.
    start: usize,
}

/// Why a signed request is refused, and (for BADTIME) the key that verified it, with which the
/// error is signed.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// An RFC 8945 error code.
    pub error: u16,
    pub signed: Option<Signed>,
}

/// Reads the TSIG record that ends `packet`: [`TsigFailure::Missing`] when the message holds
/// none, [`TsigFailure::Malformed`] when the record cannot be read, is not the last one (RFC
/// 8945 §5.1: FORMERR), or has a MAC shorter than half the hash's or longer than it
/// (§5.2.2.1).
pub fn read_request(packet: &[u8]) -> Result<RequestTsig, TsigFailure> {
    if packet.len() < 12 || u16::from_be_bytes([packet[10], packet[11]]) == 0 {
        return Err(TsigFailure::Missing);
    }
    // Walk the message to the last additional record, which must be the TSIG. A message that
    // cannot be walked that far holds no TSIG that could be read: it is the engine's to answer
    // or drop, as it does with every unreadable query.
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(packet, at).ok_or(TsigFailure::Missing)? + 4;
    }
    let records = usize::from(count(6)) + usize::from(count(8)) + usize::from(count(10)) - 1;
    for _ in 0..records {
        let name_end = skip_name(packet, at).ok_or(TsigFailure::Missing)?;
        if packet.get(name_end..name_end + 2) == Some(&TSIG_TYPE.to_be_bytes()[..]) {
            return Err(TsigFailure::Malformed);
        }
        at = skip_record(packet, at).ok_or(TsigFailure::Missing)?;
    }
    let start = at;
    let (key_name, name_len) = read_name(packet, start).ok_or(TsigFailure::Missing)?;
    let h = start + name_len;
    let fixed = packet.get(h..h + 10).ok_or(TsigFailure::Missing)?;
    if u16::from_be_bytes([fixed[0], fixed[1]]) != TSIG_TYPE {
        return Err(TsigFailure::Missing);
    }
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_ANY
        || h + 10 + rdlen != packet.len()
        || !is_key_name(packet, start, name_len)
    {
        return Err(TsigFailure::Malformed);
    }
    let rdata = &packet[h + 10..];
    let (algorithm, alg_len) = read_name(rdata, 0).ok_or(TsigFailure::Malformed)?;
    if !is_key_name(rdata, 0, alg_len) {
        return Err(TsigFailure::Malformed);
    }
    let rest = rdata.get(alg_len..).ok_or(TsigFailure::Malformed)?;
    if rest.len() < 10 {
        return Err(TsigFailure::Malformed);
    }
    let time = u64::from_be_bytes([0, 0, rest[0], rest[1], rest[2], rest[3], rest[4], rest[5]]);
    let fudge = u16::from_be_bytes([rest[6], rest[7]]);
    let mac_len = usize::from(u16::from_be_bytes([rest[8], rest[9]]));
    // (An empty MAC is an error answer's, read here too: a request with one fails as BADSIG.)
    if algorithm == ALGORITHM && mac_len != 0 && !(MAC_LEN / 2..=MAC_LEN).contains(&mac_len) {
        return Err(TsigFailure::Malformed);
    }
    let mac = rest
        .get(10..10 + mac_len)
        .ok_or(TsigFailure::Malformed)?
        .to_vec();
    let tail = rest.get(10 + mac_len..).ok_or(TsigFailure::Malformed)?;
    if tail.len() < 6 {
        return Err(TsigFailure::Malformed);
    }
    let other_len = usize::from(u16::from_be_bytes([tail[4], tail[5]]));
    let other = tail.get(6..6 + other_len).ok_or(TsigFailure::Malformed)?;
    Ok(RequestTsig {
        key_name,
        algorithm,
        timers: Timers { time, fudge },
        mac,
        original_id: [tail[0], tail[1]],
        error: u16::from_be_bytes([tail[2], tail[3]]),
        other: other.to_vec(),
        start,
    })
}

impl RequestTsig {
    /// Verifies the request (`packet`, which this record ends) with the key `find_key` returns
    /// for its name: the checks of RFC 8945 §5.2 in order (key, MAC, time), with the request's
    /// own TSIG variables.
    pub fn verify(
        &self,
        packet: &[u8],
        now: u64,
        find_key: impl Fn(&str) -> Option<Key>,
    ) -> Result<Signed, Refusal> {
        let refuse = |error| Refusal {
            error,
            signed: None,
        };
        if self.algorithm != ALGORITHM {
            return Err(refuse(BADKEY));
        }
        let key = find_key(&self.key_name).ok_or(refuse(BADKEY))?;
        if !self.mac_matches(packet, &key.secret, &[]) {
            return Err(refuse(BADSIG));
        }
        let signed = Signed {
            key,
            mac: self.mac.clone(),
        };
        if now.abs_diff(self.timers.time) > u64::from(self.timers.fudge) {
            return Err(Refusal {
                error: BADTIME,
                signed: Some(signed),
            });
        }
        Ok(signed)
    }

    /// Whether this record's MAC is the one `secret` makes of `packet` (which this record ends)
    /// after `prior` (a request's MAC with its length, for an answer; empty for a request), and
    /// at least half the hash long. Compared in constant time: how far a forged MAC matches
    /// must not show.
    fn mac_matches(&self, packet: &[u8], secret: &[u8], prior: &[u8]) -> bool {
        let expected = hmac(
            secret,
            &[
                prior,
                &self.unsigned(packet, true),
                &variables(
                    &self.key_name,
                    &self.algorithm,
                    self.timers,
                    self.error,
                    &self.other,
                ),
            ],
        );
        let mac = &self.mac;
        expected.get(..mac.len()).is_some_and(|e| {
            mac.len() >= MAC_LEN / 2 && e.iter().zip(mac).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
        })
    }

    /// `packet` without this record (the additional count one less); with `original_id`, under
    /// the id the request was signed with (what the MAC covers).
    pub fn unsigned(&self, packet: &[u8], original_id: bool) -> Vec<u8> {
        let mut message = packet[..self.start].to_vec();
        if original_id {
            message[..2].copy_from_slice(&self.original_id);
        }
        let arcount = u16::from_be_bytes([message[10], message[11]]).saturating_sub(1);
        message[10..12].copy_from_slice(&arcount.to_be_bytes());
        message
    }

    /// Appends to `response` (an encoded error response to this request) the TSIG record of
    /// `refusal`: unsigned, with no MAC, for a bad key or signature; signed, with the request's
    /// time and ours in its other data, for a bad time (RFC 8945 §5.2, §5.3.2).
    pub fn append_error(&self, response: &mut Vec<u8>, refusal: &Refusal, now: u64) {
        match &refusal.signed {
            Some(s) => {
                let ours = now.to_be_bytes()[2..].to_vec();
                sign_with(
                    response,
                    &s.key,
                    Some(&s.mac),
                    true,
                    self.timers,
                    refusal.error,
                    &ours,
                );
            }
            None => {
                let mut rdata = name_wire(&self.algorithm);
                rdata.extend_from_slice(
                    &Timers {
                        time: now,
                        fudge: FUDGE,
                    }
                    .wire(),
                );
                rdata.extend_from_slice(&0u16.to_be_bytes());
                rdata.extend_from_slice(&[response[0], response[1]]);
                rdata.extend_from_slice(&refusal.error.to_be_bytes());
                rdata.extend_from_slice(&0u16.to_be_bytes());
                append_record(response, &self.key_name, &rdata);
            }
        }
    }
}

/// Whether `response` (an answer to a request this server signed with `key`, whose MAC was
/// `request_mac`) is signed with that key, over that MAC, within its time: RFC 8945 §5.4 has a
/// client discard an answer that is not.
pub fn verifies_response(response: &[u8], key: &Key, request_mac: &[u8], now: u64) -> bool {
    let Ok(tsig) = read_request(response) else {
        return false;
    };
    let prior = [&(request_mac.len() as u16).to_be_bytes()[..], request_mac].concat();
    tsig.algorithm == ALGORITHM
        && tsig.error == 0
        && tsig.key_name.eq_ignore_ascii_case(&key.name)
        && tsig.mac_matches(response, &key.secret, &prior)
        && now.abs_diff(tsig.timers.time) <= u64::from(tsig.timers.fudge)
}

/// The offset after a (possibly compressed) name at `at`.
pub(crate) fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
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
    let timers = Timers {
        time: now,
        fudge: FUDGE,
    };
    sign_with(message, key, prior, first, timers, 0, &[])
}

/// [`sign`] with the timers, error and other data given.
fn sign_with(
    message: &mut Vec<u8>,
    key: &Key,
    prior: Option<&[u8]>,
    first: bool,
    timers: Timers,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let prior_part = prior.map(|p| {
        let mut v = (p.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(p);
        v
    });
    let vars = if first {
        variables(&key.name, ALGORITHM, timers, error, other)
    } else {
        timers.wire().to_vec()
    };
    let mac = hmac(
        &key.secret,
        &[prior_part.as_deref().unwrap_or(&[]), message, &vars],
    );
    let original_id = [message[0], message[1]];
    let mut rdata = algorithm_wire();
    rdata.extend_from_slice(&timers.wire());
    rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    rdata.extend_from_slice(&mac);
    rdata.extend_from_slice(&original_id);
    rdata.extend_from_slice(&error.to_be_bytes());
    rdata.extend_from_slice(&(other.len() as u16).to_be_bytes());
    rdata.extend_from_slice(other);
    append_record(message, &key.name, &rdata);
    mac
}

/// Appends a TSIG record owned by `key_name` to `message` and counts it.
fn append_record(message: &mut Vec<u8>, key_name: &str, rdata: &[u8]) {
    message.extend_from_slice(&name_wire(key_name));
    message.extend_from_slice(&TSIG_TYPE.to_be_bytes());
    message.extend_from_slice(&CLASS_ANY.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    message.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    message.extend_from_slice(rdata);
    let arcount = u16::from_be_bytes([message[10], message[11]]).saturating_add(1);
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
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

    /// The error a request gets verified at `now` with `find_key`, if any.
    fn refused(request: &[u8], now: u64, find_key: impl Fn(&str) -> Option<Key>) -> Option<u16> {
        read_request(request)
            .expect("a TSIG record")
            .verify(request, now, find_key)
            .err()
            .map(|r| r.error)
    }

    /// An AXFR query for example., unsigned.
    fn query() -> Vec<u8> {
        vec![
            0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e',
            0, 0, 252, 0, 1,
        ]
    }

    fn signed_query() -> Vec<u8> {
        let mut request = query();
        sign(&mut request, &key(), None, true, 1_000_000);
        request
    }

    #[test]
    fn an_answer_verifies_only_signed_with_the_key_over_the_requests_mac_in_time() {
        let mut request = query();
        let mac = sign(&mut request, &key(), None, true, 1_000_000);
        let mut response = query();
        response[2] |= 0x80;
        let unsigned = response.clone();
        sign(&mut response, &key(), Some(&mac), true, 1_000_010);
        assert!(verifies_response(&response, &key(), &mac, 1_000_000));
        assert!(
            !verifies_response(&unsigned, &key(), &mac, 1_000_000),
            "unsigned"
        );
        assert!(
            !verifies_response(&response, &key(), &[0; 32], 1_000_000),
            "over another request's MAC"
        );
        let other = Key {
            secret: b"another secret, another secret!!".to_vec(),
            ..key()
        };
        assert!(
            !verifies_response(&response, &other, &mac, 1_000_000),
            "another secret"
        );
        assert!(
            !verifies_response(&response, &key(), &mac, 1_000_000 + 3600),
            "out of its time"
        );
        let mut tampered = response.clone();
        tampered[3] ^= 0x01;
        assert!(
            !verifies_response(&tampered, &key(), &mac, 1_000_000),
            "changed"
        );
        // Signed over no request MAC (a request's own signing): not an answer to this one.
        let mut alone = unsigned.clone();
        sign(&mut alone, &key(), None, true, 1_000_010);
        assert!(!verifies_response(&alone, &key(), &mac, 1_000_000));
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let request = signed_query();
        let ok = read_request(&request)
            .expect("read")
            .verify(&request, 1_000_010, |n| (n == "transfer.key").then(key))
            .expect("verifies");
        assert_eq!(ok.mac.len(), 32);
        let mut tampered = request.clone();
        tampered[14] ^= 0x20;
        assert_eq!(refused(&tampered, 1_000_010, |_| Some(key())), Some(BADSIG));
        assert_eq!(refused(&request, 1_000_010, |_| None), Some(BADKEY));
        assert_eq!(refused(&request, 2_000_000, |_| Some(key())), Some(BADTIME));
        assert_eq!(request.len(), 25 + signature_len(&key()));
        let mut unsigned = request[..25].to_vec();
        unsigned[11] = 0;
        assert!(matches!(read_request(&unsigned), Err(TsigFailure::Missing)));
    }

    #[test]
    fn a_tsig_not_last_or_with_a_mac_of_a_bad_size_is_malformed() {
        // A record after the TSIG: the TSIG is no longer last (FORMERR, not unsigned).
        let mut request = signed_query();
        request.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1]);
        request[11] += 1;
        assert!(matches!(
            read_request(&request),
            Err(TsigFailure::Malformed)
        ));
        // A MAC cut below half the hash's length, or longer than it.
        let request = signed_query();
        let read = read_request(&request).expect("read");
        let mac_at = request.len() - 6 - MAC_LEN;
        for len in [MAC_LEN / 2 - 1, MAC_LEN + 1] {
            let mut resized = request[..mac_at - 2].to_vec();
            resized.extend_from_slice(&(len as u16).to_be_bytes());
            resized.extend(std::iter::repeat_n(0xab, len));
            resized.extend_from_slice(&request[request.len() - 6..]);
            // The record's length follows the MAC's.
            let rdlen_at = read.start + name_wire("transfer.key").len() + 8;
            let rdlen = u16::from_be_bytes([resized[rdlen_at], resized[rdlen_at + 1]]);
            let rdlen = rdlen as usize + len - MAC_LEN;
            resized[rdlen_at..rdlen_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
            assert!(
                matches!(read_request(&resized), Err(TsigFailure::Malformed)),
                "a MAC of {len} bytes"
            );
        }
    }

    #[test]
    fn key_or_algorithm_names_that_cannot_name_a_key_are_malformed() {
        let long = vec!["k".repeat(60); 5].join(".");
        for name in ["schl\u{fc}ssel.key", "a\\b.key", long.as_str()] {
            let mut request = query();
            let key = Key {
                name: name.into(),
                ..key()
            };
            sign(&mut request, &key, None, true, 1_000_000);
            assert!(
                matches!(read_request(&request), Err(TsigFailure::Malformed)),
                "{name}"
            );
        }
        // The algorithm's name with a byte no name of one has.
        let mut request = signed_query();
        let at = request
            .windows(11)
            .position(|w| w == b"hmac-sha256")
            .expect("the algorithm");
        request[at + 4] = 0xff;
        assert!(matches!(
            read_request(&request),
            Err(TsigFailure::Malformed)
        ));
        assert!(read_request(&signed_query()).is_ok());
    }

    #[test]
    fn the_request_fudge_is_what_is_verified_and_bounds_the_time() {
        // A request signed with a fudge of 10 (as a client may): the MAC covers that fudge.
        let mut request = query();
        let timers = Timers {
            time: 1_000_000,
            fudge: 10,
        };
        sign_with(&mut request, &key(), None, true, timers, 0, &[]);
        assert_eq!(refused(&request, 1_000_005, |_| Some(key())), None);
        assert_eq!(refused(&request, 1_000_020, |_| Some(key())), Some(BADTIME));
    }

    #[test]
    fn errors_carry_a_tsig_record_signed_only_for_a_bad_time() {
        let request = signed_query();
        let read = read_request(&request).expect("read");
        let header = |packet: &[u8]| {
            let mut h = packet[..12].to_vec();
            h[4..12].fill(0);
            h
        };
        let refusal = read
            .verify(&request, 1_000_000, |_| None)
            .expect_err("no key");
        let mut response = header(&request);
        read.append_error(&mut response, &refusal, 1_000_000);
        let record = read_request(&response).expect("a TSIG record");
        assert_eq!((record.error, record.mac.len()), (BADKEY, 0));

        let refusal = read
            .verify(&request, 5_000_000, |_| Some(key()))
            .expect_err("late");
        let mut response = header(&request);
        read.append_error(&mut response, &refusal, 5_000_000);
        let record = read_request(&response).expect("a TSIG record");
        assert_eq!((record.error, record.mac.len()), (BADTIME, 32));
        // The request's time, and ours in the other data.
        assert_eq!(record.timers.time, 1_000_000);
        assert_eq!(record.other, 5_000_000u64.to_be_bytes()[2..].to_vec());
    }
}
