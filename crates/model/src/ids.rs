//! Identifiers in Cloudflare's format: 32 lowercase hex digits, random.

/// A new random 32-hex-digit identifier.
pub fn new_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// A new API token secret: 40 characters from the URL-safe alphabet.
pub fn new_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    random_bytes::<40>()
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Whether `s` has the shape of an identifier made by [`new_id`].
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not recoverable and never happens on Linux after boot.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("operating system random source");
    buf
}
