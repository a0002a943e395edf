//! The stub domain's command line, as the kernel takes it from
//! `start_info.cmd_line` (the launcher's `--event N` and the user's
//! `--param` text): arbitrary bytes give a configuration or a typed error,
//! never a panic; how the words are spaced never changes the outcome; an
//! accepted line names dom0's port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored_stubdom::cmdline::{from_start_info, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = from_start_info(data) else {
        return;
    };
    let outcome = parse(text);

    let respaced = text
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" \t ");
    let again = parse(&respaced);
    match (&outcome, &again) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("{text:?} and {respaced:?} parse differently: {outcome:?} / {again:?}"),
    }

    if let Ok(config) = &outcome {
        assert!(
            text.contains("--event"),
            "{text:?} gave port {}",
            config.event
        );
    }
    if let Err(e) = &outcome {
        // Every refusal can be printed on the console.
        assert!(!e.to_string().is_empty());
    }
});
