//! Any text as a config file: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dns_sidecar::testing::fuzz::config(data);
});
