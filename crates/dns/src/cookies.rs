//! DNS cookies (RFC 7873), with the interoperable server cookie of RFC 9018: version 1, a
//! timestamp and SipHash-2-4 of the client cookie, the timestamp and the client's address under
//! a server secret. A client that returns a valid server cookie has proved it receives answers
//! at its address, so it is not a spoofed source: response rate limiting spares it.

use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// The COOKIE option code.
pub const COOKIE: u16 = 10;
/// The COOKIE option data this server answers with: the client cookie and a server cookie.
pub const ANSWER_LEN: usize = 8 + 16;
/// A server cookie older than this is not accepted (RFC 9018 §4.3).
const MAX_AGE: u32 = 3600;
/// Nor one from further in the future than this.
const MAX_SKEW: u32 = 300;

/// What a query's COOKIE option held.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieCheck {
    /// No option.
    Absent,
    /// A client cookie only, or a server cookie that does not verify.
    Unverified,
    /// The server cookie is ours, fresh, and for this client.
    Verified,
    /// Wrong length: FORMERR.
    Malformed,
}

/// The server secrets: the first makes cookies, and cookies made by any of them are accepted
/// (a secret being rolled over, RFC 9018 §5).
pub struct Cookies {
    secrets: Vec<[u8; 16]>,
}

impl Cookies {
    /// `secret` makes and checks cookies; `also_accepted` only check them.
    pub fn new(secret: [u8; 16], also_accepted: &[[u8; 16]]) -> Self {
        let mut secrets = vec![secret];
        secrets.extend_from_slice(also_accepted);
        Self { secrets }
    }

    /// A random secret, for a server on its own (a fleet shares its secret through the store
    /// or the configuration instead).
    pub fn random() -> Self {
        Self::new(random_secret(), &[])
    }

    /// SipHash-2-4 of the client cookie, the server cookie's first 8 bytes (version, reserved
    /// and timestamp, as sent) and the client's address, in SipHash's byte order (RFC 9018
    /// §4.4).
    fn hash(secret: &[u8; 16], client_cookie: &[u8], head: &[u8], client: IpAddr) -> [u8; 8] {
        let mut input = [0u8; 8 + 8 + 16];
        input[..8].copy_from_slice(client_cookie);
        input[8..16].copy_from_slice(head);
        let n = match client {
            IpAddr::V4(v4) => {
                input[16..20].copy_from_slice(&v4.octets());
                20
            }
            IpAddr::V6(v6) => {
                input[16..].copy_from_slice(&v6.octets());
                32
            }
        };
        SipHasher24::new_with_key(secret)
            .hash(&input[..n])
            .to_le_bytes()
    }

    /// Checks a COOKIE option's data from `client` at `now` (Unix seconds).
    pub fn check(&self, option: Option<&[u8]>, client: IpAddr, now: u32) -> CookieCheck {
        let Some(data) = option else {
            return CookieCheck::Absent;
        };
        match data.len() {
            8 => CookieCheck::Unverified,
            16..=40 => {
                let (client_cookie, server) = data.split_at(8);
                // Version 1; the reserved bytes are hashed as they came (§4.2).
                if server.len() != 16 || server[0] != 1 {
                    return CookieCheck::Unverified;
                }
                let timestamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
                let fresh = now.wrapping_sub(timestamp) <= MAX_AGE
                    || timestamp.wrapping_sub(now) <= MAX_SKEW;
                // Compared in constant time: how long a comparison takes says nothing of the
                // right hash.
                let ours = |secret: &[u8; 16]| {
                    let right = Self::hash(secret, client_cookie, &server[..8], client);
                    server[8..]
                        .iter()
                        .zip(right)
                        .fold(0u8, |d, (a, b)| d | (a ^ b))
                        == 0
                };
                if fresh && self.secrets.iter().any(ours) {
                    CookieCheck::Verified
                } else {
                    CookieCheck::Unverified
                }
            }
            _ => CookieCheck::Malformed,
        }
    }

    /// The COOKIE option data to answer with: the client cookie and a fresh server cookie.
    pub fn answer(&self, option: &[u8], client: IpAddr, now: u32) -> Option<[u8; ANSWER_LEN]> {
        let client_cookie = option.get(..8)?;
        let mut out = [0u8; ANSWER_LEN];
        out[..8].copy_from_slice(client_cookie);
        out[8] = 1;
        out[12..16].copy_from_slice(&now.to_be_bytes());
        let hash = Self::hash(&self.secrets[0], client_cookie, &out[8..16], client);
        out[16..].copy_from_slice(&hash);
        Some(out)
    }
}

/// A new secret from the operating system's random source.
pub fn random_secret() -> [u8; 16] {
    let mut secret = [0u8; 16];
    // The OS random source failing is not recoverable and never happens on Linux after boot.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut secret).expect("operating system random source");
    secret
}

/// A secret written as 32 hexadecimal digits.
pub fn parse_secret(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut secret = [0u8; 16];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(secret)
}

/// A secret as 32 hexadecimal digits.
pub fn format_secret(secret: &[u8; 16]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_server_cookie_verifies_only_for_its_client_and_while_fresh() {
        let cookies = Cookies::new([7; 16], &[]);
        let client: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            cookies.check(Some(&client_cookie), client, 1000),
            CookieCheck::Unverified
        );
        let full = cookies
            .answer(&client_cookie, client, 1000)
            .expect("answer");
        assert_eq!(full.len(), 24);
        assert_eq!(
            cookies.check(Some(&full[..]), client, 1010),
            CookieCheck::Verified
        );
        assert_eq!(
            cookies.check(Some(&full[..]), other, 1010),
            CookieCheck::Unverified
        );
        assert_eq!(
            cookies.check(Some(&full[..]), client, 1000 + MAX_AGE + 1),
            CookieCheck::Unverified
        );
        let mut forged = full;
        forged[23] ^= 1;
        assert_eq!(
            cookies.check(Some(&forged[..]), client, 1010),
            CookieCheck::Unverified
        );
        assert_eq!(
            cookies.check(Some(&[0; 5]), client, 1010),
            CookieCheck::Malformed
        );
        assert_eq!(
            cookies.check(Some(&[0; 41]), client, 1010),
            CookieCheck::Malformed
        );
        assert_eq!(cookies.check(None, client, 1010), CookieCheck::Absent);
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn secret(text: &str) -> [u8; 16] {
        parse_secret(text).expect("secret")
    }

    /// RFC 9018 Appendix A: the cookies other implementations make and accept.
    #[test]
    fn server_cookies_are_those_of_rfc_9018_appendix_a() {
        let one = secret("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let cookies = Cookies::new(one, &[]);
        let client: IpAddr = "198.51.100.100".parse().expect("ip");
        // A.1: learning a new server cookie.
        assert_eq!(
            cookies
                .answer(&hex("2464c4abcf10c957"), client, 1559731985)
                .map(|a| a.to_vec()),
            Some(hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480"))
        );
        // A.2: the same client comes back with it and gets a renewed one.
        let returned = hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        assert_eq!(
            cookies.check(Some(&returned), client, 1559734385),
            CookieCheck::Verified
        );
        assert_eq!(
            cookies
                .answer(&returned, client, 1559734385)
                .map(|a| a.to_vec()),
            Some(hex("2464c4abcf10c957010000005cf7a871d4a564a1442aca77"))
        );
        // A.3: another server of the set made the cookie with reserved bytes set.
        let other: IpAddr = "203.0.113.203".parse().expect("ip");
        let made_elsewhere = hex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
        assert_eq!(
            cookies.check(Some(&made_elsewhere), other, 0x5cf7_8f71 + 10),
            CookieCheck::Verified
        );
        assert_eq!(
            cookies
                .answer(&made_elsewhere, other, 1559734700)
                .map(|a| a.to_vec()),
            Some(hex("fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"))
        );
        // A.4: an IPv6 client whose cookie the old secret made, during a rollover.
        let v6: IpAddr = "2001:db8:220:1:59de:d0f4:8769:82b8".parse().expect("ip");
        let old = secret("dd3bdf9344b678b185a6f5cb60fca715");
        let new = secret("445536bcd2513298075a5d379663c962");
        let by_old = hex("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        let at = 0x5cf7_c579 + 10;
        assert_eq!(
            Cookies::new(new, &[]).check(Some(&by_old), v6, at),
            CookieCheck::Unverified
        );
        assert_eq!(
            Cookies::new(new, &[old]).check(Some(&by_old), v6, at),
            CookieCheck::Verified
        );
    }

    #[test]
    fn secrets_are_read_as_hexadecimal() {
        let s = secret("E5e973e5a6b2a43f48e7dc849e37bfcf");
        assert_eq!(format_secret(&s), "e5e973e5a6b2a43f48e7dc849e37bfcf");
        assert_eq!(parse_secret("e5e9"), None);
        assert_eq!(parse_secret("g5e973e5a6b2a43f48e7dc849e37bfcf"), None);
        assert_eq!(parse_secret("é5e973e5a6b2a43f48e7dc849e37bfc"), None);
        assert_eq!(parse_secret(&"+f".repeat(16)), None);
    }
}
