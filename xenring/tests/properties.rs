//! Property tests: ring arithmetic and transfer, codec round trips, the
//! incremental decoder, hostile indices.

use std::sync::atomic::Ordering;

use proptest::prelude::*;
use xenring::codec::{build_args, split_args, Decoder, Message};
use xenring::page::{OwnedPage, RingIndex, RING_SIZE_U32};
use xenring::perms::{format_perm_list, parse_perm_list, Perm, PermKind};
use xenring::{Error, GuestEnd, Queue, ServerEnd};

fn set_all_indices(page: &OwnedPage, req: (u32, u32), rsp: (u32, u32)) {
    let ring = page.ring();
    ring.store_index(RingIndex::ReqCons, req.0, Ordering::Relaxed);
    ring.store_index(RingIndex::ReqProd, req.1, Ordering::Relaxed);
    ring.store_index(RingIndex::RspCons, rsp.0, Ordering::Relaxed);
    ring.store_index(RingIndex::RspProd, rsp.1, Ordering::Relaxed);
}

/// Plays a stream through one queue with the given chunk sizes; returns what
/// came out.
fn transfer(
    data: &[u8],
    start: u32,
    writes: &[usize],
    reads: &[usize],
    request_queue: bool,
) -> Vec<u8> {
    let page = OwnedPage::new();
    set_all_indices(&page, (start, start), (start, start));
    let guest = GuestEnd::new(page.ring());
    let server = ServerEnd::new(page.ring());
    let mut sent = 0;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 4096];
    let (mut wi, mut ri) = (0, 0);
    // Bounded: every round either moves a byte or the queue is empty and the
    // writer gets a turn; the writer always progresses when there is room.
    for _ in 0..100_000 {
        if got.len() == data.len() {
            break;
        }
        let w = writes[wi % writes.len()];
        wi += 1;
        let end = (sent + w).min(data.len());
        let n = if request_queue {
            guest.write(&data[sent..end]).expect("consistent indices")
        } else {
            server.write(&data[sent..end]).expect("consistent indices")
        };
        sent += n;
        let r = reads[ri % reads.len()];
        ri += 1;
        let n = if request_queue {
            server.read(&mut buf[..r]).expect("consistent indices")
        } else {
            guest.read(&mut buf[..r]).expect("consistent indices")
        };
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn message_strategy() -> impl Strategy<Value = Message> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..=4096),
    )
        .prop_map(|(ty, req, tx, payload)| {
            Message::with_raw_type(ty, req, tx, payload).expect("payload within limit")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn prop_ring_transfer_every_byte_once_in_order(
        data in prop::collection::vec(any::<u8>(), 0..6000),
        start in prop_oneof![Just(u32::MAX), (u32::MAX - 3000)..=u32::MAX, any::<u32>()],
        writes in prop::collection::vec(1usize..1500, 1..16),
        reads in prop::collection::vec(1usize..1500, 1..16),
        request_queue in any::<bool>(),
    ) {
        let got = transfer(&data, start, &writes, &reads, request_queue);
        prop_assert_eq!(got, data);
    }

    #[test]
    fn prop_ring_hostile_indices_typed_error(prod in any::<u32>(), cons in any::<u32>()) {
        let page = OwnedPage::new();
        set_all_indices(&page, (cons, prod), (cons, prod));
        let server = ServerEnd::new(page.ring());
        let guest = GuestEnd::new(page.ring());
        let mut buf = [0u8; 2048];
        let bad = prod.wrapping_sub(cons) > RING_SIZE_U32;
        let results = [
            (Queue::Request, server.read(&mut buf).map(|_| ())),
            (Queue::Response, server.write(&[7u8; 2048]).map(|_| ())),
            (Queue::Request, guest.write(&[7u8; 2048]).map(|_| ())),
            (Queue::Response, guest.read(&mut buf).map(|_| ())),
        ];
        for (queue, result) in results {
            match result {
                Ok(()) => prop_assert!(!bad),
                Err(Error::IndexOverrun { queue: q, prod: p, cons: c }) => {
                    prop_assert!(bad);
                    prop_assert_eq!(q, queue);
                    prop_assert_eq!((p, c), (prod, cons));
                }
                Err(e) => prop_assert!(false, "unexpected error {:?}", e),
            }
        }
    }

    #[test]
    fn prop_ring_arbitrary_page_never_panics(image in prop::collection::vec(any::<u8>(), 4096)) {
        let page = OwnedPage::new();
        page.fill_from(&image);
        let server = ServerEnd::new(page.ring());
        let mut buf = [0u8; 4096];
        for _ in 0..4 {
            let _ = server.read(&mut buf);
            let _ = server.write(&buf[..100]);
            let _ = server.readable();
            let _ = server.writable();
        }
    }

    #[test]
    fn prop_codec_roundtrip(msgs in prop::collection::vec(message_strategy(), 1..6)) {
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode_into(&mut bytes);
        }
        let mut out = Vec::new();
        let mut dec = Decoder::new();
        dec.decode_all(&bytes, &mut out).unwrap();
        prop_assert!(dec.is_idle());
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn prop_decoder_byte_at_a_time_same_as_whole(
        msgs in prop::collection::vec(message_strategy(), 1..4),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode_into(&mut bytes);
        }
        let mut whole = Vec::new();
        Decoder::new().decode_all(&bytes, &mut whole).unwrap();

        let mut one = Vec::new();
        let mut dec = Decoder::new();
        for b in &bytes {
            dec.decode_all(std::slice::from_ref(b), &mut one).unwrap();
        }
        prop_assert_eq!(&one, &whole);

        // Random chunking, with a restore from `partial()` at every chunk
        // boundary (what live update does).
        let mut chunked = Vec::new();
        let mut dec = Decoder::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < bytes.len() {
            let end = (pos + chunks[i % chunks.len()]).min(bytes.len());
            dec.decode_all(&bytes[pos..end], &mut chunked).unwrap();
            let mut restored = Decoder::new();
            let mut trash = Vec::new();
            restored.decode_all(&dec.partial(), &mut trash).unwrap();
            prop_assert!(trash.is_empty());
            dec = restored;
            pos = end;
            i += 1;
        }
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn prop_decoder_oversized_len_always_rejected(len in 4097u32.., ty in any::<u32>()) {
        let header = xenring::Header { msg_type: ty, req_id: 1, tx_id: 0, len };
        let mut dec = Decoder::new();
        let bytes = header.to_bytes();
        let mut input = &bytes[..];
        let rejected = matches!(dec.decode(&mut input), Err(Error::PayloadTooLong { len: l }) if l == len);
        prop_assert!(rejected, "a header announcing {} bytes was accepted", len);
    }

    #[test]
    fn prop_args_roundtrip(args in prop::collection::vec(prop::collection::vec(1u8..=255, 0..20), 1..8)) {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let payload = build_args(&refs);
        let back: Vec<&[u8]> = split_args(&payload).collect();
        prop_assert_eq!(back, refs);
    }

    #[test]
    fn prop_perm_list_roundtrip(entries in prop::collection::vec((0u8..4, any::<u16>()), 1..10)) {
        let perms: Vec<Perm> = entries
            .iter()
            .map(|&(k, d)| {
                let kind = [PermKind::None, PermKind::Read, PermKind::Write, PermKind::Both][usize::from(k)];
                Perm::new(kind, d)
            })
            .collect();
        prop_assert_eq!(parse_perm_list(&format_perm_list(&perms)).unwrap(), perms);
    }

    #[test]
    fn prop_path_validation_never_panics(path in prop::collection::vec(any::<u8>(), 0..4000)) {
        let _ = xenring::path::validate_path(&path);
    }
}
