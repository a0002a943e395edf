//! The migration-stream parser fed arbitrary bytes: it never panics, and any
//! stream it accepts writes back to bytes that parse to the same value and
//! write to the same bytes again; then the accepted stream goes through the
//! conversion a live update's restore (and its dry run) does into engine
//! state, which must refuse or accept it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored_lite::migration;

fuzz_target!(|data: &[u8]| {
    let Ok(stream) = migration::parse(data) else {
        return;
    };
    let bytes = migration::write(&stream).expect("a parsed stream always writes");
    let again = migration::parse(&bytes).expect("written bytes always parse");
    assert_eq!(stream, again, "write then parse changed the value");
    let bytes_again = migration::write(&again).expect("a parsed stream always writes");
    assert_eq!(bytes, bytes_again, "writing is not deterministic");
    let _ = xenstored_lite::shell::check_stream(Default::default(), data, &stream);
});
