//! A crash recovery's replay of its journal fed arbitrary bytes after a
//! valid header: reading, the `Fatal` skips and the ring bookkeeping end
//! with a replayed state or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored_lite::engine::{Config, Engine};
use xenstored_lite::replay::format;
use xenstored_lite::shell::Replayed;

fuzz_target!(|data: &[u8]| {
    let mut file = format::header().to_vec();
    file.extend_from_slice(data);
    let _ = Replayed::from_bytes(Engine::new(Config::default()), &file);
});
