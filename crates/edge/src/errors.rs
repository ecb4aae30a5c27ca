//! Errors a visitor sees, as Cloudflare's numbered error pages: HTML for browsers, JSON when
//! the request asks for it. Each page carries the ray id; none ever names the origin.

/// Why the edge answered instead of the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error("the host is not served by this edge")]
    UnknownHost,
    #[error("the host is an IP address")]
    DirectIp,
    #[error("the host is not proxied")]
    NotProxied,
    #[error("the zone is not active")]
    ZoneNotActive,
    #[error("the origin's name does not resolve")]
    OriginDns,
    #[error("the origin's address is this edge's own")]
    OriginIsEdge,
    #[error("the origin's address is in a network the edge does not connect to")]
    OriginProhibited,
    #[error("the request has already passed through this edge")]
    Loop,
    #[error("the origin refused the connection")]
    OriginRefused,
    #[error("the connection to the origin timed out")]
    ConnectTimeout,
    #[error("the origin is unreachable")]
    Unreachable,
    #[error("the origin did not answer in time")]
    ReadTimeout,
    #[error("the origin sent an empty or invalid response")]
    InvalidResponse,
    #[error("the request's host is in another zone than the name its TLS handshake was for")]
    Misdirected,
    #[error("the TLS handshake with the origin failed")]
    OriginHandshake,
    #[error("the origin's certificate is not valid for its name")]
    OriginCertificate,
}

impl EdgeError {
    /// Cloudflare's error number.
    pub fn code(self) -> u16 {
        match self {
            Self::UnknownHost => 1001,
            Self::DirectIp => 1003,
            Self::NotProxied | Self::ZoneNotActive => 1018,
            Self::OriginDns => 1016,
            Self::OriginIsEdge => 1000,
            Self::OriginProhibited => 1002,
            Self::Loop => 1019,
            Self::Misdirected => 1013,
            Self::OriginRefused => 521,
            Self::ConnectTimeout => 522,
            Self::Unreachable => 523,
            Self::ReadTimeout => 524,
            Self::InvalidResponse => 520,
            Self::OriginHandshake => 525,
            Self::OriginCertificate => 526,
        }
    }

    /// The HTTP status of the page: Cloudflare's (409 for a host it does not serve, 1001 and
    /// 1018; 530 for an origin name that does not resolve).
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownHost | Self::NotProxied | Self::ZoneNotActive => 409,
            Self::OriginDns => 530,
            Self::Loop => 508,
            // Misdirected Request (RFC 9110 §15.5.20): a browser that reused a connection
            // for another host asks again on a new one.
            Self::Misdirected => 421,
            Self::DirectIp | Self::OriginIsEdge | Self::OriginProhibited => 403,
            other => other.code(),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::UnknownHost => "DNS resolution error",
            Self::DirectIp => "Direct IP access not allowed",
            Self::NotProxied => "Host not configured to serve web traffic",
            Self::ZoneNotActive => "This site is not active on Parapet yet",
            Self::OriginDns => "Origin DNS error",
            Self::OriginIsEdge => "DNS points to prohibited IP",
            Self::OriginProhibited => "DNS points to local or disallowed IP",
            Self::Loop => "Loop detected",
            Self::Misdirected => "HTTP hostname and TLS SNI hostname mismatch",
            Self::OriginRefused => "Web server is down",
            Self::ConnectTimeout => "Connection timed out",
            Self::Unreachable => "Origin is unreachable",
            Self::ReadTimeout => "A timeout occurred",
            Self::InvalidResponse => "Web server is returning an unknown error",
            Self::OriginHandshake => "SSL handshake failed",
            Self::OriginCertificate => "Invalid SSL certificate",
        }
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// The page body and its content type, for `accept` (the request's Accept header).
pub fn error_page(
    error: EdgeError,
    ray: &str,
    host: Option<&str>,
    accept: Option<&str>,
) -> (String, &'static str) {
    let wants_json =
        accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    if wants_json {
        let body = serde_json::json!({
            "success": false,
            "errors": [{"code": error.code(), "message": error.title()}],
            "ray_id": ray,
            "status": error.status(),
        });
        return (body.to_string(), "application/json");
    }
    let host = host.map(escape).unwrap_or_default();
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error {code}: {title}</title></head>\n<body>\n<h1>Error {code}</h1>\n<h2>{title}</h2>\n<p>{explanation}</p>\n<p>Host: {host}</p>\n<p>Ray ID: <code>{ray}</code> &middot; Parapet</p>\n</body></html>\n",
        code = error.code(),
        title = error.title(),
        explanation = escape(&error.to_string()),
        ray = escape(ray),
    );
    (body, "text/html; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_code_and_ray_in_html_or_json() {
        let (html, ct) = error_page(
            EdgeError::ConnectTimeout,
            "abc-PPT",
            Some("<x>"),
            Some("text/html"),
        );
        assert!(
            html.contains("Error 522") && html.contains("abc-PPT") && html.contains("&lt;x&gt;")
        );
        assert!(ct.starts_with("text/html"));
        let (json, ct) = error_page(
            EdgeError::OriginRefused,
            "r",
            None,
            Some("application/json"),
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            (v["errors"][0]["code"].as_u64(), ct),
            (Some(521), "application/json")
        );
    }
}
