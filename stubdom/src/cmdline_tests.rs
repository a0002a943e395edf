use super::*;
use proptest::prelude::*;

fn err(cmdline: &str) -> CmdlineError {
    parse(cmdline).unwrap_err()
}

#[test]
fn test_init_xenstore_domain_lines_parse() {
    // Xen 4.17's launcher, without and with --param.
    let c = parse("--event 5 --internal-db").unwrap();
    assert_eq!(c.event, 5);
    assert_eq!(c.domid, None);
    let c = parse("--event 7 --internal-db -E 50 --quota memory=1000").unwrap();
    assert_eq!(c.event, 7);
    assert_eq!(c.engine.quotas.hard(QuotaKind::Nodes), 50);
    assert_eq!(c.engine.quotas.hard(QuotaKind::Memory), 1000);
    // Later releases' form.
    let c = parse("--event 3 --domid 12").unwrap();
    assert_eq!((c.event, c.domid), (3, Some(12)));
}

#[test]
fn test_daemon_options_set_the_engine_as_the_daemon_does() {
    let c = parse(
        "--event=9 -S 100 -W 7 -t 3 -A 2 -M 99 -q memory=500 -w watch-event=5 -K \
         --rate-limit writes=0 --rate-limit conflict-ms=9 --rate-limit conflict-aggregate=0 \
         --priv-event-queue 4096 --guest-log-interval 3 --priv-domid 4 -V --verbose \
         --entry-nb=11",
    )
    .unwrap();
    let e = &c.engine;
    assert_eq!(c.event, 9);
    assert_eq!(e.quotas.hard(QuotaKind::NodeSize), 100);
    assert_eq!(e.quotas.hard(QuotaKind::Watches), 7);
    assert_eq!(e.quotas.hard(QuotaKind::Transactions), 3);
    assert_eq!(e.quotas.hard(QuotaKind::NodePermissions), 2);
    assert_eq!(e.quotas.hard(QuotaKind::PathMax), 99);
    assert_eq!(e.quotas.hard(QuotaKind::Nodes), 11);
    assert_eq!(e.quotas.soft(QuotaKind::Memory), 500);
    assert_eq!(e.watch_event_timeout_ms, 5000);
    assert!(e.keep_orphans);
    assert_eq!(e.throttle.write_rate, 0);
    assert_eq!(e.throttle.conflict_period_ms, 9);
    assert!(!e.throttle.conflict_aggregate);
    assert_eq!(e.max_priv_event_bytes, 4096);
    assert_eq!(e.guest_log_interval_ms, 3000);
    assert_eq!(e.priv_domid, 4);
    assert_eq!(c.verbose, 2);
}

#[test]
fn test_defaults_are_the_daemons() {
    let c = parse("--event 1").unwrap();
    let d = Config::default();
    assert_eq!(c.engine.watch_event_timeout_ms, d.watch_event_timeout_ms);
    assert_eq!(
        c.engine.quotas.hard(QuotaKind::Nodes),
        d.quotas.hard(QuotaKind::Nodes)
    );
    assert!(!c.engine.keep_orphans);
    assert_eq!(c.engine.throttle, d.throttle);
    assert_eq!(c.verbose, 0);
}

#[test]
fn test_errors_name_the_word_at_fault() {
    let cases: &[(&str, CmdlineError)] = &[
        ("", CmdlineError::NoEvent),
        ("--internal-db", CmdlineError::NoEvent),
        (
            "--event",
            CmdlineError::MissingValue {
                option: "--event".into(),
            },
        ),
        (
            "--event five",
            CmdlineError::BadNumber {
                option: "--event".into(),
                value: "five".into(),
            },
        ),
        (
            "--event -1",
            CmdlineError::BadNumber {
                option: "--event".into(),
                value: "-1".into(),
            },
        ),
        (
            "--event 1 --bogus",
            CmdlineError::UnknownOption {
                word: "--bogus".into(),
            },
        ),
        (
            "--event 1 -Z",
            CmdlineError::UnknownOption { word: "-Z".into() },
        ),
        (
            "--event 1 -EW",
            CmdlineError::UnknownOption { word: "-EW".into() },
        ),
        (
            "--event 1 -",
            CmdlineError::UnknownOption { word: "-".into() },
        ),
        (
            "--event 1 stray",
            CmdlineError::Positional {
                word: "stray".into(),
            },
        ),
        (
            "--event 1 --socket=/x",
            CmdlineError::NotInStub {
                word: "--socket=/x".into(),
            },
        ),
        (
            "--event 1 -N",
            CmdlineError::NotInStub { word: "-N".into() },
        ),
        (
            "--event 1 --keep-orphans=1",
            CmdlineError::UnexpectedValue {
                option: "--keep-orphans".into(),
                value: "1".into(),
            },
        ),
        (
            "--event 1 -Q memory",
            CmdlineError::NotNameValue {
                option: "-Q".into(),
                value: "memory".into(),
            },
        ),
        (
            "--event 1 -Q bogus=1",
            CmdlineError::UnknownName {
                option: "-Q".into(),
                name: "bogus".into(),
            },
        ),
        (
            "--event 1 -q memory=x",
            CmdlineError::BadNumber {
                option: "-q".into(),
                value: "x".into(),
            },
        ),
        (
            "--event 1 -w soon=1",
            CmdlineError::UnknownName {
                option: "-w".into(),
                name: "soon".into(),
            },
        ),
        (
            "--event 1 --rate-limit often=1",
            CmdlineError::UnknownName {
                option: "--rate-limit".into(),
                name: "often".into(),
            },
        ),
        (
            "--event 1 --rate-limit writes=99999999999",
            CmdlineError::BadNumber {
                option: "--rate-limit".into(),
                value: "writes=99999999999".into(),
            },
        ),
        (
            "--event 1 --priv-domid 32752",
            CmdlineError::BadNumber {
                option: "--priv-domid".into(),
                value: "32752".into(),
            },
        ),
        (
            "--event 1 --domid 70000",
            CmdlineError::BadNumber {
                option: "--domid".into(),
                value: "70000".into(),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(&err(line), want, "{line:?}");
    }
    assert_eq!(
        err("--event 1 -N").to_string(),
        "option \"-N\" is not available in a xenstore stub domain"
    );
}

#[test]
fn test_last_event_wins_and_white_space_is_any() {
    let c = parse("\t--event 1\n --event\t2  ").unwrap();
    assert_eq!(c.event, 2);
    assert_eq!(
        parse("--priv-domid 32751 --event 0")
            .unwrap()
            .engine
            .priv_domid,
        32751
    );
}

#[test]
fn test_start_info_text_ends_at_the_nul_and_refuses_non_utf8() {
    let mut page = [0u8; 1024];
    page[..19].copy_from_slice(b"--event 5 -E 100\0-K");
    assert_eq!(from_start_info(&page), Ok("--event 5 -E 100"));
    // No NUL: every byte is the line.
    assert_eq!(from_start_info(b"--event 5"), Ok("--event 5"));
    assert_eq!(from_start_info(b""), Ok(""));
    // A byte that is not UTF-8 is named, not cut off with what follows.
    assert_eq!(
        from_start_info(b"--event 5 \xff -K"),
        Err(CmdlineError::NotText { at: 10 })
    );
    assert_eq!(
        from_start_info(b"--event 5 \xff -K")
            .unwrap_err()
            .to_string(),
        "the command line is not UTF-8 from byte 10 on"
    );
    // Bad bytes after the NUL are not the command line's.
    assert_eq!(from_start_info(b"--event 5\0\xff"), Ok("--event 5"));
}

proptest! {
    /// Any text: a config or a typed error, never a panic.
    #[test]
    fn prop_parse_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }

    /// Words drawn from the options and their values: still no panic, and
    /// an accepted line always names an event port.
    #[test]
    fn prop_option_soup_never_panics(words in proptest::collection::vec(
        prop_oneof![
            Just("--event".to_string()), Just("-E".to_string()), Just("-Q".to_string()),
            Just("--rate-limit".to_string()), Just("-K".to_string()), Just("-w".to_string()),
            Just("--event=".to_string()), Just("memory=".to_string()), Just("=".to_string()),
            "[0-9]{0,25}", "[a-z=-]{0,12}",
        ], 0..12)) {
        let line = words.join(" ");
        if let Ok(c) = parse(&line) {
            prop_assert!(line.contains("--event"), "{line:?} gave port {}", c.event);
        }
    }
}
