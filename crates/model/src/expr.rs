//! Rule expressions in Cloudflare's rules language, limited to what an edge rule needs to
//! match a request: its host, path and file extension.
//!
//! ```text
//! http.host eq "a.example.com" or (http.host in {"b.example.com" "c.example.com"})
//! starts_with(http.request.uri.path, "/img/") and not http.request.uri.path.extension in {"svg"}
//! http.request.uri.path wildcard "/assets/*.js"
//! ```
//! Fields: `http.host`, `http.request.uri.path`, `http.request.uri.path.extension`. Operators:
//! `eq`/`==`, `ne`/`!=`, `in {…}`, `contains`, `wildcard`, and the functions `starts_with(…)`,
//! `ends_with(…)`; `and`/`&&`, `or`/`||`, `not`/`!`, parentheses, `true`, `false`. Anything else
//! is refused with an error that names it.

const MAX_EXPRESSION: usize = 4096;
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Host,
    Path,
    Extension,
}

impl Field {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "http.host" | "http.request.host" => Some(Self::Host),
            "http.request.uri.path" => Some(Self::Path),
            "http.request.uri.path.extension" => Some(Self::Extension),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Contains,
    /// `wildcard` (letters in any case) or `strict wildcard` (`true`: case counts).
    Wildcard(bool),
    StartsWith,
    EndsWith,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Const(bool),
    Test {
        field: Field,
        op: Op,
        values: Vec<String>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// What an expression looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Lowercase, no port.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

/// A request path as rules see it, normalised as Cloudflare normalises incoming URLs:
/// backslashes read as slashes, successive slashes merged, percent-encoded unreserved characters
/// decoded and the other encodings in upper case (RFC 3986 §6.2.2), dot segments removed; so
/// `/%61ccount/../account//x` and `/account/x` match the same rules. The edge keys the cache on
/// this form and sends it to the origin too ([`normalized_target`]).
pub fn normalize_path(raw: &str) -> String {
    if plainly_normal(raw) {
        return raw.to_owned();
    }
    normalized_path(raw)
}

/// The commonest path has nothing to decode, no dot segment and no doubled or back slash: it
/// is its own form.
fn plainly_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path.contains("/.")
        && !path.contains("//")
        && !path.contains('\\')
}

/// A request target (path and query) with its path normalised as [`normalize_path`] has it,
/// the query as sent; `None` when it already is so, or is no path (`*`). The edge keys the
/// cache on this form and sends it to the origin.
pub fn normalized_target(target: &str) -> Option<String> {
    let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
    if !path.starts_with('/') || plainly_normal(path) {
        return None;
    }
    let mut normal = normalized_path(path);
    (normal != path).then(|| {
        normal.push_str(query);
        normal
    })
}

/// [`normalize_path`], worked out.
fn normalized_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push('%');
                    decoded.push_str(&raw[i + 1..i + 3].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        if bytes[i] == b'\\' {
            decoded.push('/');
            i += 1;
            continue;
        }
        // Not an encoded unreserved character: copied as it is (a whole UTF-8 sequence).
        let ch_len = raw[i..].chars().next().map_or(1, char::len_utf8);
        decoded.push_str(&raw[i..i + ch_len]);
        i += ch_len;
    }
    let mut out: Vec<&str> = Vec::new();
    // Empty segments (doubled slashes) are merged away; a trailing slash is kept below.
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    path
}

impl RequestFacts<'_> {
    fn field(&self, f: Field) -> String {
        match f {
            Field::Host => self.host.to_owned(),
            Field::Path => self.path.to_owned(),
            Field::Extension => {
                let last = self.path.rsplit('/').next().unwrap_or("");
                match last.rsplit_once('.') {
                    Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
                    _ => String::new(),
                }
            }
        }
    }
}

/// Cloudflare's `wildcard` matching: `*` matches any run of characters (none too), `\*` and
/// `\\` a star and a backslash themselves, everything else itself; letters in any case unless
/// `strict`.
fn wildcard(pattern: &str, text: &str, strict: bool) -> bool {
    #[derive(Clone, Copy)]
    enum Piece {
        Any,
        One(char),
    }
    let mut pieces = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pieces.push(match c {
            '*' => Piece::Any,
            '\\' => Piece::One(chars.next().unwrap_or('\\')),
            c => Piece::One(c),
        });
    }
    let same = |a: char, b: char| {
        if strict {
            a == b
        } else {
            a.eq_ignore_ascii_case(&b)
        }
    };
    let text: Vec<char> = text.chars().collect();
    // The last star's place in the pattern, and where in the text it has taken up to.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pieces.get(p) {
            Some(Piece::One(c)) if same(*c, text[t]) => (p, t) = (p + 1, t + 1),
            Some(Piece::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((at, taken)) => {
                    star = Some((at, taken + 1));
                    (p, t) = (at + 1, taken + 1);
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|piece| matches!(piece, Piece::Any))
}

impl Expr {
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        match self {
            Self::Const(b) => *b,
            Self::Not(e) => !e.matches(request),
            Self::And(a, b) => a.matches(request) && b.matches(request),
            Self::Or(a, b) => a.matches(request) || b.matches(request),
            Self::Test { field, op, values } => {
                let got = request.field(*field);
                let first = values.first().map_or("", String::as_str);
                match op {
                    Op::Eq => got == first,
                    Op::Ne => got != first,
                    Op::In => values.contains(&got),
                    Op::Contains => got.contains(first),
                    Op::Wildcard(strict) => wildcard(first, &got, *strict),
                    Op::StartsWith => got.starts_with(first),
                    Op::EndsWith => got.ends_with(first),
                }
            }
        }
    }

    /// The host names this expression can match, when it matches on nothing but `http.host`
    /// equality (`None`: it may match any host).
    pub fn only_hosts(&self) -> Option<Vec<String>> {
        match self {
            Self::Test {
                field: Field::Host,
                op: Op::Eq | Op::In,
                values,
            } => Some(values.clone()),
            Self::Or(a, b) => {
                let mut hosts = a.only_hosts()?;
                hosts.extend(b.only_hosts()?);
                Some(hosts)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    OpenSet,
    CloseSet,
    Comma,
}

/// Characters of the C-like operators (`==`, `!=`, `!`, `&&`, `||`, ...): a run of them is a
/// word of its own, written against its operands or not (`!starts_with(...)`, `a=="b"`).
const OPERATOR_CHARS: &str = "!=&|<>~^";

/// Cloudflare's C-like operators, longest first.
const OPERATORS: [&str; 11] = ["==", "!=", "<=", ">=", "&&", "||", "^^", "!", "<", ">", "~"];

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '{' | '}' | ',' => {
                i += 1;
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '{' => Token::OpenSet,
                    '}' => Token::CloseSet,
                    _ => Token::Comma,
                });
            }
            '"' => {
                i += 1;
                let mut value = String::new();
                loop {
                    match chars.get(i) {
                        Some('"') => break,
                        Some('\\') => match chars.get(i + 1) {
                            Some(&e) => {
                                value.push(e);
                                i += 1;
                            }
                            None => return Err("unterminated string".into()),
                        },
                        Some(&c) => value.push(c),
                        None => return Err("unterminated string".into()),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Str(value));
            }
            // A raw string, `r"..."` or `r#"..."#` (as many #s closing as opening): no escapes.
            'r' if matches!(chars.get(i + 1), Some('"' | '#')) => {
                let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
                let open = i + 1 + hashes;
                if chars.get(open) != Some(&'"') {
                    return Err("a raw string is r\"...\" or r#\"...\"#".into());
                }
                let closing: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body = &chars[open + 1..];
                let Some(at) = body
                    .windows(closing.len())
                    .position(|w| w == closing.as_slice())
                else {
                    return Err("unterminated raw string".into());
                };
                out.push(Token::Str(body[..at].iter().collect()));
                i = open + 1 + at + closing.len();
            }
            c if OPERATOR_CHARS.contains(c) => {
                // The longest operator there (`&&!` is `&&` then `!`); a lone character that
                // starts none is a word of its own, for the parser to refuse.
                let op = OPERATORS
                    .iter()
                    .find(|op| {
                        op.chars().zip(&chars[i..]).filter(|(a, b)| a == *b).count() == op.len()
                    })
                    .map_or_else(|| c.to_string(), |op| (*op).to_owned());
                i += op.chars().count();
                out.push(Token::Word(op));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "(){}\",".contains(c) || OPERATOR_CHARS.contains(c) {
                        break;
                    }
                    word.push(c);
                    i += 1;
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

fn describe(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("'{}'", crate::name::printable(w)),
        Token::Str(s) => format!("\"{}\"", crate::name::printable(s)),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::OpenSet => "'{'".into(),
        Token::CloseSet => "'}'".into(),
        Token::Comma => "','".into(),
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, String> {
    if s.len() > MAX_EXPRESSION {
        return Err(format!("longer than {MAX_EXPRESSION} characters"));
    }
    let tokens = tokenize(s)?;
    if tokens.is_empty() {
        return Err("is empty".into());
    }
    let mut p = Parser { t: &tokens, pos: 0 };
    let e = p.or(0)?;
    if let Some(t) = p.t.get(p.pos) {
        return Err(format!("unexpected {} at the end", describe(t)));
    }
    Ok(e)
}

struct Parser<'a> {
    t: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.t.get(self.pos) {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<&Token> {
        let t = self.t.get(self.pos);
        self.pos += 1;
        t
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.and(depth)?;
        while matches!(self.peek_word(), Some("or" | "||")) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        if matches!(self.peek_word(), Some("xor" | "^^")) {
            return Err("'xor' is not supported".into());
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.unary(depth)?;
        while matches!(self.peek_word(), Some("and" | "&&")) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        if matches!(self.peek_word(), Some("not" | "!")) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        self.primary(depth)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s.clone()),
            Some(t) => Err(format!("{what} needs a quoted string, not {}", describe(t))),
            None => Err(format!("{what} needs a quoted string")),
        }
    }

    fn field(&mut self) -> Result<Field, String> {
        match self.next() {
            Some(Token::Word(w)) => Field::parse(w).ok_or_else(|| unsupported_field(w)),
            Some(t) => Err(format!("expected a field, not {}", describe(t))),
            None => Err("ends where a field was expected".into()),
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, String> {
        let Some(token) = self.next().cloned() else {
            return Err("ends where a condition was expected".into());
        };
        match token {
            Token::Open => {
                let e = self.or(depth + 1)?;
                match self.next() {
                    Some(Token::Close) => Ok(e),
                    _ => Err("a '(' is not closed".into()),
                }
            }
            Token::Word(w) if w == "true" => Ok(Expr::Const(true)),
            Token::Word(w) if w == "false" => Ok(Expr::Const(false)),
            Token::Word(w) if w == "starts_with" || w == "ends_with" => {
                if self.next() != Some(&Token::Open) {
                    return Err(format!("{w} needs '('"));
                }
                let field = self.field()?;
                if self.next() != Some(&Token::Comma) {
                    return Err(format!("{w}(field, \"value\") needs a ','"));
                }
                let value = self.string(&w)?;
                if self.next() != Some(&Token::Close) {
                    return Err(format!("{w}(…) is not closed"));
                }
                let op = if w == "starts_with" {
                    Op::StartsWith
                } else {
                    Op::EndsWith
                };
                Ok(Expr::Test {
                    field,
                    op,
                    values: vec![normalized(field, value)?],
                })
            }
            Token::Word(w) => {
                let field = Field::parse(&w).ok_or_else(|| unsupported_field(&w))?;
                let op = match self.next() {
                    Some(Token::Word(op)) => op.clone(),
                    _ => return Err(format!("{w} must be followed by an operator")),
                };
                let (op, values) = match op.as_str() {
                    "eq" | "==" => (Op::Eq, vec![self.string(&op)?]),
                    "ne" | "!=" => (Op::Ne, vec![self.string(&op)?]),
                    "contains" => (Op::Contains, vec![self.string(&op)?]),
                    "wildcard" => (Op::Wildcard(false), vec![self.string(&op)?]),
                    "strict" => match self.next() {
                        Some(Token::Word(w)) if w == "wildcard" => {
                            (Op::Wildcard(true), vec![self.string("strict wildcard")?])
                        }
                        _ => return Err("strict must be followed by wildcard".into()),
                    },
                    "in" => (Op::In, self.set()?),
                    other => {
                        return Err(format!(
                            "operator '{}' is not supported (eq, ne, in, contains, wildcard, strict wildcard, starts_with, ends_with)",
                            crate::name::printable(other)
                        ));
                    }
                };
                let values = values
                    .into_iter()
                    .map(|v| normalized(field, v))
                    .collect::<Result<_, _>>()?;
                Ok(Expr::Test { field, op, values })
            }
            other => Err(format!("unexpected {}", describe(&other))),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(&Token::OpenSet) {
            return Err("'in' needs a set: {\"a\" \"b\"}".into());
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Str(s)) => values.push(s.clone()),
                Some(Token::CloseSet) => break,
                Some(other) => return Err(format!("unexpected {} in a set", describe(other))),
                None => return Err("a '{' is not closed".into()),
            }
        }
        if values.is_empty() {
            return Err("an empty set matches nothing".into());
        }
        Ok(values)
    }
}

fn unsupported_field(w: &str) -> String {
    format!(
        "field '{}' is not supported (http.host, http.request.uri.path, http.request.uri.path.extension)",
        crate::name::printable(w)
    )
}

/// Host names and extensions compare without case; paths as written.
fn normalized(field: Field, value: String) -> Result<String, String> {
    match field {
        Field::Host => {
            if value
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(format!(
                    "'{}' is not a host name",
                    crate::name::printable(&value)
                ));
            }
            Ok(value.trim_end_matches('.').to_ascii_lowercase())
        }
        Field::Extension => Ok(value.trim_start_matches('.').to_ascii_lowercase()),
        Field::Path => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(host: &'a str, path: &'a str) -> RequestFacts<'a> {
        RequestFacts { host, path }
    }

    #[test]
    fn expressions_match_host_path_and_extension() {
        let e = parse(
            r#"http.host eq "A.example.com" or (http.host in {"b.example.com" "c.example.com"})"#,
        )
        .expect("parses");
        assert!(e.matches(&req("a.example.com", "/")));
        assert!(e.matches(&req("c.example.com", "/")));
        assert!(!e.matches(&req("d.example.com", "/")));
        assert_eq!(e.only_hosts().map(|h| h.len()), Some(3));

        let e = parse(r#"starts_with(http.request.uri.path, "/img/") and not http.request.uri.path.extension in {"svg"}"#)
            .expect("parses");
        assert!(e.matches(&req("x", "/img/a.PNG")));
        assert!(!e.matches(&req("x", "/img/a.svg")));
        assert!(!e.matches(&req("x", "/css/a.png")));
        assert_eq!(e.only_hosts(), None);

        let e = parse(r#"http.request.uri.path wildcard "/assets/*.js""#).expect("parses");
        assert!(e.matches(&req("x", "/assets/app.min.js")));
        assert!(!e.matches(&req("x", "/assets/app.css")));
        // `wildcard` takes letters in any case, as Cloudflare's; `strict wildcard` does not.
        assert!(e.matches(&req("x", "/Assets/App.JS")));
        let e = parse(r#"http.request.uri.path strict wildcard "/assets/*.js""#).expect("parses");
        assert!(e.matches(&req("x", "/assets/a.js")));
        assert!(!e.matches(&req("x", "/Assets/a.js")));
        assert!(parse(r#"http.request.uri.path strict "/a""#).is_err());
        assert!(parse("true").expect("true").matches(&req("x", "/")));
    }

    #[test]
    fn operators_written_against_their_operands_and_raw_strings_are_read() {
        let e = parse(r#"http.host=="a.example.com"&&!starts_with(http.request.uri.path,"/x")"#)
            .expect("parses");
        assert!(e.matches(&req("a.example.com", "/y")));
        assert!(!e.matches(&req("a.example.com", "/x/1")));
        assert!(!e.matches(&req("b.example.com", "/y")));
        let e = parse(r##"http.host eq r"a.example.com"||http.host!=r#"b"."#"##).expect("parses");
        assert!(e.matches(&req("a.example.com", "/")));
        assert!(e.matches(&req("c.example.com", "/")));
        let e = parse(r##"http.request.uri.path eq r#"/say"hi""#"##).expect("parses");
        assert!(e.matches(&req("a.example.com", r#"/say"hi""#)));
        for bad in [
            r#"http.host eq r"open"#,
            r##"http.host eq r#"x""##,
            "http.host === \"a\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_as_cloudflare_s() {
        for (pattern, text, strict, matched) in [
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("/a/*", "/a/", false, true),
            ("/a/*/c", "/a/b/x/c", false, true),
            ("/a/*/c", "/a/b/x/d", false, false),
            ("*.js", "/x.js.map", false, false),
            ("*.js*", "/x.js.map", false, true),
            ("/A*", "/abc", false, true),
            ("/A*", "/abc", true, false),
            ("/a\\*", "/a*", false, true),
            ("/a\\*", "/ab", false, false),
            ("/a\\\\b", "/a\\b", false, true),
            ("a*b*c", "aXbYbZc", false, true),
            ("a*b*c", "aXbYbZ", false, false),
            ("ü*", "ÜBER", false, false),
        ] {
            assert_eq!(
                wildcard(pattern, text, strict),
                matched,
                "{pattern} {text} {strict}"
            );
        }
    }

    #[test]
    fn paths_are_normalized_before_rules_see_them() {
        assert_eq!(normalize_path("/%61ccount/me"), "/account/me");
        assert_eq!(normalize_path("/x/../account/./me"), "/account/me");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path("/%2Fkeep%20this"), "/%2Fkeep%20this");
        assert_eq!(normalize_path("/caf\u{e9}/%7e"), "/caf\u{e9}/~");
        // As Cloudflare normalises incoming URLs (its documented example first).
        assert_eq!(normalize_path("/%68ello//pa\\th"), "/hello/pa/th");
        // A target's query is kept as it was sent.
        assert_eq!(
            normalized_target("/a/../%62.css?x=%61/../b").as_deref(),
            Some("/b.css?x=%61/../b")
        );
        for normal in ["/b.css?x=%61", "/caf%C3%A9", "*", "/", "/a/b/?"] {
            assert_eq!(normalized_target(normal), None, "{normal}");
        }
        assert_eq!(
            normalized_target("/caf%c3%a9").as_deref(),
            Some("/caf%C3%A9")
        );
        assert_eq!(normalize_path("//api/x.js"), "/api/x.js");
        assert_eq!(normalize_path("/a//b/"), "/a/b/");
        assert_eq!(normalize_path("/%2fx%3a"), "/%2Fx%3A");
        // Paths taken as they are would come out of the whole work the same.
        for raw in [
            "/",
            "//",
            "/a//b/",
            "/a.b/c..d/.e",
            "/x/.",
            "/x/..",
            "/.well-known/x",
            "/a?b=/./",
            "/caf\u{e9}",
            "/a/b.",
            "/%41",
            "",
        ] {
            assert_eq!(normalize_path(raw), normalized_path(raw), "{raw:?}");
        }
        assert_eq!(normalize_path("/trunc%6"), "/trunc%6");
        assert_eq!(normalize_path(""), "/");
    }

    proptest::proptest! {
        #[test]
        fn paths_taken_as_they_are_need_no_normalizing(raw in "[/.%a4é?]{0,12}") {
            proptest::prop_assert_eq!(normalize_path(&raw), normalized_path(&raw));
        }
    }

    #[test]
    fn unsupported_expressions_are_refused_by_name() {
        for (expr, says) in [
            (r#"http.cookie eq "a""#, "http.cookie"),
            (r#"http.host matches "a.*""#, "'matches'"),
            (r#"http.host eq "a.com"#, "unterminated"),
            (r#"(http.host eq "a.com""#, "not closed"),
            (r#"http.host eq "a" xor http.host eq "b""#, "xor"),
            ("", "empty"),
            (&"(".repeat(100), "deeper"),
        ] {
            let err = parse(expr).expect_err("refused");
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}
