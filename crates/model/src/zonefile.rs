//! BIND zone files: reading them into record drafts (import) and writing a zone out (export).
//!
//! The reader is strict about structure and reports every bad entry with its line number; the
//! caller imports nothing unless the whole file is good. `$INCLUDE` is refused (a zone file
//! uploaded through the API must not name files on the server). SOA and apex NS records are
//! skipped: Parapet manages those itself. A `cf_tags=cf-proxied:true|false` comment, as in
//! Cloudflare's exports, sets the record's proxy status.

use serde_json::{Value, json};

use crate::name::{self, printable};
use crate::record::{DnsRecord, RecordDraft, RecordType};
use crate::txt;
use crate::{FieldError, ModelError, Zone};

/// Starts the line an export writes for a CNAME at the apex: zone files cannot hold one beside
/// the SOA and NS records (BIND and Knot refuse the file), so it is a comment to them, and
/// Parapet's import reads the record that follows the mark.
const APEX_CNAME_MARK: &str = ";CNAME-AT-APEX ";

/// Largest zone file accepted, in bytes.
pub const MAX_ZONE_FILE: usize = 64 * 1024 * 1024;
/// Mistakes listed for one file; the rest are counted (a file of junk must not make a list
/// larger than itself).
const MAX_ERRORS: usize = 100;

/// The mistakes found in a file: the first [`MAX_ERRORS`], and how many more.
#[derive(Default)]
struct Mistakes {
    listed: Vec<FieldError>,
    more: usize,
}

impl Mistakes {
    fn push(&mut self, e: FieldError) {
        if self.listed.len() < MAX_ERRORS {
            self.listed.push(e);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    fn into_error(mut self) -> ModelError {
        if self.more > 0 {
            self.listed.push(FieldError::new(
                "file",
                format!("{} more mistakes not listed", self.more),
            ));
        }
        ModelError::ZoneFile(self.listed)
    }
}

/// A record read from a zone file, with the line it started on.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedRecord {
    pub line: usize,
    pub draft: RecordDraft,
}

/// What a zone file held.
#[derive(Debug, Default)]
pub struct ParsedZoneFile {
    pub records: Vec<ImportedRecord>,
    /// SOA and apex NS records, which Parapet manages itself.
    pub skipped: usize,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    /// The line started with whitespace: the owner is the previous entry's.
    inherits_owner: bool,
    words: Vec<Word>,
    comment: String,
}

#[derive(Debug, Clone)]
struct Word {
    /// As written, quotes included.
    raw: String,
    quoted: bool,
}

/// Reads a zone file for `zone`. `default_proxied` applies to proxiable records that carry no
/// `cf_tags` comment.
pub fn parse_zone_file(
    text: &str,
    zone: &str,
    default_proxied: bool,
) -> Result<ParsedZoneFile, ModelError> {
    if text.len() > MAX_ZONE_FILE {
        return Err(ModelError::ZoneFile(vec![FieldError::new(
            "file",
            format!("is larger than {} MiB", MAX_ZONE_FILE / 1024 / 1024),
        )]));
    }
    // A byte order mark some editors write is not part of the first entry.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let unmarked;
    let text = if text.contains(APEX_CNAME_MARK) {
        unmarked = text
            .split('\n')
            .map(|line| line.strip_prefix(APEX_CNAME_MARK).unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        unmarked.as_str()
    } else {
        text
    };
    let mut out = ParsedZoneFile::default();
    let mut origin = zone.to_owned();
    let mut default_ttl: Option<u32> = None;
    let mut last_owner: Option<String> = None;
    let mut last_ttl: Option<u32> = None;
    let mut errors = Mistakes::default();
    let mut generated = 0usize;
    // Each entry is read as it is split off: a file of many bad entries is never held whole.
    split_entries(text, &mut errors, |entry, errors| {
        let at = |m: String| FieldError::new(format!("line {}", entry.line), m);
        match read_entry(
            &entry,
            zone,
            &mut origin,
            &mut default_ttl,
            &mut last_owner,
            &mut last_ttl,
            default_proxied,
            &mut generated,
        ) {
            Ok(Parsed::Nothing) => {}
            Ok(Parsed::Skipped) => out.skipped += 1,
            // A file with mistakes imports nothing: its records are not kept.
            Ok(Parsed::Record(draft)) if errors.is_empty() => out.records.push(ImportedRecord {
                line: entry.line,
                draft: *draft,
            }),
            Ok(Parsed::Records(drafts)) if errors.is_empty() => {
                out.records
                    .extend(drafts.into_iter().map(|draft| ImportedRecord {
                        line: entry.line,
                        draft,
                    }));
            }
            Ok(Parsed::Record(_) | Parsed::Records(_)) => {}
            Err(messages) => messages.into_iter().map(at).for_each(|e| errors.push(e)),
        }
    });
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.into_error())
    }
}

enum Parsed {
    Nothing,
    Skipped,
    Record(Box<RecordDraft>),
    /// A `$GENERATE` directive's records.
    Records(Vec<RecordDraft>),
}

/// Records `$GENERATE` directives may make in one file, all told.
const MAX_GENERATED: usize = 1_000_000;

#[allow(clippy::too_many_arguments)]
fn read_entry(
    entry: &Entry,
    zone: &str,
    origin: &mut String,
    default_ttl: &mut Option<u32>,
    last_owner: &mut Option<String>,
    last_ttl: &mut Option<u32>,
    default_proxied: bool,
    generated: &mut usize,
) -> Result<Parsed, Vec<String>> {
    let words = &entry.words;
    let Some(first) = words.first() else {
        return Ok(Parsed::Nothing);
    };
    let directive = if entry.inherits_owner {
        ""
    } else {
        first.raw.as_str()
    };
    match directive.to_ascii_uppercase().as_str() {
        "$INCLUDE" => {
            return Err(vec![
                "$INCLUDE is not supported: put every record in one file".into(),
            ]);
        }
        "$ORIGIN" => {
            let [_, value] = words.as_slice() else {
                return Err(vec!["$ORIGIN needs exactly one domain name".into()]);
            };
            // Any absolute name, the root included (BIND writes `$ORIGIN .` and then names
            // in full); owners are checked against the zone, not the origin.
            *origin = if value.raw == "." {
                String::new()
            } else {
                absolute(&value.raw, origin).map_err(|m| vec![m])?
            };
            return Ok(Parsed::Nothing);
        }
        "$TTL" => {
            let [_, value] = words.as_slice() else {
                return Err(vec!["$TTL needs exactly one value".into()]);
            };
            *default_ttl = Some(
                parse_ttl(&value.raw)
                    .ok_or_else(|| vec![format!("'{}' is not a TTL", printable(&value.raw))])?,
            );
            return Ok(Parsed::Nothing);
        }
        "$GENERATE" => {
            // $GENERATE start-stop[/step] lhs [ttl] [class] type rhs (BIND's form): one
            // record per value, `$` in lhs and rhs standing for it.
            let [_, range, lhs, middle @ .., rhs] = words.as_slice() else {
                return Err(vec![
                    "$GENERATE needs a range, an owner, a type and data".into(),
                ]);
            };
            if middle.is_empty() {
                return Err(vec![
                    "$GENERATE needs a range, an owner, a type and data".into(),
                ]);
            }
            let (start, stop, step) = generate_range(&range.raw).map_err(|m| vec![m])?;
            let count = usize::try_from((stop - start) / step + 1).unwrap_or(usize::MAX);
            if count > MAX_GENERATED.saturating_sub(*generated) {
                return Err(vec![format!(
                    "$GENERATE would make {count} records; a file's directives make at most {MAX_GENERATED}"
                )]);
            }
            *generated += count;
            let mut drafts = Vec::with_capacity(count);
            for value in (start..=stop).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
                let in_value = |m: String| vec![format!("$GENERATE at {value}: {m}")];
                let owner = substitute(&lhs.raw, value).map_err(in_value)?;
                let data = substitute(&rhs.raw, value).map_err(in_value)?;
                let mut words = vec![Word {
                    raw: owner,
                    quoted: false,
                }];
                words.extend(middle.iter().cloned());
                // Data in quotes is the record's data, read as a line of its own once its
                // escaped quotes stand for themselves (as BIND reads it:
                // `"\"q x\" $"` is the two strings "q x" and the value).
                match data.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
                    Some(inner) if rhs.quoted => {
                        let inner = inner.replace("\\\"", "\"");
                        let mut mistakes = Mistakes::default();
                        split_entries(&inner, &mut mistakes, |e, _| words.extend(e.words));
                    }
                    _ => words.push(Word {
                        raw: data,
                        quoted: rhs.quoted,
                    }),
                }
                let one = Entry {
                    line: entry.line,
                    inherits_owner: false,
                    words,
                    comment: entry.comment.clone(),
                };
                let read = read_entry(
                    &one,
                    zone,
                    origin,
                    default_ttl,
                    last_owner,
                    last_ttl,
                    default_proxied,
                    generated,
                );
                match read {
                    Ok(Parsed::Record(draft)) => drafts.push(*draft),
                    Ok(_) => {}
                    Err(messages) => {
                        return Err(messages
                            .into_iter()
                            .map(|m| format!("$GENERATE at {value}: {m}"))
                            .collect());
                    }
                }
            }
            return Ok(Parsed::Records(drafts));
        }
        d if d.starts_with('$') => {
            return Err(vec![format!("unknown directive {}", printable(&first.raw))]);
        }
        _ => {}
    }
    let mut rest = words.as_slice();
    let owner = if entry.inherits_owner {
        last_owner
            .clone()
            .ok_or_else(|| vec!["record without an owner name and no previous owner".to_owned()])?
    } else {
        rest = &rest[1..];
        let o = if first.raw == "@" {
            origin.clone()
        } else {
            absolute(&first.raw, origin).map_err(|m| vec![m])?
        };
        if !name::is_within(&o, zone) {
            return Err(vec![format!("owner {o} is not inside the zone {zone}")]);
        }
        o
    };
    *last_owner = Some(owner.clone());
    // [TTL] [class] type, or [class] [TTL] type.
    let mut ttl = None;
    let mut kind = None;
    while let Some((w, tail)) = rest.split_first() {
        rest = tail;
        let up = w.raw.to_ascii_uppercase();
        if up == "IN" {
            continue;
        }
        if matches!(up.as_str(), "CH" | "HS" | "CS" | "NONE" | "ANY") {
            return Err(vec![format!("class {up} is not supported (only IN)")]);
        }
        if ttl.is_none() && w.raw.starts_with(|c: char| c.is_ascii_digit()) {
            ttl = Some(
                parse_ttl(&w.raw)
                    .ok_or_else(|| vec![format!("'{}' is not a TTL", printable(&w.raw))])?,
            );
            continue;
        }
        kind = Some(up);
        break;
    }
    let Some(kind_text) = kind else {
        return Err(vec!["missing record type".into()]);
    };
    // RFC 2308 §4, as BIND and Knot read it: a record without a TTL takes `$TTL`; the previous
    // record's TTL stands in only when no `$TTL` has been given (old files).
    let ttl = ttl.or(default_ttl.or(*last_ttl));
    if let Some(t) = ttl {
        *last_ttl = Some(t);
    }
    if kind_text == "SOA" || (kind_text == "NS" && owner == zone) {
        return Ok(Parsed::Skipped);
    }
    let Some(kind) = RecordType::parse(&kind_text) else {
        return Err(vec![format!(
            "record type {} is not supported",
            printable(&kind_text)
        )]);
    };
    let content = rdata_content(kind, rest, origin).map_err(|m| vec![m])?;
    let said = CommentFields::read(&entry.comment);
    let proxied = kind.proxiable() && said.proxied.unwrap_or(default_proxied);
    let mut body = json!({
        "name": owner,
        "type": kind.as_str(),
        "content": content,
        "ttl": ttl.map_or(1, clamp_ttl),
        "proxied": proxied,
    });
    if let Some(comment) = said.comment {
        body["comment"] = json!(comment);
    }
    if !said.tags.is_empty() {
        body["tags"] = json!(said.tags);
    }
    RecordDraft::from_json(zone, &body)
        .map(|d| Parsed::Record(Box::new(d)))
        .map_err(|e| e.errors().iter().map(ToString::to_string).collect())
}

/// What a record line's comment says in Cloudflare's import and export layout: a comment alone
/// is the record's comment, verbatim; `cf_tags=` ends it with the record's tags
/// (`; a comment cf_tags=team:ops,note:"a, b",cf-proxied:true`), a value in double quotes
/// being a JSON string (it may hold commas, blanks, `=` and escaped quotes).
#[derive(Debug, Default, PartialEq)]
struct CommentFields {
    comment: Option<String>,
    tags: Vec<String>,
    proxied: Option<bool>,
}

impl CommentFields {
    fn read(comment: &str) -> Self {
        // The list is the last `cf_tags=` whose list runs to the end (one inside a quoted
        // tag value, or a comment's own words, is not).
        let listed = comment
            .rmatch_indices("cf_tags=")
            .find_map(|(at, _)| Some((at, tag_list(&comment[at + 8..])?)));
        let (text, tags) = match listed {
            Some((at, tags)) => (&comment[..at], Some(tags)),
            None => (comment, None),
        };
        // A zone file's note, as a record comment holds one: on one line, its blanks spaces,
        // cut to the longest comment kept.
        let mut note = text.trim().replace(char::is_control, " ");
        if note.len() > crate::record::MAX_COMMENT {
            let mut end = crate::record::MAX_COMMENT;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let mut out = Self {
            comment: Some(note.trim_end().to_owned()).filter(|t| !t.is_empty()),
            ..Self::default()
        };
        for tag in tags.unwrap_or_default() {
            match tag.as_str() {
                "cf-proxied:true" => out.proxied = Some(true),
                "cf-proxied:false" => out.proxied = Some(false),
                _ => out.tags.push(tag),
            }
        }
        out
    }

    /// The comment written after a record of `r`'s (empty: none): its comment, then its tags
    /// after `cf_tags=` (a value that the list could not carry as it is, quoted as a JSON
    /// string; a tag whose name holds such characters, which Cloudflare's names never do, is
    /// left out); a comment stays on its line.
    fn write(r: &DnsRecord) -> String {
        let awkward = |t: &str| {
            t.contains(|c: char| matches!(c, '"' | '=' | ',' | '\\') || c.is_whitespace())
        };
        let mut tags: Vec<String> = r
            .tags
            .iter()
            .filter_map(|t| {
                let (name, value) = t.split_once(':').unwrap_or((t, ""));
                if awkward(name) {
                    None
                } else if awkward(value) {
                    Some(format!("{name}:{}", Value::String(value.to_owned())))
                } else {
                    Some(t.clone())
                }
            })
            .collect();
        if r.kind.proxiable() {
            tags.push(format!("cf-proxied:{}", r.proxied));
        }
        let comment: Option<String> = r
            .comment
            .as_deref()
            .map(|c| c.replace(|c: char| c.is_control(), " ").trim().to_owned())
            .filter(|c| !c.is_empty());
        match (comment, tags.is_empty()) {
            (None, true) => String::new(),
            // A comment that names cf_tags= itself is followed by the list, even empty, so
            // that it reads back whole.
            (Some(c), true) if !c.contains("cf_tags=") => format!(" ; {c}"),
            (c, _) => {
                let text = c.map(|c| format!("{c} ")).unwrap_or_default();
                format!(" ; {text}cf_tags={}", tags.join(","))
            }
        }
    }
}

/// The tags of a `cf_tags=` list: up to the first blank outside quotes, split at commas outside
/// quotes; `name:"value"` is read as a JSON string (a value that is not one is kept as written).
/// `None` when the list does not run to the end of `list` (words after it, or a quote left
/// open): it is not a record's list.
fn tag_list(list: &str) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    let mut current = String::new();
    let mut chars = list.trim_start().chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => tags.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted => {
                if !chars.as_str().trim().is_empty() {
                    return None;
                }
                break;
            }
            c => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    tags.push(current);
    let tags = tags
        .into_iter()
        .map(|tag| {
            let tag = tag.trim();
            match tag.split_once(':') {
                Some((name, value)) if value.starts_with('"') => {
                    match serde_json::from_str::<String>(value) {
                        Ok(value) => format!("{name}:{value}"),
                        Err(_) => tag.to_owned(),
                    }
                }
                _ => tag.to_owned(),
            }
        })
        .filter(|t| !t.is_empty())
        .collect();
    Some(tags)
}

/// A `$GENERATE` range, `start-stop[/step]`: `start` at most `stop`, `step` at least 1.
fn generate_range(text: &str) -> Result<(u64, u64, u64), String> {
    let bad = || {
        format!(
            "'{}' is not a $GENERATE range (start-stop[/step])",
            printable(text)
        )
    };
    let (span, step) = match text.split_once('/') {
        Some((span, step)) => (span, step.parse::<u64>().map_err(|_| bad())?),
        None => (text, 1),
    };
    let (start, stop) = span.split_once('-').ok_or_else(bad)?;
    let (start, stop) = (
        start.parse::<u64>().map_err(|_| bad())?,
        stop.parse::<u64>().map_err(|_| bad())?,
    );
    if step == 0 || start > stop || stop > u64::from(u32::MAX) {
        return Err(bad());
    }
    Ok((start, stop, step))
}

/// A `$GENERATE` template with `value` put in, as BIND does: `$` is the value,
/// `${offset[,width[,base]]}` the value plus `offset`, at least `width` characters in base
/// `d`, `o`, `x` or `X` (or `n`/`N`: hexadecimal nibbles, reversed and dotted, as for
/// `ip6.arpa`), and `\$` a dollar sign.
fn substitute(template: &str, value: u64) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                chars.next();
                out.push('$');
            }
            '\\' => {
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let spec: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str(&modified(&spec, value)?);
            }
            '$' => out.push_str(&value.to_string()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `${spec}` for `value` (see [`substitute`]).
fn modified(spec: &str, value: u64) -> Result<String, String> {
    let bad = || format!("'${{{}}}' is not offset[,width[,base]]", printable(spec));
    let mut parts = spec.split(',');
    let offset = parts
        .next()
        .filter(|o| !o.is_empty())
        .map_or(Ok(0), |o| o.trim().parse::<i64>().map_err(|_| bad()))?;
    let width = parts
        .next()
        .map_or(Ok(0), |w| w.trim().parse::<usize>().map_err(|_| bad()))?;
    let base = parts.next().map_or("d", str::trim);
    if parts.next().is_some() || width > 255 {
        return Err(bad());
    }
    let v = i64::try_from(value)
        .ok()
        .and_then(|v| v.checked_add(offset))
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| format!("{value} with the offset {offset} is below zero"))?;
    Ok(match base {
        "d" => format!("{v:0width$}"),
        "o" => format!("{v:0width$o}"),
        "x" => format!("{v:0width$x}"),
        "X" => format!("{v:0width$X}"),
        "n" | "N" => {
            // Width counts the dots: (width + 1) / 2 nibbles at least.
            let nibbles = width.div_ceil(2).max(1);
            let hex = if base == "n" {
                format!("{v:0nibbles$x}")
            } else {
                format!("{v:0nibbles$X}")
            };
            let dotted: Vec<String> = hex.chars().rev().map(String::from).collect();
            dotted.join(".")
        }
        _ => return Err(bad()),
    })
}

/// TTLs outside what Cloudflare allows are brought into range rather than refused, so that
/// ordinary zone files (NS at 172800, short TTLs) import.
fn clamp_ttl(ttl: u32) -> u32 {
    if ttl == 1 { 1 } else { ttl.clamp(30, 86_400) }
}

fn parse_ttl(s: &str) -> Option<u32> {
    hickory_proto::serialize::txt::parse_ttl(s).ok()
}

fn absolute(raw: &str, origin: &str) -> Result<String, String> {
    if raw == "@" {
        if origin.is_empty() {
            return Err("'@' is the root here (after $ORIGIN .)".into());
        }
        return Ok(origin.to_owned());
    }
    // The root origin is "": a relative name under it is the name itself.
    let full = if raw.ends_with('.') || origin.is_empty() {
        raw.to_owned()
    } else {
        format!("{raw}.{origin}")
    };
    name::normalize(&full, name::NameKind::Owner, "name").map_err(|e| e.message)
}

/// Record data words → `content`, with relative names made absolute against `origin`.
fn rdata_content(kind: RecordType, words: &[Word], origin: &str) -> Result<String, String> {
    if words.is_empty() {
        return Err(format!("{kind} record without data"));
    }
    let name_at = match kind {
        RecordType::CNAME | RecordType::NS | RecordType::PTR => Some(0),
        RecordType::MX | RecordType::HTTPS | RecordType::SVCB => Some(1),
        RecordType::SRV => Some(3),
        RecordType::NAPTR => Some(5),
        _ => None,
    };
    if kind == RecordType::TXT {
        return txt_content(words);
    }
    let mut parts: Vec<String> = words.iter().map(|w| w.raw.clone()).collect();
    if let Some(i) = name_at
        && let Some(p) = parts.get_mut(i)
        && p != "."
        && !p.ends_with('.')
    {
        *p = absolute(p, origin)?;
    }
    Ok(parts.join(" "))
}

/// TXT data as Parapet stores it (see [`crate::txt`]): each word, quoted or not, is one
/// character string, read as BIND reads it.
fn txt_content(words: &[Word]) -> Result<String, String> {
    if words.first().is_some_and(|w| w.raw == "\\#") {
        return generic_txt(&words[1..]);
    }
    let strings = words
        .iter()
        .map(|w| {
            let text = if w.quoted {
                w.raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or_default()
            } else {
                // `foo"bar"`: BIND reads two strings, Knot refuses it; neither is one string.
                let mut escaped = false;
                for c in w.raw.chars() {
                    if c == '"' && !escaped {
                        return Err(format!(
                            "TXT string {} holds a quote: quote the whole string, or escape the quote (\\\")",
                            printable(&w.raw)
                        ));
                    }
                    escaped = c == '\\' && !escaped;
                }
                w.raw.as_str()
            };
            txt::decode_string(text).map_err(|m| format!("TXT string {} {m}", printable(&w.raw)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(txt::from_strings(&strings))
}

/// TXT data in RFC 3597's generic form (`\# length hex...`): the character strings the wire
/// bytes hold.
fn generic_txt(words: &[Word]) -> Result<String, String> {
    let Some((length, hex)) = words.split_first() else {
        return Err("\\# needs a length and the data in hexadecimal".into());
    };
    let length: usize = length
        .raw
        .parse()
        .map_err(|_| format!("'{}' is not a data length", printable(&length.raw)))?;
    let digits: String = hex.iter().map(|w| w.raw.as_str()).collect();
    if length > usize::from(u16::MAX)
        || length.checked_mul(2) != Some(digits.len())
        || !digits.is_ascii()
    {
        return Err(format!("\\# data is not {length} bytes of hexadecimal"));
    }
    let bytes = (0..length)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| "\\# data is not hexadecimal".to_owned())?;
    // One length byte, then that many bytes, until the end.
    let mut strings = Vec::new();
    let mut rest = bytes.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let Some(string) = tail.get(..len) else {
            return Err("\\# data is not a sequence of character strings".into());
        };
        strings.push(string.to_vec());
        rest = &tail[len..];
    }
    if strings.is_empty() {
        return Err("\\# data holds no character string".into());
    }
    Ok(txt::from_strings(&strings))
}

/// Splits a zone file into entries: handles comments, quotes and parentheses across lines.
fn split_entries(
    text: &str,
    errors: &mut Mistakes,
    mut on_entry: impl FnMut(Entry, &mut Mistakes),
) {
    let mut current: Option<Entry> = None;
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    let mut at_line_start = true;
    let mut word = String::new();
    let mut in_word = false;
    let finish_word = |cur: &mut Option<Entry>,
                       word: &mut String,
                       in_word: &mut bool,
                       line: usize,
                       leading: bool| {
        if *in_word {
            let e = cur.get_or_insert_with(|| Entry {
                line,
                inherits_owner: leading,
                words: Vec::new(),
                comment: String::new(),
            });
            let quoted = word.starts_with('"');
            e.words.push(Word {
                raw: std::mem::take(word),
                quoted,
            });
            *in_word = false;
        }
    };
    let mut leading_blank = false;
    while let Some(c) = chars.next() {
        if at_line_start && depth == 0 {
            leading_blank = c == ' ' || c == '\t';
            at_line_start = false;
        }
        match c {
            '\n' => {
                finish_word(&mut current, &mut word, &mut in_word, line, leading_blank);
                line += 1;
                at_line_start = true;
                if depth == 0
                    && let Some(e) = current.take()
                {
                    on_entry(e, errors);
                }
            }
            ';' => {
                finish_word(&mut current, &mut word, &mut in_word, line, leading_blank);
                let mut comment = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    comment.push(n);
                    chars.next();
                }
                if let Some(e) = current.as_mut() {
                    e.comment.push_str(&comment);
                }
            }
            '(' => {
                finish_word(&mut current, &mut word, &mut in_word, line, leading_blank);
                depth += 1;
            }
            ')' => {
                finish_word(&mut current, &mut word, &mut in_word, line, leading_blank);
                if depth == 0 {
                    errors.push(FieldError::new(format!("line {line}"), "')' without '('"));
                } else {
                    depth -= 1;
                }
            }
            '"' => {
                // A quoted string, or a word's quoted end (an SVCB parameter: `alpn="h3,h2"`).
                in_word = true;
                word.push('"');
                let start = line;
                let mut closed = false;
                // It ends on its line, as BIND and Knot read it: a quote left open would
                // otherwise take the records below it into the string. (The line end stays
                // for the loop above: it ends the entry.)
                while let Some(n) = chars.next_if(|&n| n != '\n') {
                    word.push(n);
                    match n {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if e == '\n' {
                                    line += 1;
                                }
                                word.push(e);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                if !closed {
                    errors.push(FieldError::new(
                        format!("line {start}"),
                        "a quoted string not closed on its line",
                    ));
                }
                finish_word(&mut current, &mut word, &mut in_word, start, leading_blank);
            }
            ' ' | '\t' | '\r' => {
                finish_word(&mut current, &mut word, &mut in_word, line, leading_blank)
            }
            '\\' => {
                in_word = true;
                word.push('\\');
                if let Some(n) = chars.next() {
                    // An escaped line end still ends a line (later mistakes name their line).
                    if n == '\n' {
                        line += 1;
                    }
                    word.push(n);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    finish_word(&mut current, &mut word, &mut in_word, line, leading_blank);
    if depth > 0 {
        errors.push(FieldError::new(
            format!("line {line}"),
            "'(' not closed before the end of the file",
        ));
    }
    if let Some(e) = current.take() {
        on_entry(e, errors);
    }
}

/// The SOA record data Parapet serves for `zone`.
pub fn soa_rdata(zone: &Zone) -> String {
    let primary = zone
        .name_servers
        .first()
        .map_or_else(|| format!("ns.{}", zone.name), Clone::clone);
    format!(
        "{primary}. hostmaster.{}. {} 10000 2400 604800 1800",
        zone.name, zone.serial
    )
}

/// Writes `zone` and its records as a BIND zone file, in Cloudflare's export layout.
pub fn export_zone_file(zone: &Zone, records: &[DnsRecord], exported_on: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ";;\n;; Domain:     {}.\n;; Exported:   {exported_on}\n;;\n;; Records marked cf_tags=cf-proxied:true are answered with the edge's\n;; addresses while the zone is active.\n;;\n$ORIGIN {}.\n\n",
        zone.name, zone.name
    ));
    out.push_str(";; SOA Record\n");
    out.push_str(&format!(
        "{}.\t3600\tIN\tSOA\t{}\n\n",
        zone.name,
        soa_rdata(zone)
    ));
    out.push_str(";; NS Records\n");
    for ns in &zone.name_servers {
        out.push_str(&format!("{}.\t86400\tIN\tNS\t{ns}.\n", zone.name));
    }
    let mut sorted: Vec<&DnsRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (a.kind, &a.name, &a.content).cmp(&(b.kind, &b.name, &b.content)));
    let mut last = None;
    for r in sorted {
        if last != Some(r.kind) {
            out.push_str(&format!("\n;; {} Records\n", r.kind));
            last = Some(r.kind);
        }
        let tag = CommentFields::write(r);
        let mark = if r.kind == RecordType::CNAME && r.name == zone.name {
            out.push_str(";; A CNAME at the apex (Parapet flattens it) cannot stand beside the SOA\n;; and NS records: a comment here, read back by Parapet's import.\n");
            APEX_CNAME_MARK
        } else {
            ""
        };
        out.push_str(&format!(
            "{mark}{}.\t{}\tIN\t{}\t{}{tag}\n",
            r.name,
            r.ttl,
            r.kind,
            escape_controls(r.rdata_text())
        ));
    }
    out
}

/// Record data with its control characters (other than tabs) and its characters outside ASCII
/// written as `\DDD` escapes, byte by byte: a record stored before control characters were
/// refused can never break its line in an export, and Knot reads nothing but ASCII.
fn escape_controls(text: String) -> String {
    let escaped = |c: char| (c.is_control() && c != '\t') || !c.is_ascii();
    if !text.chars().any(escaped) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A field-less JSON value for tests and callers that want the draft as an API body.
pub fn draft_json(d: &RecordDraft) -> Value {
    json!({"name": d.name, "type": d.kind.as_str(), "content": d.content, "ttl": d.ttl, "proxied": d.proxied, "priority": d.priority})
}

#[cfg(test)]
mod tests {
    #[test]
    fn generate_makes_a_record_per_value_as_bind_does() {
        let text = "$ORIGIN example.com.\n\
            $GENERATE 1-3 host$ 300 IN A 192.0.2.$ ; pool\n\
            $GENERATE 0-4/2 ${10,3} CNAME host-${0,2,x}.example.net.\n\
            $GENERATE 26-26 p${0,3,n} TXT \\$price-$\n\
            $GENERATE 1-2 mx$ MX \"10 mail$\"\n\
            $GENERATE 1-1 q$ TXT \"\\\"q x\\\" $\"\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid zone");
        let got: Vec<(String, String, String, u32)> = parsed
            .records
            .iter()
            .map(|r| {
                let d = &r.draft;
                let data = match d.priority {
                    Some(p) => format!("{p} {}", d.content),
                    None => d.content.clone(),
                };
                (d.name.clone(), d.kind.as_str().to_owned(), data, d.ttl)
            })
            .collect();
        let want = [
            ("host1.example.com", "A", "192.0.2.1", 300),
            ("host2.example.com", "A", "192.0.2.2", 300),
            ("host3.example.com", "A", "192.0.2.3", 300),
            ("010.example.com", "CNAME", "host-00.example.net", 300),
            ("012.example.com", "CNAME", "host-02.example.net", 300),
            ("014.example.com", "CNAME", "host-04.example.net", 300),
            ("pa.1.example.com", "TXT", "$price-26", 300),
            ("mx1.example.com", "MX", "10 mail1.example.com", 300),
            ("mx2.example.com", "MX", "10 mail2.example.com", 300),
            ("q1.example.com", "TXT", "\"q x\" \"1\"", 300),
        ];
        let want: Vec<(String, String, String, u32)> = want
            .iter()
            .map(|(n, k, d, t)| ((*n).into(), (*k).into(), (*d).into(), *t))
            .collect();
        // (Without $TTL, a record without a TTL takes the one before it's.)
        assert_eq!(got, want);
        assert_eq!(parsed.records[0].draft.comment.as_deref(), Some("pool"));
        for (bad, says) in [
            ("$GENERATE 3-1 h$ A 192.0.2.$\n", "range"),
            ("$GENERATE 1-2/0 h$ A 192.0.2.$\n", "range"),
            ("$GENERATE 0-2000000 h$ A 192.0.2.1\n", "at most"),
            ("$GENERATE 0-1 h${-1} A 192.0.2.1\n", "below zero"),
            ("$GENERATE 0-1 h${0,2,q} A 192.0.2.1\n", "offset"),
            ("$GENERATE 250-260 h$ A 192.0.2.$\n", "at 256"),
            ("$GENERATE 1-2 h$\n", "needs"),
        ] {
            let err = parse_zone_file(bad, "example.com", false).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn comments_and_tags_of_every_kind_read_back_from_an_export() {
        let zone = example_zone();
        let record = |body: Value, id: &str| {
            RecordDraft::from_json("example.com", &body)
                .expect("valid")
                .into_record(id.into(), "z", "t", "t")
        };
        let records = [
            record(
                json!({"type": "MX", "name": "@", "content": "mx.example.com", "priority": 10,
                    "comment": "primary mail"}),
                "r1",
            ),
            record(
                json!({"type": "A", "name": "www", "content": "192.0.2.1", "proxied": true,
                    "comment": "see cf_tags= below",
                    "tags": ["team:web, ops", "note:say \"hi\" = ok", "plain:v"]}),
                "r2",
            ),
            record(
                json!({"type": "TXT", "name": "t", "content": "x",
                    "comment": "mentions cf_tags=a:b"}),
                "r3",
            ),
            record(
                json!({"type": "A", "name": "v", "content": "192.0.2.2",
                    "tags": ["note:see cf_tags=x, y"]}),
                "r4",
            ),
        ];
        let text = export_zone_file(&zone, &records, "now");
        let parsed = parse_zone_file(&text, "example.com", false).expect("re-imports");
        let read: Vec<(String, Option<String>, Vec<String>, bool)> = parsed
            .records
            .iter()
            .map(|r| {
                let d = &r.draft;
                (
                    d.kind.as_str().to_owned(),
                    d.comment.clone(),
                    d.tags.clone(),
                    d.proxied,
                )
            })
            .collect();
        let mut want: Vec<(String, Option<String>, Vec<String>, bool)> = records
            .iter()
            .map(|r| {
                (
                    r.kind.as_str().to_owned(),
                    r.comment.clone(),
                    r.tags.clone(),
                    r.proxied,
                )
            })
            .collect();
        let mut read = read;
        read.sort();
        want.sort();
        assert_eq!(read, want, "{text}");
        // A tag whose name Cloudflare's list cannot carry is left out, not the record's
        // other tags or its proxied flag.
        let odd = record(
            json!({"type": "A", "name": "w", "content": "192.0.2.3", "proxied": true,
                "tags": ["web team", "env:prod"]}),
            "r5",
        );
        let text = export_zone_file(&zone, &[odd], "now");
        let parsed = parse_zone_file(&text, "example.com", false).expect("re-imports");
        let d = &parsed.records[0].draft;
        assert_eq!(
            (d.proxied, d.tags.clone()),
            (true, vec!["env:prod".to_owned()]),
            "{text}"
        );
    }

    #[test]
    fn comments_say_what_cloudflares_layout_says() {
        let read = CommentFields::read;
        assert_eq!(
            read(" a note for the reader"),
            CommentFields {
                comment: Some("a note for the reader".into()),
                ..CommentFields::default()
            },
            "a comment alone is the record's, verbatim"
        );
        let long = read(&format!("\tnotes:\t{}", "é".repeat(400)));
        let kept = long.comment.expect("a comment");
        assert!(kept.starts_with("notes: é") && kept.len() <= 500, "{kept}");
        assert_eq!(
            read(" cf-proxied:true in words").proxied,
            None,
            "not a tag without cf_tags="
        );
        assert_eq!(
            read(r#" cf_tags=t1:v1,t2:"a,b",t3:"say \"hi\" = x",t4:,t5 "#).tags,
            ["t1:v1", "t2:a,b", "t3:say \"hi\" = x", "t4:", "t5"]
        );
        assert_eq!(
            read(" web tier cf_tags=team:ops,cf-proxied:true"),
            CommentFields {
                comment: Some("web tier".into()),
                tags: vec!["team:ops".into()],
                proxied: Some(true),
            }
        );
        assert_eq!(read(" cf_tags=cf-proxied:false").proxied, Some(false));
    }

    use super::*;

    /// The zone `example.com`, as an export is made for.
    fn example_zone() -> Zone {
        Zone::new(
            "z".into(),
            "example.com".into(),
            vec!["ns1.example.net".into()],
            "account".into(),
            "now".into(),
            1,
        )
    }

    const ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1.example.com. admin.example.com. (
        2024010101 ; serial
        7200 3600 1209600 300 )
@       IN NS   ns1.other.net.
@       IN A    192.0.2.1 ; cf_tags=cf-proxied:true
        IN AAAA 2001:db8::1
www 300 IN CNAME @
mail    IN MX 10 mx1
txt     IN TXT "v=spf1 include:_spf.example.com ~all"
_sip._tcp IN SRV 10 5 5060 sip
caa     IN CAA 0 issue "letsencrypt.org"
sub.example.com. 172800 IN NS ns.sub
"#;

    #[test]
    fn real_zone_file_imports_every_type_with_relative_names() {
        let parsed = parse_zone_file(ZONE, "example.com", false).expect("valid zone");
        assert_eq!(parsed.skipped, 2);
        let got: Vec<(String, &str, String, u32, bool)> = parsed
            .records
            .iter()
            .map(|r| {
                (
                    r.draft.name.clone(),
                    r.draft.kind.as_str(),
                    r.draft.content.clone(),
                    r.draft.ttl,
                    r.draft.proxied,
                )
            })
            .collect();
        assert_eq!(
            got[0],
            ("example.com".into(), "A", "192.0.2.1".into(), 3600, true)
        );
        assert_eq!(
            got[1],
            (
                "example.com".into(),
                "AAAA",
                "2001:db8::1".into(),
                3600,
                false
            )
        );
        assert_eq!(
            got[2],
            (
                "www.example.com".into(),
                "CNAME",
                "example.com".into(),
                300,
                false
            )
        );
        assert_eq!(got[3].2, "mx1.example.com");
        assert_eq!(got[3].3, 3600, "$TTL, not the previous record's 300");
        assert!(got[4..].iter().take(3).all(|r| r.3 == 3600), "{got:?}");
        assert_eq!(got[4].2, "v=spf1 include:_spf.example.com ~all");
        assert_eq!(got[5].2, "5 5060 sip.example.com");
        assert_eq!(
            got[7],
            (
                "sub.example.com".into(),
                "NS",
                "ns.sub.example.com".into(),
                86400,
                false
            )
        );
    }

    #[test]
    fn without_ttl_directive_the_previous_records_ttl_applies() {
        let text = "a IN A 192.0.2.1\nb 300 IN A 192.0.2.2\nc IN A 192.0.2.3\n$TTL 600\nd IN A 192.0.2.4\ne 120 IN A 192.0.2.5\nf IN A 192.0.2.6\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid zone");
        let ttls: Vec<u32> = parsed.records.iter().map(|r| r.draft.ttl).collect();
        assert_eq!(ttls, [1, 300, 300, 600, 120, 600]);
    }

    #[test]
    fn no_value_can_break_its_line_in_an_export() {
        let injected = "0 issue \"a\nevil IN A 192.0.2.66\n\"";
        let body = json!({"type": "CAA", "name": "@", "content": injected});
        let err = RecordDraft::from_json("example.com", &body).expect_err("refused");
        assert!(err.to_string().contains("control characters"), "{err}");
        let body = json!({"type": "URI", "name": "_x._tcp", "data":
            {"priority": 1, "weight": 1, "target": "http://a\r\nevil IN A 192.0.2.66"}});
        assert!(RecordDraft::from_json("example.com", &body).is_err());
        // TXT holds any bytes, written as escapes.
        let body = json!({"type": "TXT", "name": "@", "content": "a\nevil IN A 192.0.2.66"});
        let txt = RecordDraft::from_json("example.com", &body).expect("valid");
        // A record stored before such values were refused is written with escapes.
        let zone = example_zone();
        let mut stored = txt
            .clone()
            .into_record("r1".into(), "example.com", "t", "t");
        stored.kind = RecordType::CAA;
        stored.content = injected.into();
        let records = [
            txt.into_record("r2".into(), "example.com", "t", "t"),
            stored,
        ];
        let text = export_zone_file(&zone, &records, "now");
        assert!(!text.lines().any(|l| l.starts_with("evil")), "{text}");
        assert!(
            text.contains("\"a\\010evil IN A 192.0.2.66\\010\""),
            "{text}"
        );
    }

    #[test]
    fn escapes_are_read_as_bind_reads_them_and_exports_are_ascii() {
        let text = "c 300 IN CAA 0 issue a\\\\b\nd 300 IN CAA 0 issue a\\\"b\ne 300 IN CAA 0 issue a\\092b\n\
                    m 300 IN CAA 0 iodef \"mailto:caf\\195\\169@example.com\"\n\
                    _u._tcp 300 IN URI 1 1 \"http://caf\\195\\169.example/\"\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid zone");
        let contents: Vec<&str> = parsed
            .records
            .iter()
            .map(|r| r.draft.content.as_str())
            .collect();
        assert_eq!(
            contents,
            [
                "0 issue \"a\\\\b\"",
                "0 issue \"a\\\"b\"",
                "0 issue \"a\\\\b\"",
                "0 iodef \"mailto:café@example.com\"",
                "1 \"http://café.example/\""
            ]
        );
        let zone = example_zone();
        let records: Vec<_> = parsed
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| r.draft.clone().into_record(format!("r{i}"), "z", "t", "t"))
            .collect();
        let exported = export_zone_file(&zone, &records, "now");
        assert!(exported.is_ascii(), "{exported}");
        assert!(exported.contains("caf\\195\\169"), "{exported}");
        let again = parse_zone_file(&exported, "example.com", false).expect("re-imports");
        let back: Vec<&str> = again
            .records
            .iter()
            .map(|r| r.draft.content.as_str())
            .collect();
        assert_eq!(back, contents);
    }

    #[test]
    fn quoted_svcb_values_are_read_and_written_back() {
        let text = "@ 300 IN HTTPS 1 . alpn=\"h3,h2\" ipv4hint=\"192.0.2.1\"\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid zone");
        let content = "1 . alpn=\"h3,h2\" ipv4hint=\"192.0.2.1\"";
        assert_eq!(parsed.records[0].draft.content, content);
        let zone = example_zone();
        let record = parsed.records[0]
            .draft
            .clone()
            .into_record("r1".into(), "z", "t", "t");
        let exported = export_zone_file(&zone, &[record], "now");
        let again = parse_zone_file(&exported, "example.com", false).expect("re-imports");
        assert_eq!(again.records[0].draft.content, content);
    }

    #[test]
    fn decimal_escapes_in_other_types_are_read_as_bind_reads_them() {
        let text = "@ IN CAA 0 iodef \"mailto:ops\\064example.com\"\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid zone");
        assert_eq!(
            parsed.records[0].draft.content,
            "0 iodef \"mailto:ops@example.com\""
        );
    }

    #[test]
    fn txt_strings_are_read_as_bind_reads_them() {
        let content = |line: &str| {
            parse_zone_file(line, "example.com", false)
                .map(|p| p.records[0].draft.content.clone())
                .map_err(|e| e.to_string())
        };
        assert_eq!(content("x IN TXT \" lead \"").as_deref(), Ok(" lead "));
        assert_eq!(content("x IN TXT hello").as_deref(), Ok("hello"));
        assert_eq!(content("x IN TXT \"\\065\\\"\"").as_deref(), Ok("A\""));
        assert_eq!(content("x IN TXT \"a\" b").as_deref(), Ok("\"a\" \"b\""));
        assert_eq!(content("x IN TXT a\\\"b").as_deref(), Ok("a\"b"));
        assert_eq!(content("x IN TXT \"\\200\"").as_deref(), Ok("\"\\200\""));
        let split = format!("x IN TXT \"{}\" \"{}\"", "a".repeat(255), "b".repeat(10));
        assert_eq!(
            content(&split),
            Ok(format!("{}{}", "a".repeat(255), "b".repeat(10)))
        );
        for bad in [
            "x IN TXT \"\\999\"".to_owned(),
            "x IN TXT \"\\25\"".to_owned(),
            format!("x IN TXT \"{}\"", "a".repeat(300)),
            format!("x IN TXT {}", "a".repeat(256)),
            "x IN TXT foo\"bar\"".to_owned(),
        ] {
            let err = content(&bad).expect_err(&bad);
            assert!(err.contains("line 1"), "{err}");
        }
    }

    #[test]
    fn mistakes_after_an_escaped_line_end_name_their_line() {
        let err = parse_zone_file("a TXT x\\\ny\nb A 999.0.0.1\n", "example.com", false)
            .expect_err("invalid");
        let lines: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(lines, ["line 3"]);
    }

    #[test]
    fn every_bad_line_is_reported() {
        let text = "$INCLUDE /etc/passwd\nwww IN A 999.1.1.1\nok IN A 192.0.2.1\nx IN FOO bar\nother.org. IN A 192.0.2.2\n";
        let err = parse_zone_file(text, "example.com", false).expect_err("invalid");
        let lines: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(lines, ["line 1", "line 2", "line 4", "line 5"]);
    }

    #[test]
    fn a_file_of_junk_lists_a_hundred_mistakes_and_counts_the_rest() {
        let err =
            parse_zone_file(&")".repeat(1_000_000), "example.com", false).expect_err("invalid");
        let listed = err.errors();
        assert_eq!(listed.len(), MAX_ERRORS + 1);
        assert_eq!(
            listed[MAX_ERRORS].message,
            format!("{} more mistakes not listed", 1_000_000 - MAX_ERRORS)
        );
        let err =
            parse_zone_file(&"x\n".repeat(10_000), "example.com", false).expect_err("invalid");
        assert_eq!(err.errors().len(), MAX_ERRORS + 1);
    }

    #[test]
    fn generic_txt_data_is_read_as_its_strings() {
        let content = |line: &str| {
            parse_zone_file(line, "example.com", false).map(|p| p.records[0].draft.content.clone())
        };
        let plain = content("x TXT \"hello\" \"world\"\n").expect("plain");
        assert_eq!(
            content("x TXT \\# 12 0568656c6c6f 05776f726c64\n").expect("generic"),
            plain
        );
        for bad in [
            "x TXT \\# 6 0568656c6c\n",
            "x TXT \\# 6 0968656c6c6f\n",
            "x TXT \\# 1 zz\n",
            "x TXT \\# 0\n",
            "x TXT \\#\n",
            "x TXT \\# 9223372036854775808\n",
            "x TXT \\# 9223372036854775809 00\n",
            "x TXT \\# 65536 00\n",
        ] {
            assert!(content(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_bind_writes_start_at_the_root() {
        // As BIND writes secondary and dynamic zones, and named-compilezone its output.
        let text = "\u{feff}$ORIGIN .\n$TTL 86400 ; 1 day\nexample.com IN SOA ns1.example.com. h.example.com. 1 2 3 4 5\n\t\t\tNS ns1.example.com.\n\t\t\tMX 10 mail.example.com.\n$ORIGIN example.com.\nwww A 192.0.2.1\n$ORIGIN .\nftp.example.com A 192.0.2.2\n";
        let parsed = parse_zone_file(text, "example.com", false).expect("valid");
        let got: Vec<(&str, &str)> = parsed
            .records
            .iter()
            .map(|r| (r.draft.name.as_str(), r.draft.content.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("example.com", "mail.example.com"),
                ("www.example.com", "192.0.2.1"),
                ("ftp.example.com", "192.0.2.2"),
            ]
        );
        assert_eq!(parsed.skipped, 2, "SOA and apex NS");
        // Owners stay inside the zone whatever the origin.
        let err = parse_zone_file(
            "$ORIGIN .\nother.org A 192.0.2.1\n@ A 192.0.2.1\n",
            "example.com",
            false,
        )
        .expect_err("outside");
        assert_eq!(err.errors().len(), 2);
    }

    #[test]
    fn unbalanced_parentheses_and_quotes_are_errors() {
        assert!(parse_zone_file("a IN TXT \"open\n", "example.com", false).is_err());
        assert!(parse_zone_file("a IN A ( 192.0.2.1\n", "example.com", false).is_err());
    }

    #[test]
    fn a_quote_left_open_does_not_take_the_records_below_into_its_string() {
        let file = "a TXT \"missing close\nb A 192.0.2.1\nc CNAME x\"\nd A 192.0.2.2\n";
        let err = parse_zone_file(file, "example.com", false).expect_err("refused");
        assert!(
            err.to_string()
                .contains("line 1: a quoted string not closed on its line"),
            "{err}"
        );
        // Within its line a quoted string holds spaces and parentheses; an escaped line end
        // continues it.
        let fine = "a TXT \"x ( y\" \"two\\\nlines\"\n";
        let parsed = parse_zone_file(fine, "example.com", false).expect("parsed");
        assert_eq!(parsed.records.len(), 1);
    }
}
