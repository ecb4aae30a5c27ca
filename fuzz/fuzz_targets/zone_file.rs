//! Fuzzes the BIND zone-file reader: any text gives records or a list of line errors.
//! Run with `cargo +nightly fuzz run zone_file` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parapet_model::zonefile::parse_zone_file(text, "example.test", false);
    }
});
