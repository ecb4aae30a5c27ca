//! Parapet's Origin CA: certificates for origins, signed by a CA that `strict` mode trusts
//! (Cloudflare's `/certificates` API). An origin sends a certificate signing request; the
//! certificate names the host names the request lists, whatever the CSR's subject says.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::TlsError;

/// The validities Cloudflare offers, in days.
pub const VALIDITIES: &[u32] = &[7, 30, 90, 365, 730, 1095, 5475];

/// The public key of a certificate signing request whose signature checked out.
#[derive(Debug, Clone)]
pub struct CsrKey {
    alg: &'static SignatureAlgorithm,
    key: Vec<u8>,
    /// Cloudflare's `request_type` for this key: `origin-ecc` or `origin-rsa`.
    pub request_type: &'static str,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

fn bad(m: impl Into<String>) -> TlsError {
    TlsError::Certificate(format!("csr: {}", m.into()))
}

/// Parses a PEM certificate signing request and checks its self-signature.
pub fn parse_csr(pem: &str) -> Result<CsrKey, TlsError> {
    if pem.len() > 16 * 1024 {
        return Err(bad("larger than 16 KiB"));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(format!("no PEM \"BEGIN CERTIFICATE REQUEST\" block: {e}")))?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| bad(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the request"));
    }
    csr.verify_signature()
        .map_err(|e| bad(format!("its signature does not verify: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let (alg, request_type) = match (algorithm.as_str(), curve.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => {
            (&rcgen::PKCS_ECDSA_P256_SHA256, "origin-ecc")
        }
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => {
            (&rcgen::PKCS_ECDSA_P384_SHA384, "origin-ecc")
        }
        ("1.2.840.113549.1.1.1", _) => (&rcgen::PKCS_RSA_SHA256, "origin-rsa"),
        _ => {
            return Err(bad(
                "the key must be ECDSA P-256 or P-384, or RSA (origin-ecc, origin-rsa)",
            ));
        }
    };
    Ok(CsrKey {
        alg,
        key: spki.subject_public_key.data.to_vec(),
        request_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certgen::Authority;

    fn csr_for(key: &rcgen::KeyPair) -> String {
        rcgen::CertificateParams::new(vec!["ignored.example".to_owned()])
            .expect("params")
            .serialize_request(key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn a_signed_request_gets_a_certificate_for_the_listed_hosts() {
        let ca = Authority::new("Origin CA", 30).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = parse_csr(&csr_for(&key)).expect("valid csr");
        assert_eq!(csr.request_type, "origin-ecc");
        let pem = ca
            .sign(&["www.example.com".to_owned()], 30, &csr)
            .expect("signed");
        let chain = crate::parse_chain(&pem, &key.serialize_pem()).expect("key matches");
        assert_eq!(
            chain.leaf.hosts,
            ["www.example.com"],
            "the CSR's names are ignored"
        );
    }

    #[test]
    fn malformed_or_forged_requests_are_refused() {
        assert!(parse_csr("garbage").is_err());
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = csr_for(&key);
        // Flip one byte inside the base64 body: the signature no longer verifies (or it no
        // longer parses).
        let mut bytes = pem.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).expect("ascii");
        assert!(parse_csr(&forged).is_err());
    }
}
