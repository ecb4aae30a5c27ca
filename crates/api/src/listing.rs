//! Query parameters: filters, ordering and paging, as Cloudflare reads them.

use serde_json::Value;

use crate::envelope::{ApiError, ResultInfo, ok_page};

/// The decoded query string.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `key` (a filter may be repeated).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(0) | Err(_) => Err(ApiError::bad(
                    1004,
                    format!("{key} must be a positive whole number"),
                )),
                Ok(n) => Ok(n.min(max)),
            },
        }
    }

    /// `page` (from 1) and `per_page` (clamped to `max`).
    pub fn paging(
        &self,
        default_per_page: usize,
        max_per_page: usize,
    ) -> Result<(usize, usize), ApiError> {
        Ok((
            self.number("page", 1, usize::MAX / 2)?,
            self.number("per_page", default_per_page, max_per_page)?,
        ))
    }

    /// `match=all|any` (default all).
    pub fn match_any(&self) -> Result<bool, ApiError> {
        match self.get("match") {
            None | Some("all") => Ok(false),
            Some("any") => Ok(true),
            Some(other) => Err(ApiError::bad(
                1004,
                format!("match must be 'all' or 'any', not '{}'", short(other)),
            )),
        }
    }

    /// `direction=asc|desc` (default asc): true for descending.
    pub fn descending(&self) -> Result<bool, ApiError> {
        match self.get("direction") {
            None | Some("asc") => Ok(false),
            Some("desc") => Ok(true),
            Some(other) => Err(ApiError::bad(
                1004,
                format!("direction must be 'asc' or 'desc', not '{}'", short(other)),
            )),
        }
    }

    /// Parses a boolean parameter.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad(
                1004,
                format!("{key} must be true or false, not '{}'", short(other)),
            )),
        }
    }
}

pub fn short(s: &str) -> String {
    parapet_model::name::printable(s)
}

/// A text filter: `exact`, `contains`, `startswith`, `endswith`; case-insensitive like
/// Cloudflare's name filters.
#[derive(Debug, Clone)]
pub enum TextFilter {
    Exact(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
}

impl TextFilter {
    pub fn matches(&self, value: &str) -> bool {
        let v = value.to_ascii_lowercase();
        match self {
            Self::Exact(s) => v == *s,
            Self::Contains(s) => v.contains(s.as_str()),
            Self::StartsWith(s) => v.starts_with(s.as_str()),
            Self::EndsWith(s) => v.ends_with(s.as_str()),
        }
    }

    /// The filters on `field` in `params`: `field`, `field.exact`, `field.contains`, ...
    pub fn from_params(
        params: &Params,
        field: &str,
        normalize: impl Fn(&str) -> String,
    ) -> Vec<Self> {
        let mut out = Vec::new();
        for (suffix, make) in [
            ("", Self::Exact as fn(String) -> Self),
            (".exact", Self::Exact),
            (".contains", Self::Contains),
            (".startswith", Self::StartsWith),
            (".endswith", Self::EndsWith),
        ] {
            if let Some(v) = params.get(&format!("{field}{suffix}")) {
                let v = if matches!(suffix, "" | ".exact") {
                    normalize(v)
                } else {
                    v.to_ascii_lowercase()
                };
                out.push(make(v));
            }
        }
        out
    }
}

/// One page of `items`, with Cloudflare's exact `result_info`. A page past the end is empty.
pub fn page_response(items: Vec<Value>, page: usize, per_page: usize) -> axum::response::Response {
    page_of(&items, page, per_page, Value::clone)
}

/// Page `page` of `items` (`per_page` each), with only that page's items rendered by `render`:
/// a listing of a million records renders a hundred.
pub fn page_of<T>(
    items: &[T],
    page: usize,
    per_page: usize,
    render: impl Fn(&T) -> Value,
) -> axum::response::Response {
    let total_count = items.len();
    let total_pages = total_count.div_ceil(per_page);
    let start = (page - 1).saturating_mul(per_page);
    let result: Vec<Value> = items
        .iter()
        .skip(start)
        .take(per_page)
        .map(render)
        .collect();
    let info = ResultInfo {
        page,
        per_page,
        count: result.len(),
        total_count,
        total_pages,
    };
    ok_page(result, info)
}

/// A filter on a record's tags (`name:value`), as Cloudflare's list takes them: `tag=name` or
/// `tag=name:value`, `tag.present=name`, `tag.absent=name`, and `tag.exact` / `.contains` /
/// `.startswith` / `.endswith` with `name:value` (on the value). Names and values compare
/// without case.
#[derive(Debug, Clone)]
pub enum TagFilter {
    Is(String, Option<String>),
    Present(String),
    Absent(String),
    Value(String, TextFilter),
}

impl TagFilter {
    /// Every tag filter in `params`.
    pub fn from_params(params: &Params) -> Vec<Self> {
        let split = |v: &str| {
            let v = v.to_ascii_lowercase();
            match v.split_once(':') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (v, None),
            }
        };
        let mut out = Vec::new();
        for v in params.all("tag") {
            let (name, value) = split(v);
            out.push(Self::Is(name, value));
        }
        for v in params.all("tag.present") {
            out.push(Self::Present(split(v).0));
        }
        for v in params.all("tag.absent") {
            out.push(Self::Absent(split(v).0));
        }
        for (suffix, make) in [
            (".exact", TextFilter::Exact as fn(String) -> TextFilter),
            (".contains", TextFilter::Contains),
            (".startswith", TextFilter::StartsWith),
            (".endswith", TextFilter::EndsWith),
        ] {
            let key = format!("tag{suffix}");
            for v in params.all(&key) {
                let (name, value) = split(v);
                out.push(Self::Value(name, make(value.unwrap_or_default())));
            }
        }
        out
    }

    /// Whether `tags` (each `name:value`, or a bare name) pass.
    pub fn matches(&self, tags: &[String]) -> bool {
        let of = |tag: &String| {
            let tag = tag.to_ascii_lowercase();
            match tag.split_once(':') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (tag, String::new()),
            }
        };
        let mut parsed = tags.iter().map(of);
        match self {
            Self::Is(name, None) | Self::Present(name) => parsed.any(|(n, _)| n == *name),
            Self::Is(name, Some(value)) => parsed.any(|(n, v)| n == *name && v == *value),
            Self::Absent(name) => !parsed.any(|(n, _)| n == *name),
            Self::Value(name, text) => parsed.any(|(n, v)| n == *name && text.matches(&v)),
        }
    }
}
