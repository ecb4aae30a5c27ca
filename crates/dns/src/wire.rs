//! Record data → wire format, for the types the wire library cannot encode itself (DS, LOC,
//! URI), and TXT strings. Input is the model's canonical content, already validated.

use parapet_model::DnsRecord;

fn words(content: &str) -> Vec<&str> {
    content.split_whitespace().collect()
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad hex".to_owned())
        })
        .collect()
}

fn num<T: std::str::FromStr>(s: Option<&&str>) -> Result<T, String> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad number".to_owned())
}

/// A 16-bit field, two 8-bit ones, then the rest of the words as `decode` reads them: DS's
/// and DNSKEY's layout.
fn u16_u8_u8_then(
    content: &str,
    decode: fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let w = words(content);
    let mut out = Vec::new();
    out.extend_from_slice(&num::<u16>(w.first())?.to_be_bytes());
    out.push(num::<u8>(w.get(1))?);
    out.push(num::<u8>(w.get(2))?);
    out.extend(decode(&w.get(3..).ok_or("missing data")?.concat())?);
    Ok(out)
}

/// DS: key tag, algorithm, digest type, digest (RFC 4034 §5.1).
pub fn ds(content: &str) -> Result<Vec<u8>, String> {
    u16_u8_u8_then(content, hex)
}

/// Base64 text (words joined) as bytes: an OPENPGPKEY's key (RFC 7929).
pub fn base64(text: &str) -> Result<Vec<u8>, String> {
    let joined: String = text.split_whitespace().collect();
    data_encoding::BASE64
        .decode(joined.as_bytes())
        .map_err(|_| "bad base64".to_owned())
}

/// DNSKEY: flags, protocol, algorithm, public key (RFC 4034 §2.1).
pub fn dnskey(content: &str) -> Result<Vec<u8>, String> {
    u16_u8_u8_then(content, base64)
}

/// SMIMEA: usage, selector, matching type, certificate data (RFC 8162, as TLSA).
pub fn smimea(content: &str) -> Result<Vec<u8>, String> {
    let w = words(content);
    let mut out = vec![
        num::<u8>(w.first())?,
        num::<u8>(w.get(1))?,
        num::<u8>(w.get(2))?,
    ];
    out.extend(hex(&w.get(3..).ok_or("missing data")?.concat())?);
    Ok(out)
}

/// URI: priority, weight, target (RFC 7553).
pub fn uri(record: &DnsRecord) -> Result<Vec<u8>, String> {
    let (weight, target) = record.content.split_once(' ').ok_or("bad URI content")?;
    // One quote off each end: a target may end in an escaped one (`"https://x/\"q\""`).
    let target = target.trim();
    let target = target
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(target);
    let mut out = Vec::new();
    out.extend_from_slice(&record.priority.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(
        &weight
            .parse::<u16>()
            .map_err(|_| "bad weight")?
            .to_be_bytes(),
    );
    // The bytes its escapes stand for (`\DDD`, `\"`); content checked when stored.
    out.extend(
        parapet_model::txt::decode_bytes(target).unwrap_or_else(|_| target.as_bytes().to_vec()),
    );
    Ok(out)
}

/// A size or precision in centimetres as RFC 1876's mantissa/exponent byte.
fn loc_precision(meters: f64) -> u8 {
    let mut cm = (meters * 100.0).round() as u64;
    let mut exponent = 0u8;
    while cm >= 10 && exponent < 9 {
        cm /= 10;
        exponent += 1;
    }
    ((cm.min(9) as u8) << 4) | exponent
}

/// LOC (RFC 1876) from `d m s N|S d m s E|W altm sizem hpm vpm`.
pub fn loc(content: &str) -> Result<Vec<u8>, String> {
    let w = words(content);
    if w.len() != 12 {
        return Err("LOC needs 12 fields".into());
    }
    let meters = |s: &str| {
        s.trim_end_matches('m')
            .parse::<f64>()
            .map_err(|_| "bad meters".to_owned())
    };
    let angle = |d: &str, m: &str, s: &str, dir: &str, negative: &str| -> Result<u32, String> {
        let d: f64 = d.parse().map_err(|_| "bad degrees")?;
        let m: f64 = m.parse().map_err(|_| "bad minutes")?;
        let s: f64 = s.parse().map_err(|_| "bad seconds")?;
        let thousandths = ((d * 3600.0 + m * 60.0 + s) * 1000.0).round() as i64;
        let signed = if dir == negative {
            -thousandths
        } else {
            thousandths
        };
        u32::try_from((1i64 << 31) + signed).map_err(|_| "angle out of range".to_owned())
    };
    let mut out = vec![0u8];
    out.push(loc_precision(meters(w[9])?));
    out.push(loc_precision(meters(w[10])?));
    out.push(loc_precision(meters(w[11])?));
    out.extend_from_slice(&angle(w[0], w[1], w[2], w[3], "S")?.to_be_bytes());
    out.extend_from_slice(&angle(w[4], w[5], w[6], w[7], "W")?.to_be_bytes());
    let altitude = (meters(w[8])? * 100.0).round() as i64 + 10_000_000;
    out.extend_from_slice(
        &u32::try_from(altitude)
            .map_err(|_| "altitude out of range")?
            .to_be_bytes(),
    );
    Ok(out)
}

/// TXT content → its character strings, as the model reads it (and an export writes it).
pub fn txt_strings(content: &str) -> Vec<Vec<u8>> {
    parapet_model::txt::strings(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_plain_text_is_chunked_and_quoted_form_decoded() {
        assert_eq!(txt_strings("hello"), vec![b"hello".to_vec()]);
        assert_eq!(txt_strings(&"a".repeat(300)).len(), 2);
        assert_eq!(
            txt_strings("\"a b\" \"c\\\"d\" \"\\065\""),
            vec![b"a b".to_vec(), b"c\"d".to_vec(), b"A".to_vec()]
        );
    }

    #[test]
    fn a_uri_target_is_sent_as_the_bytes_its_escapes_stand_for() {
        let record = |content: &str| {
            let body = serde_json::json!({"type": "URI", "name": "_u._tcp", "content": content,
                "priority": 1});
            parapet_model::RecordDraft::from_json("example.com", &body)
                .expect("record")
                .into_record("r".into(), "z", "t", "t")
        };
        let target = |content: &str| uri(&record(content)).expect("uri")[4..].to_vec();
        assert_eq!(target("1 \"http://a\\\"b/\""), b"http://a\"b/");
        // An escaped quote at either end is the target's own.
        assert_eq!(target("1 \"https://x/\\\"q\\\"\""), b"https://x/\"q\"");
        assert_eq!(target("1 \"\\\"q\""), b"\"q");
        assert_eq!(target("1 \"http://a\\\\b/\""), b"http://a\\b/");
        assert_eq!(
            target("1 \"http://caf\\195\\169/\""),
            "http://café/".as_bytes()
        );
        assert_eq!(target("1 \"http://café/\""), "http://café/".as_bytes());
    }

    #[test]
    fn loc_encodes_rfc1876_example() {
        // RFC 1876 example: 42 21 54 N 71 06 18 W -24m 30m (defaults 10000m 10m).
        let w = loc("42 21 54.000 N 71 6 18.000 W -24.00m 30.00m 10000.00m 10.00m").expect("loc");
        assert_eq!(&w[..4], &[0, 0x33, 0x16, 0x13]);
        assert_eq!(
            u32::from_be_bytes([w[4], w[5], w[6], w[7]]),
            (1u32 << 31) + 152_514_000
        );
        assert_eq!(
            u32::from_be_bytes([w[12], w[13], w[14], w[15]]),
            10_000_000 - 2400
        );
    }

    #[test]
    fn ds_encodes_fields_and_digest() {
        assert_eq!(
            ds("2371 13 2 1f98").expect("ds"),
            vec![0x09, 0x43, 13, 2, 0x1f, 0x98]
        );
    }
}
