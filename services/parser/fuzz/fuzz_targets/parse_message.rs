//! Fuzzes `parse_message`: any input must come back as `Ok` or `Err`.
//!
//! By default a panic inside mail-parser that `parse_message` catches (class `mime-panic`) is
//! fine, and a crash is a panic that escaped it (or an abort, a stack overflow, ...).
//! With `FUZZ_STRICT=1` libFuzzer's abort-on-any-panic hook stays in place, so the fuzzer also
//! finds the inputs on which mail-parser itself panics.
//!
//! `cargo +nightly fuzz run -s none parse_message fuzz/corpus/parse_message tests/fixtures`
//! (run from `services/parser`; `-s none` because librdkafka, linked through the runtime,
//! does not build with the address sanitizer's flags).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstream_parser::{ParseContext, parse_message};

fuzz_target!(
    init: {
        if std::env::var_os("FUZZ_STRICT").is_none() {
            // Drop libFuzzer's abort-on-panic hook: caught panics are `mime-panic` results.
            // A panic that escapes `parse_message` still aborts (libfuzzer-sys catches it).
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        let ctx = ParseContext::default();
        if let Ok(record) = parse_message(data, &ctx) {
            // A record always has a message id (the header's or a generated one).
            assert!(!record.message_id.is_empty());
        }
    }
);
