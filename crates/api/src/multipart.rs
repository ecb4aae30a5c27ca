//! `multipart/form-data` bodies (RFC 7578, RFC 2046 §5.1), read whole from memory. Lines may
//! end with CRLF, as the RFC writes them, or with a bare LF, as some clients send them
//! (cloudflare-go's zone import builds its body from a Go string with LF line ends, and
//! Cloudflare takes it).

/// Most parts a body may have.
const MAX_PARTS: usize = 64;
/// Most header lines a part may have, and longest header of a part.
const MAX_PART_FIELDS: usize = 16;
const MAX_PART_HEAD: usize = 8 * 1024;

/// One part: its field name (from `Content-Disposition`) and its content.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'b> {
    pub name: String,
    pub data: &'b [u8],
}

/// The boundary a `Content-Type` value gives for `multipart/form-data`.
pub fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "Content-Type must be multipart/form-data, not '{}'",
            printable(kind)
        ));
    }
    let boundary = params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| unquote(value.trim()))
        .ok_or("Content-Type has no boundary")?;
    // RFC 2046 §5.1.1: 1 to 70 characters, none a control character.
    if boundary.is_empty()
        || boundary.len() > 70
        || boundary
            .bytes()
            .any(|b| b.is_ascii_control() || !b.is_ascii())
    {
        return Err("the boundary must be 1 to 70 printable ASCII characters".to_owned());
    }
    Ok(boundary)
}

/// The parts of `body`, delimited by `boundary`.
pub fn parts<'b>(body: &'b [u8], boundary: &str) -> Result<Vec<Part<'b>>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter starts the body or a line (a preamble before it is ignored).
    let mut at = if body.starts_with(delimiter) && delimiter_ends(body, delimiter.len()) {
        delimiter.len()
    } else {
        line_then(body, 0, delimiter).ok_or("no boundary line in the body")?
    };
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        // Transport padding, then the end of the boundary line.
        while body.get(at).is_some_and(|&b| b == b' ' || b == b'\t') {
            at += 1;
        }
        at = line_end(body, at).ok_or("a boundary line runs on")?;
        let (name, data_from) = part_head(body, at)?;
        let end = line_then_at(body, data_from, delimiter)
            .ok_or("the body ends before its closing boundary")?;
        parts.push(Part {
            name,
            data: &body[data_from..end.0],
        });
        at = end.1;
    }
}

/// Reads a part's header from `at`: its name, and where its content starts.
fn part_head(body: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut name = None;
    let start = at;
    for _ in 0..=MAX_PART_FIELDS {
        let rest = &body[at..];
        let len = memchr::memchr(b'\n', rest).ok_or("a part's header never ends")?;
        let line = &rest[..len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += len + 1;
        if at - start > MAX_PART_HEAD {
            return Err("a part's header is too long".to_owned());
        }
        if line.is_empty() {
            return name
                .map(|n| (n, at))
                .ok_or_else(|| "a part has no Content-Disposition name".to_owned());
        }
        let line = std::str::from_utf8(line).map_err(|_| "a part's header is not text")?;
        let Some((field, value)) = line.split_once(':') else {
            return Err(format!(
                "a part's header line '{}' has no ':'",
                printable(line)
            ));
        };
        if field.trim().eq_ignore_ascii_case("content-disposition") {
            name = Some(disposition_name(value)?);
        }
    }
    Err(format!(
        "a part has more than {MAX_PART_FIELDS} header lines"
    ))
}

/// The `name` parameter of a `Content-Disposition: form-data` value.
fn disposition_name(value: &str) -> Result<String, String> {
    let mut params = split_params(value).into_iter();
    let kind = params.next().unwrap_or_default();
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(format!(
            "a part's Content-Disposition must be form-data, not '{}'",
            printable(kind.trim())
        ));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("name"))
        .map(|(_, value)| unquote(value.trim()))
        .ok_or_else(|| "a part's Content-Disposition has no name".to_owned())
}

/// Splits a header value at the semicolons outside quoted strings.
fn split_params(value: &str) -> Vec<&str> {
    let (mut out, mut from, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[from..]);
    out
}

/// A token, or a quoted string without its quotes and escapes.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// Just past the line break that ends the line at `at` (CRLF or LF).
fn line_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at..)? {
        [b'\r', b'\n', ..] => Some(at + 2),
        [b'\n', ..] => Some(at + 1),
        _ => None,
    }
}

/// Just past the first `delimiter` from `from` that starts a line.
fn line_then(body: &[u8], from: usize, delimiter: &[u8]) -> Option<usize> {
    line_then_at(body, from, delimiter).map(|(_, after)| after)
}

/// The first `delimiter` from `from` that follows a line break: where that line break starts
/// (the content before it ends there: the break belongs to the delimiter) and just past the
/// delimiter.
fn line_then_at(body: &[u8], from: usize, delimiter: &[u8]) -> Option<(usize, usize)> {
    let finder = memchr::memmem::Finder::new(delimiter);
    let mut search = from;
    loop {
        let found = search + finder.find(body.get(search..)?)?;
        let after = found + delimiter.len();
        if found > from && body[found - 1] == b'\n' && delimiter_ends(body, after) {
            let start = if found >= from + 2 && body[found - 2] == b'\r' {
                found - 2
            } else {
                found - 1
            };
            return Some((start, after));
        }
        search = found + 1;
    }
}

/// Whether a delimiter line may end at `at`: the closing `--`, or transport padding and the
/// line's end (else the line only starts as one, RFC 2046 §5.1.1).
fn delimiter_ends(body: &[u8], at: usize) -> bool {
    let rest = body.get(at..).unwrap_or_default();
    let padded = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(&[][..], |p| &rest[p..]);
    rest.starts_with(b"--") || padded.starts_with(b"\n") || padded.starts_with(b"\r\n")
}

/// Text for an error message: printable ASCII, at most 40 characters.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(content_type: &str, body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
        let boundary = boundary(content_type)?;
        Ok(parts(body, &boundary)?
            .into_iter()
            .map(|p| (p.name, p.data.to_vec()))
            .collect())
    }

    #[test]
    fn parts_are_read_with_crlf_or_bare_lf_line_ends() {
        let crlf = b"preamble\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nwww A 1.2.3.4\r\nmx MX 1 x\r\n--xyz\r\ncontent-disposition: form-data; name=proxied\r\n\r\ntrue\r\n--xyz--\r\n";
        let expected = vec![
            ("file".to_owned(), b"www A 1.2.3.4\r\nmx MX 1 x".to_vec()),
            ("proxied".to_owned(), b"true".to_vec()),
        ];
        assert_eq!(
            read("multipart/form-data; boundary=xyz", crlf),
            Ok(expected)
        );
        // As cloudflare-go writes it: LF line ends, no line break after the closing boundary.
        let lf = b"----BOUNDARY\nContent-Disposition: form-data; name=\"file\"; filename=\"bind.txt\"\n\nwww A 1.2.3.4\n\n----BOUNDARY\nContent-Disposition: form-data; name=\"proxied\"\n\ntrue\n----BOUNDARY--";
        assert_eq!(
            read("multipart/form-data; boundary=\"--BOUNDARY\"", lf),
            Ok(vec![
                ("file".to_owned(), b"www A 1.2.3.4\n".to_vec()),
                ("proxied".to_owned(), b"true".to_vec()),
            ])
        );
    }

    #[test]
    fn a_boundary_inside_a_line_is_content() {
        let body =
            b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx --b y\r\n--bz\r\n--b--";
        assert_eq!(
            read("multipart/form-data; boundary=b", body),
            Ok(vec![("file".to_owned(), b"x --b y\r\n--bz".to_vec())])
        );
    }

    #[test]
    fn malformed_bodies_are_refused_with_a_reason() {
        let ct = "multipart/form-data; boundary=b";
        for (body, says) in [
            (&b"no boundary at all"[..], "no boundary line"),
            (
                b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\ncut off",
                "closing boundary",
            ),
            (
                b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
                "no name",
            ),
            (
                b"--b\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b--",
                "form-data",
            ),
            (b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "no ':'"),
            (
                b"--b\r\nContent-Disposition: form-data; name=a\r\n",
                "never ends",
            ),
            (b"--bjunk\r\n", "no boundary line"),
        ] {
            let error = read(ct, body).expect_err("refused");
            assert!(error.contains(says), "{error}");
        }
        assert!(read("application/json", b"").is_err());
        assert!(read("multipart/form-data", b"").is_err());
        assert!(read("multipart/form-data; boundary=\"\"", b"").is_err());
        let many =
            "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n".repeat(MAX_PARTS + 1);
        let error = read(ct, format!("{many}--b--").as_bytes()).expect_err("refused");
        assert!(error.contains("more than"), "{error}");
    }

    proptest! {
        #[test]
        fn any_body_is_read_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = read("multipart/form-data; boundary=b", &body);
        }

        #[test]
        fn parts_written_either_way_read_back(
            data in proptest::collection::vec("([a-z \\-\r\n]{0,40}[a-z])?", 1..5),
            lf in any::<bool>(),
        ) {
            let nl = if lf { "\n" } else { "\r\n" };
            let mut body = String::new();
            for (i, d) in data.iter().enumerate() {
                body.push_str(&format!("--BND{nl}Content-Disposition: form-data; name=\"p{i}\"{nl}{nl}{d}{nl}"));
            }
            body.push_str("--BND--");
            let read = read("multipart/form-data; boundary=BND", body.as_bytes());
            let expected: Vec<(String, Vec<u8>)> = data
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("p{i}"), d.as_bytes().to_vec()))
                .collect();
            prop_assert_eq!(read, Ok(expected));
        }
    }
}
