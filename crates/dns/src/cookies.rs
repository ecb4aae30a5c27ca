//! DNS cookies (RFC 7873), with the interoperable server cookie of RFC 9018: version 1, a
//! timestamp and SipHash-2-4 of the client cookie, the timestamp and the client's address under
//! a server secret. A client that returns a valid server cookie has proved it receives answers
//! at its address, so it is not a spoofed source: response rate limiting spares it.

use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// The COOKIE option code.
pub const COOKIE: u16 = 10;
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

/// The server secret.
pub struct Cookies {
    secret: [u8; 16],
}

impl Cookies {
    pub fn new(secret: [u8; 16]) -> Self {
        Self { secret }
    }

    /// A random secret (a fleet shares one through configuration instead).
    pub fn random() -> Self {
        let mut secret = [0u8; 16];
        // The OS random source failing is not recoverable and never happens on Linux after boot.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut secret).expect("operating system random source");
        Self { secret }
    }

    fn hash(&self, client_cookie: &[u8], timestamp: u32, client: IpAddr) -> [u8; 8] {
        let mut input = Vec::with_capacity(8 + 8 + 16);
        input.extend_from_slice(client_cookie);
        input.extend_from_slice(&[1, 0, 0, 0]);
        input.extend_from_slice(&timestamp.to_be_bytes());
        match client {
            IpAddr::V4(v4) => input.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => input.extend_from_slice(&v6.octets()),
        }
        SipHasher24::new_with_key(&self.secret)
            .hash(&input)
            .to_be_bytes()
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
                if server.len() != 16 || server[..4] != [1, 0, 0, 0] {
                    return CookieCheck::Unverified;
                }
                let timestamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
                let fresh = now.wrapping_sub(timestamp) <= MAX_AGE
                    || timestamp.wrapping_sub(now) <= MAX_SKEW;
                if fresh && server[8..] == self.hash(client_cookie, timestamp, client) {
                    CookieCheck::Verified
                } else {
                    CookieCheck::Unverified
                }
            }
            _ => CookieCheck::Malformed,
        }
    }

    /// The COOKIE option data to answer with: the client cookie and a fresh server cookie.
    pub fn answer(&self, option: &[u8], client: IpAddr, now: u32) -> Option<Vec<u8>> {
        let client_cookie = option.get(..8)?;
        let mut out = client_cookie.to_vec();
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&now.to_be_bytes());
        out.extend_from_slice(&self.hash(client_cookie, now, client));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_server_cookie_verifies_only_for_its_client_and_while_fresh() {
        let cookies = Cookies::new([7; 16]);
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
            cookies.check(Some(&full), client, 1010),
            CookieCheck::Verified
        );
        assert_eq!(
            cookies.check(Some(&full), other, 1010),
            CookieCheck::Unverified
        );
        assert_eq!(
            cookies.check(Some(&full), client, 1000 + MAX_AGE + 1),
            CookieCheck::Unverified
        );
        let mut forged = full.clone();
        forged[23] ^= 1;
        assert_eq!(
            cookies.check(Some(&forged), client, 1010),
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
}
