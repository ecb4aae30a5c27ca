//! Domain names as Parapet stores them: lowercase, no trailing dot, each label checked.

use crate::FieldError;

/// Longest name in presentation form without the trailing dot (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// What a name may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A zone name: letters, digits, hyphens; at least two labels.
    Zone,
    /// An owner name of a record: also `_` anywhere and `*` as a whole first label.
    Owner,
    /// A host name in record content (CNAME, MX, NS, ...): letters, digits, hyphens, `_`.
    Target,
}

/// Normalises and checks a name, returning it lowercase without a trailing dot; a label in
/// Unicode is stored in Punycode, as Cloudflare stores names (IDNA, UTS #46).
pub fn normalize(input: &str, kind: NameKind, field: &str) -> Result<String, FieldError> {
    let trimmed = input.trim();
    let bad = |m: &str| {
        Err(FieldError::new(
            field,
            format!("'{}' {m}", printable(input)),
        ))
    };
    let mut name = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    if !name.is_ascii() {
        let mut labels = Vec::new();
        for label in name.split('.') {
            if label.is_ascii() {
                labels.push(label.to_owned());
                continue;
            }
            match idna::domain_to_ascii(label) {
                Ok(ascii) if !ascii.is_empty() && !ascii.contains('.') => labels.push(ascii),
                _ => return bad("has a label that is not a valid international domain name"),
            }
        }
        name = labels.join(".");
    }
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME {
        return bad("is longer than 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if kind == NameKind::Zone && labels.len() < 2 {
        return bad("is not a registrable domain (it needs at least two labels)");
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return bad("has an empty label");
        }
        if label.len() > MAX_LABEL {
            return bad("has a label longer than 63 characters");
        }
        if *label == "*" {
            if kind == NameKind::Owner && i == 0 {
                continue;
            }
            return bad("has a wildcard that is not the whole first label");
        }
        let underscore_ok = kind != NameKind::Zone;
        let ok = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore_ok && b == b'_'));
        if !ok {
            return bad("contains characters not allowed in a host name");
        }
        if kind == NameKind::Zone && (label.starts_with('-') || label.ends_with('-')) {
            return bad("has a label starting or ending with '-'");
        }
    }
    if kind == NameKind::Zone {
        no_address(&name, field)?;
    }
    Ok(name)
}

/// Refuses a zone or host name (normalised) that ends in an all-digit label, which no top-level
/// domain does (RFC 3696 §2): it is an IP address put where a name belongs (a zone `192.0.2.1`,
/// an MX or CNAME to one).
pub fn no_address(name: &str, field: &str) -> Result<(), FieldError> {
    let numeric = |l: &str| l.bytes().all(|b| b.is_ascii_digit());
    if !name.rsplit('.').next().is_some_and(numeric) {
        return Ok(());
    }
    let why = if name.parse::<std::net::Ipv4Addr>().is_ok() {
        "is an IP address, not a host name (an address goes in an A or AAAA record)"
    } else {
        "ends in an all-digit label, which no top-level domain does"
    };
    Err(FieldError::new(
        field,
        format!("'{}' {why}", printable(name)),
    ))
}

/// Resolves a record name given relative to or inside `zone` (Cloudflare accepts both `www`
/// and `www.example.com`, and `@` for the apex) into the full owner name.
pub fn owner_in_zone(input: &str, zone: &str, field: &str) -> Result<String, FieldError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(
            field,
            "is empty (the zone apex is '@' or the zone's name)",
        ));
    }
    if trimmed == "@" {
        return Ok(zone.to_owned());
    }
    let absolute = trimmed.ends_with('.');
    let name = normalize(trimmed, NameKind::Owner, field)?;
    if is_within(&name, zone) {
        return Ok(name);
    }
    if absolute {
        return Err(FieldError::new(
            field,
            format!("'{name}' is not inside the zone {zone}"),
        ));
    }
    let full = format!("{name}.{zone}");
    normalize(&full, NameKind::Owner, field)
}

/// Whether `name` equals `zone` or lies below it.
pub fn is_within(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// Shows untrusted text in an error message without control characters and bounded in size.
pub fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ip_address_is_no_zone_or_host_name() {
        for ip in ["1.2.3.4", "192.0.2.1.", "example.123"] {
            let err = normalize(ip, NameKind::Zone, "name").expect_err(ip);
            assert!(
                err.message.contains("digit") || err.message.contains("IP address"),
                "{ip}: {err:?}"
            );
            let target = normalize(ip, NameKind::Target, "content").expect("a name");
            assert!(no_address(&target, "content").is_err(), "{ip}");
        }
        assert!(no_address("mail.example.com", "content").is_ok());
        assert!(normalize("1.2.3.4", NameKind::Owner, "name").is_ok());
        assert!(normalize("2.0.192.in-addr.arpa", NameKind::Zone, "name").is_ok());
        assert!(normalize("1password.com", NameKind::Zone, "name").is_ok());
    }

    use super::*;

    #[test]
    fn names_are_lowercased_without_trailing_dot() {
        assert_eq!(
            normalize("WWW.Example.COM.", NameKind::Owner, "name").as_deref(),
            Ok("www.example.com")
        );
    }

    #[test]
    fn relative_and_apex_names_resolve_inside_the_zone() {
        assert_eq!(
            owner_in_zone("@", "example.com", "n").as_deref(),
            Ok("example.com")
        );
        assert_eq!(
            owner_in_zone("www", "example.com", "n").as_deref(),
            Ok("www.example.com")
        );
        assert_eq!(
            owner_in_zone("www.example.com", "example.com", "n").as_deref(),
            Ok("www.example.com")
        );
        assert!(owner_in_zone("www.other.org.", "example.com", "n").is_err());
        assert_eq!(
            owner_in_zone("bücher", "example.com", "n").as_deref(),
            Ok("xn--bcher-kva.example.com")
        );
        assert_eq!(
            normalize("MÜNCHEN.example.", NameKind::Zone, "n").as_deref(),
            Ok("xn--mnchen-3ya.example")
        );
        assert!(normalize("a\u{200b}\u{0}.example", NameKind::Zone, "n").is_err());
        for empty in ["", "   "] {
            assert!(
                owner_in_zone(empty, "example.com", "n").is_err(),
                "{empty:?}"
            );
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in [
            "",
            "a..b",
            "exa mple.com",
            "x.*.example.com",
            &"a".repeat(64),
        ] {
            assert!(normalize(bad, NameKind::Owner, "n").is_err(), "{bad}");
        }
        assert!(normalize("com", NameKind::Zone, "n").is_err());
        assert!(normalize("_x.example.com", NameKind::Zone, "n").is_err());
        assert!(normalize("*.example.com", NameKind::Owner, "n").is_ok());
    }

    #[test]
    fn is_within_respects_label_boundaries() {
        assert!(is_within("a.example.com", "example.com"));
        assert!(!is_within("badexample.com", "example.com"));
    }
}
