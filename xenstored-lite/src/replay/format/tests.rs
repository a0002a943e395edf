//! The recording format: every event round-trips, a cut file stops at
//! its last whole event, bad input is a typed error.

use super::*;
use proptest::prelude::*;
use xenring::{Header, MsgType, XsErrno};

fn all_kinds() -> Vec<BoundaryEvent<'static>> {
    vec![
        BoundaryEvent::Start {
            args: vec!["-N".into(), "--mock-xen".into(), "/s".into()],
        },
        BoundaryEvent::Restore {
            stream: b"xenstore....",
            outcomes: vec![
                (1, Outcome::Socket(3)),
                (2, Outcome::Ring(4)),
                (3, Outcome::Gone(5)),
                (4, Outcome::Dropped),
            ],
        },
        BoundaryEvent::Time(123_456),
        BoundaryEvent::Connect {
            conn: 7,
            kind: ConnectKind::Socket,
        },
        BoundaryEvent::Connect {
            conn: 8,
            kind: ConnectKind::Ring(0),
        },
        BoundaryEvent::Input {
            conn: 7,
            bytes: b"\x02\0\0\0",
        },
        BoundaryEvent::Output {
            conn: 7,
            bytes: &[],
        },
        BoundaryEvent::Close { conn: 7 },
        BoundaryEvent::Violation { conn: 8 },
        BoundaryEvent::Reset { conn: 8 },
        BoundaryEvent::Introduced {
            token: 9,
            result: Ok(11),
        },
        BoundaryEvent::Introduced {
            token: 10,
            result: Err(XsErrno::EINVAL),
        },
        BoundaryEvent::DomainState {
            domid: 3,
            shutdown: true,
            dying: false,
        },
        BoundaryEvent::Answer {
            conn: 2,
            header: Header::new(MsgType::Control, 5, 0, 3),
            answer: Answer::Text("OK".into()),
        },
        BoundaryEvent::Answer {
            conn: 2,
            header: Header::new(MsgType::Control, 6, 0, 7),
            answer: Answer::Error(XsErrno::EINVAL),
        },
        BoundaryEvent::HandOver,
        BoundaryEvent::StoreImage(b"XSLSIMG1 image bytes"),
        BoundaryEvent::StoreImage(b""),
        BoundaryEvent::Hold { on: true },
        BoundaryEvent::Hold { on: false },
    ]
}

fn file(events: &[BoundaryEvent<'_>]) -> Vec<u8> {
    let mut out = header().to_vec();
    for e in events {
        encode(e, &mut out);
    }
    out
}

fn read_all(data: &[u8]) -> Result<(Vec<BoundaryEvent<'_>>, Next<'_>), FormatError> {
    let mut r = Reader::new(data)?;
    let mut out = Vec::new();
    loop {
        match r.next_event()? {
            Next::Event(e) => out.push(e),
            end => return Ok((out, end)),
        }
    }
}

#[test]
fn test_recorder_writes_what_encode_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let events = [
        BoundaryEvent::Input {
            conn: 7,
            bytes: b"abc",
        },
        BoundaryEvent::Output {
            conn: 8,
            bytes: &[],
        },
    ];
    {
        let mut r = Recorder::open(&path, false).unwrap();
        for e in &events {
            r.record(e);
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), file(&events));
}

#[test]
fn test_a_fresh_recording_replaces_the_file_and_leaves_a_reader_the_old_one() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let old = [BoundaryEvent::Time(1)];
    {
        let mut r = Recorder::open(&path, false).unwrap();
        r.record(&old[0]);
    }
    // A replay holds the old recording open (mapped, in `player::replay`).
    let mut reader = std::fs::File::open(&path).unwrap();
    let new = [BoundaryEvent::Close { conn: 3 }];
    {
        let mut r = Recorder::open(&path, false).unwrap();
        r.record(&new[0]);
    }
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert_eq!(
        seen,
        file(&old),
        "the old recording changed under its reader"
    );
    assert_eq!(std::fs::read(&path).unwrap(), file(&new));
    // Continuing (a live update's new process) appends to the same file.
    {
        let mut r = Recorder::open(&path, true).unwrap();
        r.record(&old[0]);
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file(&[new[0].clone(), old[0].clone()])
    );
}

#[test]
fn test_every_kind_round_trips() {
    let events = all_kinds();
    let data = file(&events);
    let (back, end) = read_all(&data).unwrap();
    assert_eq!(back, events);
    assert_eq!(end, Next::End);
}

#[test]
fn test_truncation_stops_at_the_last_whole_event() {
    let events = all_kinds();
    let data = file(&events);
    for cut in HEADER_LEN..data.len() {
        let (back, end) = read_all(&data[..cut]).unwrap();
        assert!(events.starts_with(&back));
        match end {
            Next::End => assert!(back.len() <= events.len()),
            Next::Truncated { offset } => assert!(offset <= cut as u64),
            Next::Event(_) => unreachable!(),
        }
    }
}

#[test]
fn test_bad_input_is_a_typed_error() {
    assert_eq!(
        Reader::new(b"short").unwrap_err(),
        FormatError::NotARecording
    );
    let mut v2 = header();
    v2[8] = 2;
    assert_eq!(Reader::new(&v2).unwrap_err(), FormatError::Version(2));
    let mut data = header().to_vec();
    data.extend_from_slice(&[99, 0, 0, 0, 0]);
    let err = read_all(&data).unwrap_err();
    assert!(err.to_string().contains("unknown event kind 99"), "{err}");
    let mut data = header().to_vec();
    data.extend_from_slice(&[kind::TIME, 4, 0, 0, 0, 1, 2, 3, 4]);
    let err = read_all(&data).unwrap_err();
    assert!(
        err.to_string().contains("event 0 at offset 16: bad time"),
        "{err}"
    );
    let mut data = header().to_vec();
    data.extend_from_slice(&[kind::CLOSE, 5, 0, 0, 0, 1, 0, 0, 0, 9]);
    let err = read_all(&data).unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
    let mut data = header().to_vec();
    data.extend_from_slice(&[kind::HOLD, 1, 0, 0, 0, 2]);
    let err = read_all(&data).unwrap_err();
    assert!(err.to_string().contains("bad hold"), "{err}");
}

proptest! {
    #[test]
    fn prop_io_events_round_trip(conn in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..300), t in any::<u64>()) {
        let events = vec![
            BoundaryEvent::Time(t),
            BoundaryEvent::Input { conn, bytes: &bytes },
            BoundaryEvent::Output { conn, bytes: &bytes },
        ];
        let data = file(&events);
        let (back, end) = read_all(&data).unwrap();
        prop_assert_eq!(back, events);
        prop_assert_eq!(end, Next::End);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut data = header().to_vec();
        data.extend_from_slice(&tail);
        let _ = read_all(&data);
    }
}
