//! Making keys and certificates: the origin CA's, the edge's client certificate for
//! Authenticated Origin Pulls, certificate requests for ACME, and test peers'.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::TlsError;

/// A certificate and its key, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What an issued certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (an origin, the edge).
    Server,
    /// A TLS client (the edge presenting itself to an origin).
    Client,
}

/// A certificate authority that can issue certificates (ECDSA P-256).
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
}

fn failed(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // Backdated an hour, for clocks a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Parapet");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Authority {
    /// A new self-signed CA valid for `days`.
    pub fn new(common_name: &str, days: u32) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = ca_params(common_name);
        validity(&mut params, days);
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok(Self {
            params,
            key,
            cert_pem: cert.pem(),
        })
    }

    /// The CA made earlier by [`Authority::new`] with this name, from its stored PEM.
    pub fn load(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| TlsError::Key(format!("the CA's key: {e}")))?;
        Ok(Self {
            params: ca_params(common_name),
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A new key and a certificate for `hosts` (host names or wildcards), valid for `days`.
    pub fn issue(&self, hosts: &[String], days: u32, usage: Usage) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(failed)?;
        params.distinguished_name = name(hosts.first().map_or("parapet", String::as_str));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity(&mut params, days);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Authority {
    /// A server certificate for `hosts` over the key of a certificate request, valid for
    /// `days`; PEM.
    pub fn sign(
        &self,
        hosts: &[String],
        days: u32,
        key: &crate::origin_ca::CsrKey,
    ) -> Result<String, TlsError> {
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(failed)?;
        params.distinguished_name = name(hosts.first().map_or("parapet", String::as_str));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, days);
        let issuer = Issuer::from_params(&self.params, &self.key);
        Ok(params.signed_by(key, &issuer).map_err(failed)?.pem())
    }
}

/// The certificate that answers a TLS-ALPN-01 challenge for `host` (RFC 8737): self-signed,
/// naming only `host`, with the SHA-256 digest of the key authorization in a critical
/// `acmeIdentifier` extension.
pub fn acme_alpn_certificate(host: &str, digest: &[u8]) -> Result<Issued, TlsError> {
    if digest.len() != 32 {
        return Err(TlsError::Generate(
            "the key authorization digest must be 32 bytes".into(),
        ));
    }
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(failed)?;
    params.distinguished_name = name(host);
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    validity(&mut params, 7);
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A self-signed certificate for `hosts`, valid for `days`.
pub fn self_signed(hosts: &[String], days: u32) -> Result<Issued, TlsError> {
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    params.distinguished_name = name(hosts.first().map_or("parapet", String::as_str));
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alpn_challenge_certificates_parse_and_match_their_key() {
        let issued = acme_alpn_certificate("alpn.example.com", &[7; 32]).expect("made");
        let key = crate::chain::certified_key_as_is(&issued.cert_pem, &issued.key_pem)
            .expect("usable as it is");
        assert_eq!(key.cert.len(), 1);
        let leaf = crate::chain::describe_pem(&issued.cert_pem).expect("parses");
        assert_eq!(leaf.hosts, ["alpn.example.com"]);
        assert!(acme_alpn_certificate("alpn.example.com", &[7; 31]).is_err());
    }
}
