//! Any datagram through the fast and full paths: no panic, at most one
//! answer, the fast path's bytes equal the full path's (see
//! dns_sidecar::testing::fuzz).
#![no_main]

use std::sync::OnceLock;

use dns_sidecar::testing::fuzz::Target;
use libfuzzer_sys::fuzz_target;

static TARGET: OnceLock<Target> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    TARGET.get_or_init(Target::new).datagram(data);
});
