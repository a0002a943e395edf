//! The recording reader and the replay player fed arbitrary bytes after a
//! valid header: reading never panics, and replaying whatever parses (in
//! both modes) ends with a summary or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored_lite::replay::{format, player};

fuzz_target!(|data: &[u8]| {
    let mut file = format::header().to_vec();
    file.extend_from_slice(data);
    if let Ok(mut reader) = format::Reader::new(&file) {
        while let Ok(format::Next::Event(_)) = reader.next_event() {}
    }
    for verify in [false, true] {
        let opts = player::Options {
            verify,
            ..Default::default()
        };
        let _ = player::replay_bytes(&file, &opts);
    }
});
