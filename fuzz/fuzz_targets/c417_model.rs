//! The model of C xenstored 4.17's acceptance rules and the conversion to
//! the C 4.17 form, fed arbitrary bytes: neither panics; the model never
//! accepts what our reader refuses; whatever the conversion produces (with
//! and without dropping transactions and per-domain quotas) writes and
//! passes the model; and a stream the model accepts converts without a
//! refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored_lite::migration::{self, c417};

fuzz_target!(|data: &[u8]| {
    let verdict = c417::check_c417(data);
    let Ok(stream) = migration::parse(data) else {
        assert!(
            verdict.is_err(),
            "the model accepted a stream the reader refuses"
        );
        return;
    };
    let all = c417::C417Options {
        drop_transactions: true,
        drop_domain_quotas: true,
    };
    for opts in [c417::C417Options::default(), all] {
        let Ok(converted) = c417::to_c417(&stream, &opts) else {
            continue;
        };
        if let Err(e) = converted.to_bytes() {
            panic!("the C 4.17 form fails the model: {e}");
        }
    }
    if verdict.is_ok() {
        if let Err(e) = c417::to_c417(&stream, &c417::C417Options::default()) {
            panic!("a stream the model accepts is refused by the conversion: {e}");
        }
    }
});
