//! Shared pieces of the benchmarks: process CPU and memory from `/proc` ([`procstat`]) and the
//! pass-through chain baseline ([`chain`]), the end-to-end figures and their tables
//! ([`figures`]).
//! Corpus generation, the SMTP client and the running pipeline are in `mailstream-tests`
//! (`corpus`, `smtp`, `pipeline`), shared with the chaos suite.

pub mod chain;
pub mod figures;
pub mod procstat;
