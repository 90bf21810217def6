//! Fuzz target: open a Cairn store whose files are built from the input, then use it (see
//! `cairn_fuzz::open_store`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::open_store::run(data));
