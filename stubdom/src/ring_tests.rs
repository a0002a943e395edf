use super::*;
use std::collections::VecDeque;
use std::sync::Arc;

use xenring::codec::{build_args, build_path_value};
use xenring::page::{RingIndex, RING_SIZE_U32};
use xenring::{GuestEnd, OwnedPage, RingErrorCode};

/// A heap page standing in for a mapped grant (shared with the test's
/// guest end).
#[derive(Clone)]
struct Page(Arc<OwnedPage>);

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Page")
    }
}

impl ForeignPage for Page {
    fn ring(&self) -> xenring::RingPage<'_> {
        self.0.ring()
    }
}

fn setup() -> (RingConn, Page) {
    let page = Page(Arc::new(OwnedPage::new()));
    let conn = RingConn::new(Box::new(page.clone()), Port::new(7), 3);
    (conn, page)
}

fn guest(page: &Page) -> GuestEnd<'_> {
    GuestEnd::new(page.0.ring())
}

fn req(ty: MsgType, id: u32, payload: Vec<u8>) -> Message {
    Message::new(ty, id, 0, payload).unwrap()
}

use xenring::MsgType;

#[test]
fn test_new_advertises_reconnection_and_error() {
    let (conn, page) = setup();
    let f = guest(&page).server_features();
    assert!(f.contains(ServerFeatures::RECONNECTION | ServerFeatures::ERROR));
    assert_eq!((conn.port(), conn.domid()), (Port::new(7), 3));
}

#[test]
fn test_byte_at_a_time_gives_each_request_once_whole() {
    let (mut conn, page) = setup();
    let a = req(MsgType::Write, 1, build_path_value(b"/a", b"v"));
    let b = req(MsgType::Read, 2, build_args(&[b"/a"]));
    let wire = [a.to_bytes(), b.to_bytes()].concat();
    let mut got = Vec::new();
    for (i, byte) in wire.iter().enumerate() {
        assert_eq!(guest(&page).write(&[*byte]).unwrap(), 1);
        let out = conn.read_requests(READ_BUDGET, &mut got).unwrap();
        assert_eq!(out.bytes, 1, "byte {i}");
        // Consumed at once: req_cons follows req_prod.
        assert_eq!(guest(&page).writable().unwrap(), RING_SIZE_U32);
    }
    assert_eq!(got, vec![a, b]);
}

#[test]
fn test_partial_header_and_payload_are_kept_across_reads() {
    let (mut conn, page) = setup();
    let a = req(MsgType::Write, 1, build_path_value(b"/a", b"value"));
    let wire = a.to_bytes();
    let mut got = Vec::new();
    for cut in [5, 16, 18] {
        got.clear();
        guest(&page).write(&wire[..cut]).unwrap();
        conn.read_requests(READ_BUDGET, &mut got).unwrap();
        assert!(got.is_empty(), "half a request (cut {cut}) is no request");
        guest(&page).write(&wire[cut..]).unwrap();
        conn.read_requests(READ_BUDGET, &mut got).unwrap();
        assert_eq!(got, vec![a.clone()], "cut {cut}");
    }
}

#[test]
fn test_empty_ring_reads_nothing() {
    let (mut conn, _page) = setup();
    let mut got = Vec::new();
    let out = conn.read_requests(READ_BUDGET, &mut got).unwrap();
    assert_eq!(out, ReadOutcome::default());
}

#[test]
fn test_full_request_ring_is_reported_and_budget_bounds_the_read() {
    let (mut conn, page) = setup();
    // Fill the ring with whole 64-byte requests.
    let one = req(MsgType::Read, 1, vec![b'a'; 48]).to_bytes();
    assert_eq!(one.len(), 64);
    let fill = one.repeat(RING_SIZE / 64);
    assert_eq!(guest(&page).write(&fill).unwrap(), RING_SIZE);
    let mut got = Vec::new();
    let out = conn.read_requests(100, &mut got).unwrap();
    assert_eq!(out.bytes, 100);
    assert!(out.was_full, "the first read found the ring full");
    assert!(out.more, "bytes left after the budget");
    assert_eq!(got.len(), 1);
    let out = conn.read_requests(READ_BUDGET, &mut got).unwrap();
    assert_eq!(out.bytes, RING_SIZE - 100);
    assert!(!out.was_full);
    assert!(!out.more);
    assert_eq!(got.len(), RING_SIZE / 64);
}

#[test]
fn test_hostile_request_indices_are_a_typed_error() {
    let (mut conn, page) = setup();
    let ring = page.0.ring();
    ring.store_index(
        RingIndex::ReqProd,
        5000,
        core::sync::atomic::Ordering::SeqCst,
    );
    let mut got = Vec::new();
    let err = conn.read_requests(READ_BUDGET, &mut got).unwrap_err();
    assert!(
        matches!(err, xenring::Error::IndexOverrun { .. }),
        "{err:?}"
    );
    // Wrapped indices that are consistent are fine.
    ring.store_index(
        RingIndex::ReqCons,
        u32::MAX - 3,
        core::sync::atomic::Ordering::SeqCst,
    );
    ring.store_index(
        RingIndex::ReqProd,
        u32::MAX - 3,
        core::sync::atomic::Ordering::SeqCst,
    );
    let a = req(MsgType::Read, 9, build_args(&[b"/x"]));
    guest(&page).write(&a.to_bytes()).unwrap();
    conn.read_requests(READ_BUDGET, &mut got).unwrap();
    assert_eq!(got, vec![a]);
}

#[test]
fn test_oversized_payload_is_a_protocol_error() {
    let (mut conn, page) = setup();
    let mut bad = req(MsgType::Read, 1, Vec::new()).to_bytes();
    bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
    guest(&page).write(&bad).unwrap();
    let err = conn
        .read_requests(READ_BUDGET, &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, xenring::Error::PayloadTooLong { .. }),
        "{err:?}"
    );
}

#[test]
fn test_requests_before_an_error_are_kept() {
    let (mut conn, page) = setup();
    let a = req(MsgType::Read, 1, build_args(&[b"/a"]));
    let mut bad = req(MsgType::Read, 2, Vec::new()).to_bytes();
    bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
    guest(&page).write(&[a.to_bytes(), bad].concat()).unwrap();
    let mut got = Vec::new();
    assert!(conn.read_requests(READ_BUDGET, &mut got).is_err());
    assert_eq!(got, vec![a]);
}

/// Reads what the guest has.
fn drain(page: &Page) -> Vec<u8> {
    let mut out = vec![0; RING_SIZE];
    let n = guest(page).read(&mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn test_full_response_ring_keeps_the_rest_for_later() {
    let (mut conn, page) = setup();
    let big = req(MsgType::Read, 1, vec![b'x'; 3000]);
    let small = req(MsgType::Read, 2, b"y".to_vec());
    let mut queue: VecDeque<Message> = [big.clone(), small.clone()].into();
    let n = conn.write_responses(|| queue.pop_front()).unwrap();
    assert_eq!(n, RING_SIZE);
    assert!(conn.has_buffered_output());
    assert_eq!(
        queue.len(),
        1,
        "the next message is not taken while one waits"
    );
    // Nothing fits: nothing written, nothing lost.
    assert_eq!(conn.write_responses(|| queue.pop_front()).unwrap(), 0);
    let mut seen = drain(&page);
    while conn.has_buffered_output() || !queue.is_empty() {
        conn.write_responses(|| queue.pop_front()).unwrap();
        seen.extend(drain(&page));
    }
    assert_eq!(seen, [big.to_bytes(), small.to_bytes()].concat());
}

#[test]
fn test_hostile_response_indices_are_a_typed_error() {
    let (mut conn, page) = setup();
    page.0.ring().store_index(
        RingIndex::RspCons,
        3000,
        core::sync::atomic::Ordering::SeqCst,
    );
    let mut queue: VecDeque<Message> = [req(MsgType::Read, 1, b"v".to_vec())].into();
    let err = conn.write_responses(|| queue.pop_front()).unwrap_err();
    assert!(
        matches!(err, xenring::Error::IndexOverrun { .. }),
        "{err:?}"
    );
}

#[test]
fn test_reset_drops_partial_request_and_response() {
    let (mut conn, page) = setup();
    let a = req(MsgType::Write, 1, build_path_value(b"/a", b"value"));
    guest(&page).write(&a.to_bytes()[..10]).unwrap();
    conn.read_requests(READ_BUDGET, &mut Vec::new()).unwrap();
    let mut queue: VecDeque<Message> = [req(MsgType::Read, 1, vec![b'x'; 2000])].into();
    conn.write_responses(|| queue.pop_front()).unwrap();
    assert!(conn.has_buffered_output());
    conn.reset();
    assert!(!conn.has_buffered_output());
    conn.end().complete_reconnect();
    // A fresh request decodes from its first byte.
    guest(&page).write(&a.to_bytes()).unwrap();
    let mut got = Vec::new();
    conn.read_requests(READ_BUDGET, &mut got).unwrap();
    assert_eq!(got, vec![a]);
}

#[test]
fn test_cut_off_sets_the_error_word() {
    let (mut conn, page) = setup();
    assert!(!conn.is_dead());
    conn.cut_off(RingErrorCode::Proto);
    assert!(conn.is_dead());
    assert_eq!(guest(&page).error(), RingErrorCode::Proto);
}

#[test]
fn test_budget_is_four_ring_fulls() {
    // What fairness is measured in (the constant's docs).
    assert_eq!(READ_BUDGET, 4096);
}

#[test]
fn test_budget_spent_exactly_on_what_was_there_leaves_nothing_more() {
    let (mut conn, page) = setup();
    let one = req(MsgType::Read, 1, vec![b'a'; 48]).to_bytes();
    guest(&page).write(&one.repeat(RING_SIZE / 64)).unwrap();
    let mut got = Vec::new();
    let out = conn.read_requests(RING_SIZE, &mut got).unwrap();
    assert_eq!(out.bytes, RING_SIZE);
    assert!(!out.more, "the ring is empty: nothing is left for later");
    // One byte more is more.
    guest(&page).write(&one).unwrap();
    let out = conn.read_requests(63, &mut got).unwrap();
    assert!(out.more);
}
