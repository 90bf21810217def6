//! Cairn's fuzzing harnesses: the logic of each fuzz target lives here, so that the targets in
//! `fuzz_targets/` stay one line long and `cargo test` can replay the seed corpus without
//! libFuzzer.

pub mod decode;
pub mod input;
pub mod kill;
pub mod open_store;
