//! TXT record data: the one place that says what a TXT record's `content` means, so that what is
//! stored is what the DNS server sends and what an export writes. No IO here.
//!
//! Content has two forms, told apart by its first non-blank character:
//!
//! - **Text** (as Cloudflare's API takes it): the bytes of the record, kept exactly (spaces at
//!   the edges included), sent as character strings of 255 bytes.
//! - **Quoted strings** (zone-file presentation, starting with `"`): each `"..."` is one
//!   character string of at most 255 bytes, with BIND's escapes `\DDD` (0 to 255) and `\X`.
//!
//! Content is stored as the API was given it, so that a client finds its records by the content
//! it wrote (quoted, as Cloudflare's documentation writes TXT content, or not). Two contents
//! are the same data when they send the same strings: their [`canonical`] forms (text whenever
//! text sends the same strings, else quoted strings written one way: `\"`, `\\`, `\DDD` for
//! every byte outside printable ASCII, one space between strings) are equal. A quoted string
//! over 255 bytes is sent split, as Cloudflare splits it.

/// Longest TXT content, in characters (Cloudflare's limit).
pub const MAX_TXT: usize = 2048;

/// Longest character string, in bytes (RFC 1035 §3.3).
const MAX_STRING: usize = 255;

fn is_quoted_form(content: &str) -> bool {
    content.trim_start().starts_with('"')
}

/// The character strings a checked TXT content stands for.
pub fn strings(content: &str) -> Vec<Vec<u8>> {
    if is_quoted_form(content)
        && let Ok(strings) = parse_quoted(content)
    {
        return strings;
    }
    // Text; also what content stored before it was checked is sent as.
    text_strings(content.as_bytes())
}

fn text_strings(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return vec![Vec::new()];
    }
    bytes.chunks(MAX_STRING).map(<[u8]>::to_vec).collect()
}

/// A checked TXT content's zone-file presentation form: its strings, quoted.
pub fn presentation(content: &str) -> String {
    strings(content)
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks TXT content from the API (or built by the zone-file reader): it is stored as it is.
pub fn check(content: &str) -> Result<String, String> {
    canonical(content)?;
    Ok(content.to_owned())
}

/// The canonical form of checked TXT content: equal for contents that send the same strings.
pub fn canonical(content: &str) -> Result<String, String> {
    let count = content.chars().count();
    if count > MAX_TXT {
        return Err(format!(
            "is {count} characters long; a TXT record holds at most {MAX_TXT}"
        ));
    }
    let canonical = if is_quoted_form(content) {
        from_strings(&parse_quoted(content)?)
    } else if content.is_empty() {
        return Err("must not be empty".into());
    } else {
        content.to_owned()
    };
    if canonical.chars().count() > MAX_TXT {
        return Err(format!(
            "is longer than {MAX_TXT} characters once written as quoted strings"
        ));
    }
    Ok(canonical)
}

/// Canonical content for character strings: text when text sends exactly these strings, else
/// quoted strings.
pub fn from_strings(strings: &[Vec<u8>]) -> String {
    let joined = strings.concat();
    if let Ok(text) = std::str::from_utf8(&joined)
        && !text.is_empty()
        && !is_quoted_form(text)
        && text_strings(&joined) == strings
    {
        return text.to_owned();
    }
    strings
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses quoted strings separated by blanks; one over 255 bytes is split.
fn parse_quoted(content: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = content.trim_start();
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix('"') else {
            return Err(
                "has text outside quotes: content that starts with a quote must be quoted strings"
                    .into(),
            );
        };
        let end = closing_quote(body).ok_or("has an unterminated quoted string")?;
        let string = decode_bytes(&body[..end])?;
        if string.len() > MAX_STRING {
            out.extend(string.chunks(MAX_STRING).map(<[u8]>::to_vec));
        } else {
            out.push(string);
        }
        rest = &body[end + 1..];
        let trimmed = rest.trim_start();
        if !trimmed.is_empty() && trimmed.len() == rest.len() {
            return Err("needs a blank between quoted strings".into());
        }
        rest = trimmed;
    }
    Ok(out)
}

/// Where the unescaped closing quote of a string body is.
fn closing_quote(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Decodes one character string as written between quotes (or as an unquoted zone-file word):
/// `\DDD` is the byte DDD (at most 255), `\X` is X.
pub fn decode_string(text: &str) -> Result<Vec<u8>, String> {
    let out = decode_bytes(text)?;
    if out.len() > MAX_STRING {
        return Err(format!(
            "has a character string of {} bytes; each holds at most {MAX_STRING} (split it into several quoted strings)",
            out.len()
        ));
    }
    Ok(out)
}

/// The bytes `text` (a character string's escaped form) stands for, whatever their length.
pub fn decode_bytes(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            None => return Err("ends with a lone backslash".into()),
            Some(d) if d.is_ascii_digit() => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit))
                    .ok_or("has a \\ escape that is not three digits (\\DDD)")?;
                let value = digits
                    .iter()
                    .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
                let byte = u8::try_from(value)
                    .map_err(|_| format!("has the escape \\{value:03}, over 255"))?;
                out.push(byte);
                i += 4;
            }
            Some(_) => {
                // `\X`: the next character (all its bytes) stands for itself.
                let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                out.extend_from_slice(&bytes[i + 1..i + 1 + len]);
                i += 1 + len;
            }
        }
    }
    Ok(out)
}

/// One character string, quoted: `"` and `\` escaped, every byte outside printable ASCII
/// written `\DDD` (Knot refuses raw non-ASCII bytes in a zone file).
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' '..=b'~' => out.push(char::from(b)),
            b => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_kept_exactly_and_sent_in_255_byte_strings() {
        assert_eq!(canonical(" lead ").as_deref(), Ok(" lead "));
        let long = "a".repeat(300);
        assert_eq!(strings(&long), [vec![b'a'; 255], vec![b'a'; 45]]);
        assert_eq!(
            presentation(&long),
            format!("\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45))
        );
        assert_eq!(presentation("say \"hi\" \\o/"), r#""say \"hi\" \\o/""#);
        assert_eq!(presentation("tab\there"), r#""tab\009here""#);
        assert_eq!(presentation("café"), r#""caf\195\169""#);
    }

    #[test]
    fn quoted_strings_are_decoded_and_written_one_way() {
        assert_eq!(
            strings(r#""a b" "c\"d" "\065""#),
            [b"a b".to_vec(), b"c\"d".to_vec(), b"A".to_vec()]
        );
        // Same strings as text: stored as text.
        assert_eq!(canonical(r#""hello""#).as_deref(), Ok("hello"));
        assert_eq!(canonical(r#""\065\066""#).as_deref(), Ok("AB"));
        // Not text: kept as quoted strings, normalised.
        assert_eq!(
            canonical("\"a\"\n\t\"b\\\"\"").as_deref(),
            Ok(r#""a" "b\"""#)
        );
        assert_eq!(canonical(r#""\200\255""#).as_deref(), Ok(r#""\200\255""#));
        assert_eq!(canonical(r#""""#).as_deref(), Ok(r#""""#));
        assert_eq!(canonical(r#"" \"x\" ""#).as_deref(), Ok(r#"" \"x\" ""#));
        for c in [r#""a" "b""#, r#""\200\255""#, r#"" \"x\" ""#, "\"é\""] {
            let stored = canonical(c).expect("valid");
            assert_eq!(canonical(&stored).as_deref(), Ok(stored.as_str()), "{c}");
            assert_eq!(
                canonical(&presentation(&stored)).as_deref(),
                Ok(stored.as_str())
            );
        }
    }

    #[test]
    fn content_is_kept_as_written_and_compared_by_its_strings() {
        let quoted = r#""heritage=external-dns,external-dns/owner=default""#;
        assert_eq!(check(quoted).as_deref(), Ok(quoted));
        assert_eq!(
            canonical(quoted),
            canonical("heritage=external-dns,external-dns/owner=default")
        );
        assert_ne!(canonical(r#""a b""#), canonical(r#""a" "b""#));
        // A quoted string over 255 bytes is sent split (Cloudflare splits it).
        let long = format!("\"{}\" \"b\"", "a".repeat(300));
        assert_eq!(check(&long).as_deref(), Ok(long.as_str()));
        assert_eq!(
            strings(&long),
            [vec![b'a'; 255], vec![b'a'; 45], b"b".to_vec()]
        );
        assert!(
            decode_string(&"a".repeat(256)).is_err(),
            "a zone file's word"
        );
    }

    #[test]
    fn malformed_quoted_strings_are_refused() {
        for bad in [
            r#""\999""#,
            r#""\256""#,
            r#""\12""#,
            r#""open"#,
            r#""a" b"#,
            r#""a""b""#,
            "\"end\\",
        ] {
            assert!(canonical(bad).is_err(), "{bad} accepted");
        }
        assert!(canonical(&format!("\"{}\"", "a".repeat(255))).is_ok());
        assert!(canonical("").is_err());
        assert!(canonical(&"a".repeat(2049)).is_err());
        assert!(canonical(&"a".repeat(2048)).is_ok());
    }
}
