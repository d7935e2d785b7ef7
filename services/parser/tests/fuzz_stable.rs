//! A short, deterministic fuzz run on stable Rust (the cargo-fuzz target in `fuzz/` needs
//! nightly): the fixture corpus is mutated with a seeded RNG — byte flips, truncations, header
//! duplication, boundary corruption, random and bogus charsets, broken encoded words, splices
//! of two fixtures and deep multipart nesting — and every mutant must come back from
//! `parse_message` as `Ok` or `Err` (a panic inside mail-parser is caught and reported as
//! `mime-panic`, so it counts as `Err`). Every record that comes back must also fit the Avro
//! schema of `parsed`, or the processor would fail to encode it.
//!
//! `FUZZ_ITERATIONS` and `FUZZ_SEED` override the defaults (4,000 iterations, seed 0x5eed).

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::Schema;
use mailstream_parser::{ParseContext, parse_message};
use mailstream_runtime::AvroRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHARSETS: &[&str] = &[
    "utf-8",
    "iso-8859-1",
    "windows-1252",
    "iso-2022-jp",
    "shift_jis",
    "euc-kr",
    "gb18030",
    "koi8-r",
    "utf-16",
    "utf-7",
    "x-bogus",
    "",
    "\"unterminated",
    "utf-8'en'",
];

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let list = |dir: &Path| -> Vec<_> {
        std::fs::read_dir(dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".json"))
            .collect()
    };
    // The bounce fixtures (a subfolder) are mutated too.
    let mut files = list(&dir);
    files.extend(list(&dir.join("bounces")));
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w.eq_ignore_ascii_case(needle))
        .map(|(i, _)| i)
        .collect()
}

fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>], input: &[u8]) -> (Vec<u8>, &'static str) {
    let mut data = input.to_vec();
    let len = data.len().max(1);
    match rng.random_range(0..9) {
        0 => {
            for _ in 0..rng.random_range(1..16) {
                let i = rng.random_range(0..len);
                if let Some(b) = data.get_mut(i) {
                    *b = rng.random();
                }
            }
            (data, "byte-flip")
        }
        1 => {
            data.truncate(rng.random_range(0..len));
            (data, "truncate")
        }
        2 => {
            // Duplicate a header line (many times, sometimes).
            let end = find_all(&data, b"\n\n")
                .first()
                .or(find_all(&data, b"\r\n\r\n").first())
                .copied()
                .unwrap_or(data.len());
            let starts: Vec<usize> = std::iter::once(0)
                .chain(find_all(&data[..end], b"\n").into_iter().map(|i| i + 1))
                .collect();
            let s = starts[rng.random_range(0..starts.len())];
            let e = data[s..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(data.len(), |p| s + p + 1);
            let line = data[s..e].to_vec();
            for _ in 0..rng.random_range(1..50) {
                data.splice(s..s, line.iter().copied());
            }
            (data, "header-dup")
        }
        3 => {
            // Corrupt a boundary delimiter.
            let hits = find_all(&data, b"\n--");
            if let Some(&i) = hits.get(rng.random_range(0..hits.len().max(1))) {
                match rng.random_range(0..4) {
                    0 => {
                        data.drain(i + 1..(i + 6).min(data.len()));
                    }
                    1 => data
                        .splice(i + 1..i + 1, b"--x".iter().copied())
                        .for_each(drop),
                    2 => data.truncate(i + 3),
                    _ => data
                        .splice(i + 3..i + 3, b"\r\n--\r\n".iter().copied())
                        .for_each(drop),
                }
            }
            (data, "boundary")
        }
        4 => {
            // Random charsets.
            for i in find_all(&data, b"charset=").into_iter().rev() {
                let start = i + 8;
                let end = data[start..]
                    .iter()
                    .position(|b| matches!(b, b';' | b'\r' | b'\n' | b' '))
                    .map_or(data.len(), |p| start + p);
                let cs = CHARSETS[rng.random_range(0..CHARSETS.len())];
                data.splice(start..end, cs.bytes());
            }
            (data, "charset")
        }
        5 => {
            // A broken encoded word in the subject or a display name.
            let cs = CHARSETS[rng.random_range(0..CHARSETS.len())];
            let enc = ["B", "Q", "X", ""][rng.random_range(0..4)];
            let junk: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let mut word = format!("=?{cs}?{enc}?").into_bytes();
            word.extend(junk);
            if rng.random_bool(0.5) {
                word.extend(b"?=");
            }
            let at = find_all(&data, b"subject:")
                .first()
                .or(find_all(&data, b"from:").first())
                .map_or(0, |i| i + 8);
            data.splice(at.min(data.len())..at.min(data.len()), word);
            (data, "encoded-word")
        }
        6 => {
            // Splice the head of one fixture onto the tail of another.
            let other = &corpus[rng.random_range(0..corpus.len())];
            let cut_a = rng.random_range(0..len);
            let cut_b = rng.random_range(0..other.len().max(1));
            data.truncate(cut_a);
            data.extend_from_slice(other.get(cut_b..).unwrap_or_default());
            (data, "splice")
        }
        7 => {
            // Deep multipart nesting around the message.
            let depth = rng.random_range(1..200);
            let mut out = Vec::new();
            for d in 0..depth {
                out.extend(
                    format!("Content-Type: multipart/mixed; boundary=\"n{d}\"\r\n\r\n--n{d}\r\n")
                        .bytes(),
                );
            }
            out.extend_from_slice(&data);
            for d in (0..depth).rev() {
                if rng.random_bool(0.7) {
                    out.extend(format!("\r\n--n{d}--\r\n").bytes());
                }
            }
            (out, "nesting")
        }
        _ => {
            // Random bytes inserted at random places (NULs, 8-bit, CR without LF).
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..=data.len());
                let chunk: Vec<u8> = match rng.random_range(0..3) {
                    0 => vec![0; rng.random_range(1..8)],
                    1 => vec![b'\r'; rng.random_range(1..8)],
                    _ => (0..rng.random_range(1..32)).map(|_| rng.random()).collect(),
                };
                data.splice(i..i, chunk);
            }
            (data, "insert")
        }
    }
}

#[test]
fn mutated_corpus_never_panics_out_of_parse_message() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let corpus = corpus();
    assert!(!corpus.is_empty());
    let schema = Schema::parse_str(
        mailstream_runtime::catalog::schema("parsed.avsc").expect("schema in build"),
    )
    .expect("schema parses");
    let ctx = ParseContext {
        ingest_id: "fuzz".into(),
        received_at: 0,
        ..ParseContext::default()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let (mut input, kind) = mutate(&mut rng, &corpus, base);
        // Stack a second mutation on a third of the inputs.
        if rng.random_bool(0.33) {
            input = mutate(&mut rng, &corpus, &input).0;
        }
        let outcome = match parse_message(&input, &ctx) {
            Ok(record) => {
                let value = record
                    .into_avro()
                    .expect("record maps to Avro")
                    .resolve(&schema)
                    .unwrap_or_else(|e| panic!("{kind} mutant does not fit parsed.avsc: {e}"));
                assert!(value.validate(&schema));
                "ok".to_string()
            }
            Err(failure) => format!("err:{}", failure.class),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    println!(
        "fuzz (seed {seed:#x}, {iterations} iterations, {:.1?}): {outcomes:?}",
        started.elapsed()
    );
    assert_eq!(outcomes.values().sum::<usize>(), iterations);
}
