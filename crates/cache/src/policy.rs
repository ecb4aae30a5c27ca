//! What the edge caches, as Cloudflare decides it by default: eligible by file extension (HTML
//! and JSON are not), the origin's `Cache-Control` respected (RFC 9111), and for responses
//! without freshness information, Cloudflare's default edge TTL per status code.

use std::time::Duration;

/// Cloudflare's default cacheable file extensions.
const EXTENSIONS: &[&str] = &[
    "7z", "avi", "avif", "apk", "bin", "bmp", "bz2", "class", "css", "csv", "doc", "docx", "dmg",
    "ejs", "eot", "eps", "exe", "flac", "gif", "gz", "ico", "iso", "jar", "jpg", "jpeg", "js",
    "mid", "midi", "mkv", "mp3", "mp4", "ogg", "otf", "pdf", "pict", "pls", "png", "ppt", "pptx",
    "ps", "rar", "svg", "svgz", "swf", "tar", "tif", "tiff", "ttf", "webm", "webp", "woff",
    "woff2", "xls", "xlsx", "zip", "zst",
];

/// Whether a request path is eligible for caching by default: its extension is on the list,
/// or it is `robots.txt` (which Cloudflare caches too).
pub fn eligible_path(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    if last.eq_ignore_ascii_case("robots.txt") {
        return true;
    }
    match last.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() || last.starts_with('.') => {
            EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext))
        }
        _ => false,
    }
}

/// Cloudflare's edge TTL for a response that says nothing about its freshness.
pub fn default_ttl(status: u16) -> Option<Duration> {
    let minutes = match status {
        200 | 301 => 120,
        302 | 303 => 20,
        404 | 410 => 3,
        _ => return None,
    };
    Some(Duration::from_secs(minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_files_are_eligible_and_pages_are_not() {
        for yes in [
            "/a/logo.PNG",
            "/app.js",
            "/s/site.css",
            "/f/font.woff2",
            "/x.tar",
            "/robots.txt",
        ] {
            assert!(eligible_path(yes), "{yes}");
        }
        for no in [
            "/",
            "/index.html",
            "/api/data.json",
            "/page",
            "/dir.png/",
            "/noext.",
            "/notes.txt",
            "/clip.mpg",
        ] {
            assert!(!eligible_path(no), "{no}");
        }
    }

    #[test]
    fn default_ttls_follow_the_status() {
        assert_eq!(default_ttl(200), Some(Duration::from_secs(7200)));
        assert_eq!(default_ttl(404), Some(Duration::from_secs(180)));
        assert_eq!(default_ttl(500), None);
    }
}
