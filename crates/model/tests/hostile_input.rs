//! Hostile input never panics the parsers: zone files and API record bodies of any shape get
//! records or errors.

use parapet_model::RecordDraft;
use parapet_model::zonefile::parse_zone_file;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_zone_file_text_parses_or_lists_errors(text in "[ -~\\n\\t();\"\\\\$@*.]{0,400}") {
        if let Err(e) = parse_zone_file(&text, "example.test", false) {
            prop_assert!(!e.errors().is_empty());
            prop_assert!(e.errors().iter().all(|f| f.field.starts_with("line ") || f.field == "file"));
        }
    }

    #[test]
    fn zone_file_lines_of_real_tokens_never_panic(
        lines in proptest::collection::vec(
            proptest::collection::vec(prop::sample::select(vec![
                "@", "www", "*.wild", "IN", "CH", "300", "1h", "A", "AAAA", "TXT", "MX", "SRV", "CAA", "LOC", "DS", "URI", "SVCB",
                "192.0.2.1", "::1", "10", "\"quoted text\"", "(", ")", ";comment", "$ORIGIN", "$TTL", "$INCLUDE", "example.test.", "host",
            ]), 0..8),
            0..20,
        )
    ) {
        let text: String = lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n");
        let _ = parse_zone_file(&text, "example.test", true);
    }

    #[test]
    fn any_record_body_is_accepted_or_rejected_with_fields(
        kind in prop::sample::select(vec!["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR", "HTTPS", "SVCB", "TLSA", "SSHFP", "NAPTR", "DS", "CERT", "LOC", "URI", "BOGUS"]),
        name in "[a-z0-9_.*@-]{0,40}",
        content in "[ -~]{0,120}",
        ttl in prop::option::of(0u64..100_000),
        proxied in prop::option::of(any::<bool>()),
        priority in prop::option::of(0u64..70_000),
    ) {
        let body = serde_json::json!({"type": kind, "name": name, "content": content, "ttl": ttl, "proxied": proxied, "priority": priority});
        match RecordDraft::from_json("example.test", &body) {
            Ok(d) => prop_assert!(d.name == "example.test" || d.name.ends_with(".example.test")),
            Err(e) => prop_assert!(!e.errors().is_empty()),
        }
    }
}
