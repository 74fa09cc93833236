#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmos_fuzz::upload_streams(data));
