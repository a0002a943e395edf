//! The xs_wire decoder and the payload parsers behind it, fed arbitrary bytes
//! in arbitrary chunks: no panic, chunking never changes the outcome, and
//! every decoded message re-encodes to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenring::codec::{split_args, split_first_arg, Decoder};
use xenring::perms::parse_perm_list;
use xenring::{path::validate_path, WatchEvent, XsErrno};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;

    let mut whole = Vec::new();
    let whole_result = Decoder::new().decode_all(body, &mut whole);

    let mut chunked = Vec::new();
    let mut dec = Decoder::new();
    let mut chunked_ok = true;
    for piece in body.chunks(chunk) {
        if dec.decode_all(piece, &mut chunked).is_err() {
            chunked_ok = false;
            break;
        }
        // Hand the partial message over as live update does.
        let mut restored = Decoder::new();
        let mut none = Vec::new();
        restored
            .decode_all(&dec.partial(), &mut none)
            .expect("a partial message never fails to restore");
        assert!(none.is_empty());
        dec = restored;
    }
    assert_eq!(whole, chunked);
    assert_eq!(whole_result.is_ok(), chunked_ok);

    let mut offset = 0;
    for msg in &whole {
        assert!(msg.payload.len() <= 4096);
        assert_eq!(msg.header.len as usize, msg.payload.len());
        let bytes = msg.to_bytes();
        assert_eq!(&body[offset..offset + bytes.len()], &bytes[..]);
        offset += bytes.len();

        // The payload parsers a daemon runs on guest input.
        let args: Vec<&[u8]> = split_args(&msg.payload).collect();
        if let Some(first) = args.first() {
            let _ = validate_path(first);
        }
        let _ = split_first_arg(&msg.payload);
        if args.len() > 1 {
            let _ = parse_perm_list(&msg.payload[args[0].len() + 1..]);
        }
        let _ = XsErrno::from_wire(&msg.payload);
        let _ = WatchEvent::parse(&msg.payload);
        let _ = msg.msg_type();
    }
});
