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

/// The media types each extension names, for Cache Deception Armor: `(extensions, types)`.
const EXTENSION_TYPES: &[(&[&str], &[&str])] = &[
    (&["css"], &["text/css"]),
    (
        &["js", "mjs"],
        &[
            "application/javascript",
            "text/javascript",
            "application/x-javascript",
            "application/ecmascript",
            "text/ecmascript",
        ],
    ),
    (&["json"], &["application/json"]),
    (
        &["jpg", "jpeg", "jpe", "jfif"],
        &["image/jpeg", "image/pjpeg"],
    ),
    (&["png"], &["image/png"]),
    (&["gif"], &["image/gif"]),
    (&["webp"], &["image/webp"]),
    (&["avif"], &["image/avif"]),
    (&["svg", "svgz"], &["image/svg+xml"]),
    (
        &["ico"],
        &["image/x-icon", "image/vnd.microsoft.icon", "image/ico"],
    ),
    (&["bmp"], &["image/bmp", "image/x-ms-bmp"]),
    (&["tif", "tiff"], &["image/tiff"]),
    (
        &["woff"],
        &[
            "font/woff",
            "application/font-woff",
            "application/x-font-woff",
        ],
    ),
    (&["woff2"], &["font/woff2", "application/font-woff2"]),
    (
        &["ttf"],
        &[
            "font/ttf",
            "font/sfnt",
            "application/x-font-ttf",
            "application/font-sfnt",
        ],
    ),
    (
        &["otf"],
        &[
            "font/otf",
            "font/sfnt",
            "application/x-font-otf",
            "application/font-sfnt",
        ],
    ),
    (&["eot"], &["application/vnd.ms-fontobject"]),
    (&["pdf"], &["application/pdf"]),
    (&["txt"], &["text/plain"]),
    (&["csv"], &["text/csv", "text/plain"]),
    (&["xml"], &["application/xml", "text/xml"]),
    (&["html", "htm"], &["text/html"]),
    (&["mp4", "m4v"], &["video/mp4"]),
    (&["webm"], &["video/webm", "audio/webm"]),
    (&["mp3"], &["audio/mpeg", "audio/mp3"]),
    (&["ogg"], &["audio/ogg", "video/ogg", "application/ogg"]),
    (&["wav"], &["audio/wav", "audio/x-wav", "audio/wave"]),
    (
        &["zip"],
        &["application/zip", "application/x-zip-compressed"],
    ),
    (&["gz"], &["application/gzip", "application/x-gzip"]),
    (&["wasm"], &["application/wasm"]),
];

/// Whether an answer of `content_type` fits what `path`'s extension names (Cloudflare's Cache
/// Deception Armor): a path whose extension this edge knows must be answered with one of its
/// types (or `application/octet-stream`, which claims nothing); any other path fits.
pub fn type_fits_extension(path: &str, content_type: Option<&str>) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    let Some((_, ext)) = last.rsplit_once('.') else {
        return true;
    };
    let Some((_, types)) = EXTENSION_TYPES
        .iter()
        .find(|(exts, _)| exts.iter().any(|e| e.eq_ignore_ascii_case(ext)))
    else {
        return true;
    };
    let Some(essence) = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
    else {
        return false;
    };
    essence.eq_ignore_ascii_case("application/octet-stream")
        || types.iter().any(|t| t.eq_ignore_ascii_case(essence))
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
    fn an_answer_fits_its_extension_when_its_type_is_one_the_extension_names() {
        assert!(type_fits_extension(
            "/a/style.css",
            Some("text/css; charset=utf-8")
        ));
        assert!(type_fits_extension("/a/app.JS", Some("Text/JavaScript")));
        assert!(type_fits_extension(
            "/logo.png",
            Some("application/octet-stream")
        ));
        assert!(!type_fits_extension(
            "/account.php/x.css",
            Some("text/html")
        ));
        assert!(!type_fits_extension(
            "/me/avatar.jpg",
            Some("text/html; charset=utf-8")
        ));
        assert!(!type_fits_extension("/me/x.js", None));
        // Paths whose extension says nothing known fit whatever the type.
        assert!(type_fits_extension("/account", Some("text/html")));
        assert!(type_fits_extension("/file.unknownext", Some("text/html")));
        assert!(type_fits_extension("/dir.v2/", Some("text/html")));
    }

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
