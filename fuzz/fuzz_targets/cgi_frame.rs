#![no_main]

// See fuzz/README.md and mod_procd::fuzz_api::cgi_frame for the oracle.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mod_procd::fuzz_api::cgi_frame(data));
