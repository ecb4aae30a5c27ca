//! Certificates the edge serves to visitors over TLS: custom ones a zone uploads
//! (`/zones/{id}/custom_certificates`, Cloudflare's shape).
//!
//! Checking the PEM itself (key matches, chain order, names, expiry) needs cryptography and
//! lives in the `parapet-tls` crate; this is the stored, typed form.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A certificate chain and its private key, uploaded for one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomCertificate {
    pub id: String,
    pub zone_id: String,
    /// PEM: the leaf first, then each issuer.
    pub certificate: String,
    /// PEM (PKCS#8, SEC1 or PKCS#1).
    pub private_key: String,
    /// Cloudflare's `bundle_method` ("ubiquitous", "optimal" or "force"); the chain is served
    /// as uploaded whatever it says.
    pub bundle_method: String,
    /// Cloudflare's `type` ("sni_custom" or "legacy_custom"); both are selected by SNI.
    #[serde(rename = "type")]
    pub kind: String,
    /// The host names the leaf certificate covers (its DNS subject alternative names).
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    pub serial_number: String,
    pub expires_on: String,
    pub uploaded_on: String,
    pub modified_on: String,
    /// Among certificates covering one host, the lowest priority number is served.
    pub priority: i64,
}

/// `expired` once `expires_on` (RFC 3339) has passed, else `active`: a stored certificate's
/// status as the API shows it.
fn status(expires_on: &str, now: std::time::SystemTime) -> &'static str {
    if humantime::parse_rfc3339(expires_on).is_ok_and(|t| t < now) {
        "expired"
    } else {
        "active"
    }
}

impl CustomCertificate {
    /// Whether `expires_on` has passed: an automatic certificate is then served before it,
    /// and obtained for its names.
    pub fn expired(&self, now: std::time::SystemTime) -> bool {
        status(&self.expires_on, now) == "expired"
    }

    /// When it expires, if `expires_on` reads as a time.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(&self.expires_on).ok()
    }

    /// The API's view: everything but the private key and the PEM.
    pub fn public_json(&self, now: std::time::SystemTime) -> Value {
        json!({
            "id": self.id,
            "zone_id": self.zone_id,
            "hosts": self.hosts,
            "issuer": self.issuer,
            "signature": self.signature,
            "serial_number": self.serial_number,
            "status": status(&self.expires_on, now),
            "bundle_method": self.bundle_method,
            "type": self.kind,
            "geo_restrictions": Value::Null,
            "keyless_server": Value::Null,
            "policy": Value::Null,
            "expires_on": self.expires_on,
            "uploaded_on": self.uploaded_on,
            "modified_on": self.modified_on,
            "priority": self.priority,
        })
    }
}

/// Cloudflare's bundle methods.
pub const BUNDLE_METHODS: &[&str] = &["ubiquitous", "optimal", "force"];
/// Cloudflare's custom certificate types.
pub const CERTIFICATE_TYPES: &[&str] = &["sni_custom", "legacy_custom"];

/// A certificate Parapet obtains by itself (ACME) for one proxied host name, and where its
/// issuance stands. Stored per host name; every edge of a fleet serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoCertificate {
    /// The proxied name (`www.example.com` or `*.example.com`).
    pub hostname: String,
    pub zone_id: String,
    /// PEM chain and key of the current certificate (empty before the first issuance).
    pub certificate: String,
    pub private_key: String,
    /// Unix seconds; 0 before the first issuance.
    pub not_after: i64,
    pub issued_on: String,
    pub issuer: String,
    /// The last issuance attempt's failure, if it failed.
    pub error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Unix seconds before which no new attempt is made (backoff after a failure).
    pub next_attempt: i64,
}

impl AutoCertificate {
    /// Whether a certificate has been issued (it may still be renewing or retrying).
    pub fn issued(&self) -> bool {
        !self.certificate.is_empty()
    }
}

/// A certificate Parapet's Origin CA issued for an origin (`/certificates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginCertificate {
    pub id: String,
    /// PEM, signed by the Origin CA.
    pub certificate: String,
    pub hostnames: Vec<String>,
    /// The zones the host names belong to (who may see the certificate).
    pub zone_ids: Vec<String>,
    pub expires_on: String,
    /// `origin-ecc` or `origin-rsa`.
    pub request_type: String,
    /// Days.
    pub requested_validity: u32,
    pub csr: String,
    /// When it was revoked (RFC 3339): `strict` zones refuse origins that present it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl OriginCertificate {
    pub fn api_json(&self) -> Value {
        let mut out = json!({
            "id": self.id,
            "certificate": self.certificate,
            "hostnames": self.hostnames,
            "expires_on": self.expires_on,
            "request_type": self.request_type,
            "requested_validity": self.requested_validity,
            "csr": self.csr,
        });
        if let Some(at) = &self.revoked_at {
            out["revoked_at"] = json!(at);
        }
        out
    }
}

/// A revoked Origin CA certificate, stored under the SHA-256 of its DER form (lower-case hex):
/// the edge compares what an origin presents with these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedOriginCertificate {
    pub id: String,
    pub sha256: String,
    pub revoked_at: String,
    pub expires_on: String,
}

/// An answer to an HTTP-01 or TLS-ALPN-01 challenge the edge serves while an order is validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeResponse {
    /// The name being validated.
    pub hostname: String,
    /// HTTP-01: the token (the path under `/.well-known/acme-challenge/`) and the key
    /// authorization served there.
    pub token: String,
    pub key_authorization: String,
    /// TLS-ALPN-01: the challenge certificate and its key (PEM).
    pub certificate: String,
    pub private_key: String,
}

/// A zone's own client certificate for Authenticated Origin Pulls
/// (`/zones/{id}/origin_tls_client_auth`), presented instead of the node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginPullCertificate {
    pub id: String,
    pub zone_id: String,
    /// PEM chain (leaf first) and key.
    pub certificate: String,
    pub private_key: String,
    pub issuer: String,
    pub signature: String,
    pub serial_number: String,
    pub expires_on: String,
    pub uploaded_on: String,
}

impl OriginPullCertificate {
    /// The API's view: the certificate, not the key.
    pub fn public_json(&self, now: std::time::SystemTime) -> Value {
        json!({
            "id": self.id,
            "certificate": self.certificate,
            "issuer": self.issuer,
            "signature": self.signature,
            "serial_number": self.serial_number,
            "status": status(&self.expires_on, now),
            "expires_on": self.expires_on,
            "uploaded_on": self.uploaded_on,
        })
    }
}

/// A CA certificate a zone trusts for its origins in `strict` mode, besides the node's roots
/// (Cloudflare's Custom Origin Trust Store, `/zones/{id}/acm/custom_trust_store`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCa {
    pub id: String,
    pub zone_id: String,
    /// PEM, one CA certificate.
    pub certificate: String,
    pub issuer: String,
    pub signature: String,
    pub expires_on: String,
    pub uploaded_on: String,
}

impl TrustedCa {
    pub fn public_json(&self, now: std::time::SystemTime) -> Value {
        json!({
            "id": self.id,
            "certificate": self.certificate,
            "issuer": self.issuer,
            "signature": self.signature,
            "status": status(&self.expires_on, now),
            "expires_on": self.expires_on,
            "updated_at": self.uploaded_on,
            "uploaded_on": self.uploaded_on,
        })
    }
}
