//! Fuzz target: every decoder of Cairn's on-disk format on arbitrary bytes (see
//! `cairn_fuzz::decode`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::decode::run(data));
