//! A certificate chain and its private key, from PEM, checked the way a visitor's TLS client
//! will check them: the key signs for the leaf, each certificate is issued by the next, the
//! names are host names, and the dates are current.

use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::TlsError;

/// The most certificates a chain may hold (a leaf and intermediates; browsers give up earlier).
const MAX_CHAIN: usize = 10;
/// The largest PEM input taken (a long chain of RSA-4096 certificates is far below this).
const MAX_PEM_BYTES: usize = 64 * 1024;

/// What the leaf certificate says, for the API and for SNI selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// DNS subject alternative names, lowercase (the subject's common name when there are none).
    pub hosts: Vec<String>,
    /// The issuer's organization (or common name).
    pub issuer: String,
    /// The signature algorithm, in Cloudflare's spelling (e.g. `ECDSAWithSHA256`).
    pub signature: String,
    /// Decimal serial number.
    pub serial_number: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// A chain with its key, ready to serve.
#[derive(Clone)]
pub struct ParsedChain {
    pub leaf: LeafInfo,
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ParsedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedChain")
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

/// Parses `certificate_pem` (leaf first, then each issuer) and `key_pem`, and checks that they
/// belong together. Every problem found is returned, not just the first.
pub fn parse_chain(certificate_pem: &str, key_pem: &str) -> Result<ParsedChain, Vec<TlsError>> {
    let mut errors = Vec::new();
    let certs = read_certificates(certificate_pem)
        .map_err(|e| errors.push(e))
        .ok();
    let key = read_key(key_pem).map_err(|e| errors.push(e)).ok();
    let (Some(certs), Some(key)) = (certs, key) else {
        return Err(errors);
    };
    let leaf = match describe_chain(&certs) {
        Ok(leaf) => Some(leaf),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    let certified = CertifiedKey::new(certs, key);
    if certified.keys_match().is_err() {
        errors.push(TlsError::KeyMismatch(
            "the private key does not match the first (leaf) certificate".into(),
        ));
    }
    match leaf {
        Some(leaf) if errors.is_empty() => Ok(ParsedChain {
            leaf,
            key: Arc::new(certified),
        }),
        _ => Err(errors),
    }
}

/// What an uploaded CA certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    pub issuer: String,
    pub signature: String,
    pub not_after: i64,
}

/// Parses one CA certificate (PEM): exactly one certificate, marked as a CA.
pub fn parse_ca(pem: &str) -> Result<CaInfo, TlsError> {
    let certs = read_certificates(pem)?;
    if certs.len() != 1 {
        return Err(TlsError::Certificate(format!(
            "exactly one CA certificate is expected, not {}",
            certs.len()
        )));
    }
    let cert = match X509Certificate::from_der(&certs[0]) {
        Ok(([], cert)) => cert,
        _ => return Err(TlsError::Certificate("not an X.509 certificate".into())),
    };
    if !cert.is_ca() {
        return Err(TlsError::Certificate(
            "not a CA certificate (its basic constraints do not say CA)".into(),
        ));
    }
    Ok(CaInfo {
        issuer: issuer_name(&cert),
        signature: signature_name(&cert.signature_algorithm.algorithm.to_id_string()),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The DER of every certificate in a PEM bundle that parses as X.509 (others are skipped).
pub fn bundle_der(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|der| matches!(X509Certificate::from_der(der), Ok(([], _))))
        .map(|der| der.to_vec())
        .collect()
}

/// How many certificates a PEM bundle holds (a bundle of roots, say).
pub fn count_certificates(pem: &str) -> Result<usize, TlsError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .try_fold(0, |n, c| c.map(|_| n + 1))
        .map_err(|e| TlsError::Certificate(format!("not valid PEM: {e}")))
}

/// A certificate chain (leaf first) and its private key, as DER.
pub type DerChain = (Vec<Vec<u8>>, Vec<u8>);

/// The DER of a checked chain (leaf first) and of its key, for TLS clients that take raw DER.
pub fn der_of(certificate_pem: &str, key_pem: &str) -> Result<DerChain, Vec<TlsError>> {
    let chain = parse_chain(certificate_pem, key_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| vec![TlsError::Key(e.to_string())])?;
    Ok((
        chain.key.cert.iter().map(|c| c.to_vec()).collect(),
        key.secret_der().to_vec(),
    ))
}

fn read_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(TlsError::Certificate(format!(
            "larger than {MAX_PEM_BYTES} bytes"
        )));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(
            "no PEM \"BEGIN CERTIFICATE\" block found".into(),
        ));
    }
    if certs.len() > MAX_CHAIN {
        return Err(TlsError::Certificate(format!(
            "a chain of {} certificates; at most {MAX_CHAIN} are served",
            certs.len()
        )));
    }
    Ok(certs)
}

fn read_key(pem: &str) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(TlsError::Key(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::Key(
            "the key is encrypted: upload it without a passphrase".into(),
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        TlsError::Key(format!(
            "no PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA) found: {e}"
        ))
    })?;
    any_supported_type(&der).map_err(|e| {
        TlsError::Key(format!(
            "not a usable ECDSA (P-256, P-384), Ed25519 or RSA (2048 bits or more) key: {e}"
        ))
    })
}

/// The leaf's description, after checking that every certificate parses and is issued by the
/// next one in the chain.
fn describe_chain(certs: &[CertificateDer<'static>]) -> Result<LeafInfo, Vec<TlsError>> {
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        match X509Certificate::from_der(der) {
            Ok(([], cert)) => parsed.push(cert),
            Ok(_) => errors.push(TlsError::Certificate(format!(
                "certificate {} has trailing bytes",
                i + 1
            ))),
            Err(e) => errors.push(TlsError::Certificate(format!(
                "certificate {} is not an X.509 certificate: {e}",
                i + 1
            ))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            errors.push(TlsError::Certificate(format!(
                "certificate {} ({}) is not the issuer of certificate {} (issued by {}); list the leaf first, then each issuer in order",
                i + 2,
                pair[1].subject(),
                i + 1,
                pair[0].issuer()
            )));
        }
    }
    let leaf = &parsed[0];
    if leaf.is_ca() && parsed.len() == 1 && leaf.subject_alternative_name().ok().flatten().is_none()
    {
        errors.push(TlsError::Certificate(
            "the first certificate is a CA certificate; the leaf must come first".into(),
        ));
    }
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                hosts.push(n.to_ascii_lowercase());
            }
        }
    }
    if hosts.is_empty() {
        hosts.extend(
            leaf.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    hosts.retain(|h| is_host_pattern(h));
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        errors.push(TlsError::Certificate(
            "the leaf certificate names no host (no DNS subject alternative name)".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let issuer = issuer_name(leaf);
    Ok(LeafInfo {
        hosts,
        issuer,
        signature: signature_name(&leaf.signature_algorithm.algorithm.to_id_string()),
        serial_number: leaf.tbs_certificate.serial.to_str_radix(10),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    })
}

/// A certificate and key as they are, without the checks of [`parse_chain`]: for the TLS-ALPN-01
/// challenge certificate, whose critical `acmeIdentifier` extension certificate checkers refuse
/// (Parapet made it itself).
pub fn certified_key_as_is(certificate_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::new(
        read_certificates(certificate_pem)?,
        read_key(key_pem)?,
    ))
}

/// What the first certificate of a PEM chain says (no key needed).
pub fn describe_pem(certificate_pem: &str) -> Result<LeafInfo, TlsError> {
    let certs = read_certificates(certificate_pem)?;
    describe_chain(&certs).map_err(|mut e| e.remove(0))
}

/// Why a parsed chain cannot be served for zone `zone_name` at `now` (Unix seconds): it has
/// expired or is not valid yet, or names no host of the zone.
pub fn check_for_zone(leaf: &LeafInfo, zone_name: &str, now: i64) -> Vec<TlsError> {
    let mut errors = check_dates(leaf, now);
    let suffix = format!(".{zone_name}");
    let in_zone = leaf.hosts.iter().any(|h| {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        bare == zone_name || bare.ends_with(&suffix)
    });
    if !in_zone {
        errors.push(TlsError::ForeignHosts(format!(
            "names no host of zone {zone_name} (it names {})",
            leaf.hosts.join(", ")
        )));
    }
    errors
}

/// Why the leaf is not valid at `now` (Unix seconds): expired, or not valid yet.
pub fn check_dates(leaf: &LeafInfo, now: i64) -> Vec<TlsError> {
    let mut errors = Vec::new();
    if leaf.not_after <= now {
        errors.push(TlsError::Certificate(format!(
            "expired at {} (Unix time {})",
            rfc3339(leaf.not_after),
            leaf.not_after
        )));
    }
    if leaf.not_before > now {
        errors.push(TlsError::Certificate(format!(
            "not valid before {}",
            rfc3339(leaf.not_before)
        )));
    }
    errors
}

/// Unix seconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The issuer's organization (or common name), as the API shows it.
fn issuer_name(cert: &X509Certificate<'_>) -> String {
    cert.issuer()
        .iter_organization()
        .chain(cert.issuer().iter_common_name())
        .find_map(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A host name or a wildcard (`*.` and a host name), as certificates name hosts.
fn is_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Cloudflare's names for signature algorithms.
fn signature_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.4.3.2" => "ECDSAWithSHA256",
        "1.2.840.10045.4.3.3" => "ECDSAWithSHA384",
        "1.2.840.10045.4.3.4" => "ECDSAWithSHA512",
        "1.2.840.113549.1.1.11" => "SHA256WithRSA",
        "1.2.840.113549.1.1.12" => "SHA384WithRSA",
        "1.2.840.113549.1.1.13" => "SHA512WithRSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.112" => "Ed25519",
        other => return other.to_owned(),
    }
    .to_owned()
}

/// Whether certificate host pattern `pattern` covers `host` (a wildcard covers one label).
pub fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen::{Authority, Usage};

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_matching_chain_and_key_describe_the_leaf() {
        let ca = Authority::new("Test CA", 30).expect("ca");
        let leaf = ca
            .issue(
                &hosts(&["www.example.com", "*.example.com"]),
                30,
                Usage::Server,
            )
            .expect("leaf");
        let pem = format!("{}{}", leaf.cert_pem, ca.cert_pem);
        let parsed = parse_chain(&pem, &leaf.key_pem).expect("valid");
        assert_eq!(parsed.leaf.hosts, ["*.example.com", "www.example.com"]);
        assert_eq!(parsed.leaf.signature, "ECDSAWithSHA256");
        assert!(parsed.leaf.not_after > parsed.leaf.not_before);
        assert_eq!(parsed.key.cert.len(), 2);
    }

    #[test]
    fn every_problem_with_an_upload_is_named() {
        let ca = Authority::new("Test CA", 30).expect("ca");
        let leaf = ca
            .issue(&hosts(&["www.example.com"]), 30, Usage::Server)
            .expect("leaf");
        let other = ca
            .issue(&hosts(&["www.example.com"]), 30, Usage::Server)
            .expect("other");
        let e = parse_chain(&leaf.cert_pem, &other.key_pem).expect_err("wrong key");
        assert!(e[0].to_string().contains("does not match"), "{e:?}");
        let reversed = format!("{}{}", ca.cert_pem, leaf.cert_pem);
        let e = parse_chain(&reversed, &leaf.key_pem).expect_err("wrong order");
        assert!(
            e.iter().any(|e| e.to_string().contains("leaf first")),
            "{e:?}"
        );
        let e = parse_chain("garbage", "more garbage").expect_err("garbage");
        assert_eq!(e.len(), 2, "both fields are reported: {e:?}");
        assert!(matches!(e[0], TlsError::Certificate(_)));
        assert!(matches!(e[1], TlsError::Key(_)));
        let truncated = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
        assert!(parse_chain(truncated, &leaf.key_pem).is_err());
        let huge = "A".repeat(MAX_PEM_BYTES + 1);
        assert!(parse_chain(&huge, &leaf.key_pem).is_err());
    }

    #[test]
    fn uploads_must_be_current_and_name_a_host_of_the_zone() {
        let leaf = LeafInfo {
            hosts: vec!["*.example.com".into()],
            issuer: String::new(),
            signature: String::new(),
            serial_number: String::new(),
            not_before: 1_000,
            not_after: 2_000,
        };
        assert!(check_for_zone(&leaf, "example.com", 1_500).is_empty());
        assert_eq!(check_for_zone(&leaf, "example.org", 1_500).len(), 1);
        let expired = check_for_zone(&leaf, "example.com", 2_000);
        assert!(
            expired[0]
                .to_string()
                .contains("expired at 1970-01-01T00:33:20Z"),
            "{expired:?}"
        );
        assert_eq!(check_for_zone(&leaf, "example.com", 500).len(), 1);
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(covers("example.com", "example.com"));
        assert!(!covers("example.com", "a.example.com"));
    }
}
