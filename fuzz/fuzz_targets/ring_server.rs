//! The server end of a ring whose page holds arbitrary bytes and whose guest
//! rewrites indices and data between operations: no panic, no access outside
//! the page (the sanitizer would see it), and every successful transfer moves
//! the index by exactly what it reports.
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use xenring::page::{OwnedPage, RingIndex, PAGE_SIZE};
use xenring::{Error, ServerEnd, ServerFeatures};

fuzz_target!(|data: &[u8]| {
    let (image, ops) = data.split_at(data.len().min(PAGE_SIZE));
    let page = OwnedPage::new();
    page.fill_from(image);
    let ring = page.ring();
    let server = ServerEnd::new(ring);
    let mut buf = [0u8; 2048];
    for op in ops.chunks(5) {
        let arg = op
            .get(1..5)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match op[0] % 7 {
            0 => {
                let len = (arg as usize) % buf.len();
                let before = ring.load_index(RingIndex::ReqCons, Ordering::Relaxed);
                match server.read(&mut buf[..len]) {
                    Ok(n) => {
                        assert!(n <= len && n <= 1024);
                        let after = ring.load_index(RingIndex::ReqCons, Ordering::Relaxed);
                        assert_eq!(after, before.wrapping_add(n as u32));
                    }
                    Err(Error::IndexOverrun { prod, cons, .. }) => {
                        assert!(prod.wrapping_sub(cons) > 1024)
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            1 => {
                let len = (arg as usize) % buf.len();
                let before = ring.load_index(RingIndex::RspProd, Ordering::Relaxed);
                match server.write(&buf[..len]) {
                    Ok(n) => {
                        assert!(n <= len && n <= 1024);
                        let after = ring.load_index(RingIndex::RspProd, Ordering::Relaxed);
                        assert_eq!(after, before.wrapping_add(n as u32));
                    }
                    Err(Error::IndexOverrun { prod, cons, .. }) => {
                        assert!(prod.wrapping_sub(cons) > 1024)
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            // The hostile guest moves an index to anything.
            2 => ring.store_index(RingIndex::ReqProd, arg, Ordering::Relaxed),
            3 => ring.store_index(RingIndex::RspCons, arg, Ordering::Relaxed),
            4 => {
                if server.reconnect_requested() {
                    server.complete_reconnect();
                }
            }
            5 => {
                let _ = server.readable();
                let _ = server.writable();
                let _ = ring.connection();
                let _ = ring.error();
            }
            _ => server.advertise(ServerFeatures::from_bits_retain(arg)),
        }
    }
});
