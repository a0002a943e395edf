//! The throttle's credits against C's and oxenstored's arithmetic.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

fn live(_: DomId) -> bool {
    true
}

fn writes_only() -> ThrottleConfig {
    ThrottleConfig {
        conflict_burst: 0,
        ..ThrottleConfig::default()
    }
}

/// Writes `domid` can make at `now` before it is paused.
fn writes_until_paused(t: &mut Throttle, domid: DomId, now: Time, ndomains: usize) -> u32 {
    let mut n = 0;
    while !t.is_paused(domid) {
        t.charge_writes(domid, 1, now, ndomains, &live);
        n += 1;
        assert!(n < 100_000, "never paused");
    }
    n
}

#[test]
fn test_new_domains_borrow_a_burst_then_wait_for_the_rate() {
    let mut t = Throttle::new(writes_only());
    // The reserve lends five new domains their burst of 10 (C's
    // WRL_NEWDOMS); a sixth starts with nothing.
    for d in 1..=5 {
        assert_eq!(writes_until_paused(&mut t, d, 0, 6), 11, "domain {d}");
    }
    assert_eq!(writes_until_paused(&mut t, 6, 0, 6), 1);
    // Each owes one write: at 200/s shared by 6, 30 ms.
    assert_eq!(t.next_wakeup(), Some(30));
    t.tick(29, 6);
    assert!(t.is_paused(6) && t.resumed().is_empty());
    t.tick(30, 6);
    assert!(!t.is_paused(6));
    assert_eq!(t.resumed(), &[1, 2, 3, 4, 5, 6]);
    assert!(t
        .take_log()
        .iter()
        .any(|l| l.contains("domain 6 is affected")));
}

#[test]
fn test_paused_domain_resumes_when_its_credit_is_back_not_before() {
    let mut t = Throttle::new(writes_only());
    let n = writes_until_paused(&mut t, 1, 0, 1);
    assert_eq!(n, 11);
    // One write owed at 200/s: 5 ms.
    assert_eq!(t.next_wakeup(), Some(5));
    t.tick(4, 1);
    assert!(t.is_paused(1));
    t.tick(5, 1);
    assert!(!t.is_paused(1));
    assert_eq!(t.resumed(), &[1]);
    assert_eq!(t.next_wakeup(), None);
    // The next tick resumes nobody again.
    t.tick(6, 1);
    assert!(t.resumed().is_empty());
}

#[test]
fn test_rate_off_never_pauses() {
    let mut t = Throttle::new(ThrottleConfig {
        write_rate: 0,
        ..ThrottleConfig::default()
    });
    for _ in 0..10_000 {
        t.charge_writes(1, 1, 0, 1, &live);
    }
    assert!(!t.is_paused(1));
    assert_eq!(t.next_wakeup(), None);
}

#[test]
fn test_credit_earned_in_small_steps_is_not_lost() {
    // 200/s shared by 300 domains: 2/3 of a thousandth per millisecond,
    // which C's integer division would round to nothing on every update.
    let mut t = Throttle::new(ThrottleConfig {
        write_burst: 1,
        ..writes_only()
    });
    writes_until_paused(&mut t, 1, 0, 300);
    let due = t.next_wakeup().unwrap();
    let mut now = 0;
    while t.is_paused(1) {
        now += 1;
        t.tick(now, 300);
        assert!(now <= due, "resumed at {now}, due {due}");
    }
    assert_eq!(now, due);
}

#[test]
fn test_surplus_goes_to_the_reserve_which_tops_up_a_debtor() {
    let mut t = Throttle::new(writes_only());
    // Domain 1 idles for a minute: its surplus fills the reserve.
    t.charge_writes(1, 1, 0, 2, &live);
    t.tick(60_000, 2);
    t.charge_writes(1, 1, 60_000, 2, &live);
    // Domain 2 then writes far beyond its burst before it is paused.
    let n = writes_until_paused(&mut t, 2, 60_000, 2);
    assert!(n > 500, "{n}");
}

#[test]
fn test_forgotten_domain_is_resumed_and_gone() {
    let mut t = Throttle::new(writes_only());
    writes_until_paused(&mut t, 1, 0, 1);
    t.forget(1);
    assert!(!t.is_paused(1));
    assert_eq!(t.known(), 0);
    // A domain that is gone is forgotten when another is first seen.
    writes_until_paused(&mut t, 2, 0, 1);
    t.charge_writes(3, 1, 0, 1, &|d| d != 2);
    assert!(!t.is_paused(2));
    assert_eq!(t.known(), 1);
}

#[test]
fn test_conflicts_pause_after_the_burst_and_refill_one_per_period() {
    let mut t = Throttle::new(ThrottleConfig {
        write_rate: 0,
        ..ThrottleConfig::default()
    });
    for i in 1..=4 {
        t.charge_conflict(7, 10, 1, &live);
        assert!(!t.is_paused(7), "after {i}");
    }
    t.charge_conflict(7, 10, 1, &live);
    assert!(t.is_paused(7));
    assert_eq!(t.next_wakeup(), Some(60));
    let log = t.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    t.tick(59, 1);
    assert!(t.is_paused(7));
    t.tick(60, 1);
    assert!(!t.is_paused(7));
    // Back to the full burst after four more periods.
    t.tick(260, 1);
    for _ in 1..=4 {
        t.charge_conflict(7, 260, 1, &live);
    }
    assert!(!t.is_paused(7));
    t.charge_conflict(7, 260, 1, &live);
    assert!(t.is_paused(7));
    assert!(t.take_log().is_empty(), "the pause is logged once");
}

#[test]
fn test_aggregate_refill_serves_paused_domains_in_turn() {
    for aggregate in [true, false] {
        let mut t = Throttle::new(ThrottleConfig {
            write_rate: 0,
            conflict_burst: 1,
            conflict_aggregate: aggregate,
            ..ThrottleConfig::default()
        });
        for d in [1, 2, 3] {
            t.charge_conflict(d, 0, 3, &live);
            assert!(t.is_paused(d));
        }
        t.tick(50, 3);
        let resumed: Vec<DomId> = t.resumed().to_vec();
        if aggregate {
            assert_eq!(resumed, vec![1], "one point per period, first come");
            t.tick(100, 3);
            assert_eq!(t.resumed(), &[2]);
            t.tick(150, 3);
            assert_eq!(t.resumed(), &[3]);
        } else {
            assert_eq!(resumed, vec![1, 2, 3]);
        }
    }
}

#[test]
fn test_long_idle_clock_jump_refills_in_bounded_rounds() {
    let mut t = Throttle::new(ThrottleConfig {
        write_rate: 0,
        ..ThrottleConfig::default()
    });
    for _ in 0..5 {
        t.charge_conflict(1, 0, 1, &live);
    }
    t.tick(u64::MAX / 2, 1);
    assert!(!t.is_paused(1));
    for _ in 0..4 {
        t.charge_conflict(1, u64::MAX / 2, 1, &live);
    }
    assert!(!t.is_paused(1), "fully refilled");
}

#[test]
fn test_write_log_blames_writers_of_the_node_its_ancestors_and_children() {
    let mut log = WriteLog::default();
    log.record(5, 1, Arc::from("/a/b"));
    log.record(6, 2, Arc::from("/a"));
    log.record(7, 3, Arc::from("/a/b/c"));
    log.record(8, 4, Arc::from("/a/b/c/d"));
    log.record(9, 5, Arc::from("/x"));
    let set = |v: &[DomId]| v.iter().copied().collect::<BTreeSet<DomId>>();
    assert_eq!(log.writers_since(4, "/a/b"), set(&[1, 2, 3]));
    assert_eq!(log.writers_since(5, "/a/b"), set(&[2, 3]));
    assert_eq!(log.writers_since(9, "/a/b"), set(&[]));
    assert_eq!(log.writers_since(0, "/x"), set(&[5]));
}

#[test]
fn test_write_log_is_bounded() {
    let mut log = WriteLog::default();
    let long: Arc<str> = Arc::from("/p".repeat(1000).as_str());
    for v in 0..10_000 {
        log.record(v, 1, Arc::clone(&long));
    }
    assert!(log.len() * long.len() <= WRITE_LOG_BYTES);
    assert!(!log.is_empty());
    // The newest are kept.
    assert_eq!(log.writers_since(9_998, &long), [1].into_iter().collect());
}

proptest! {
    /// Whatever the writes and ticks, a domain makes at most its burst,
    /// what the reserve lent it, and its share of the rate for the time
    /// elapsed (plus the one write that takes it into deficit), and it is
    /// paused exactly while its credit is negative.
    #[test]
    fn prop_writes_bounded_by_burst_and_rate(
        steps in proptest::collection::vec((0u64..40, 0u32..6), 1..200),
        ndomains in 1usize..5,
    ) {
        let cfg = ThrottleConfig { write_reserve: 0, ..writes_only() };
        let mut t = Throttle::new(cfg);
        let mut now = 0;
        let mut made = 0u64;
        for (dt, writes) in steps {
            now += dt;
            t.tick(now, ndomains);
            for _ in 0..writes {
                if t.is_paused(1) {
                    break;
                }
                t.charge_writes(1, 1, now, ndomains, &live);
                made += 1;
            }
            let credit = t.buckets.get(&1).map_or(0, |b| b.credit);
            prop_assert_eq!(t.is_paused(1), credit < 0);
            if let Some(at) = t.next_wakeup() {
                prop_assert!(at > now);
            }
        }
        let share = now * u64::from(cfg.write_rate) / (ndomains as u64 * 1000);
        prop_assert!(made <= u64::from(cfg.write_burst) + share + 1, "{} writes in {} ms", made, now);
    }

    /// The same calls give the same state (the engine's determinism).
    #[test]
    fn prop_deterministic(
        calls in proptest::collection::vec((0u8..3, 1u16..4, 0u64..30), 1..100),
    ) {
        let run = || {
            let mut t = Throttle::new(ThrottleConfig::default());
            let mut now = 0;
            let mut trace = Vec::new();
            for &(what, d, dt) in &calls {
                now += dt;
                match what {
                    0 => t.charge_writes(d, 1, now, 3, &live),
                    1 => t.charge_conflict(d, now, 3, &live),
                    _ => t.tick(now, 3),
                }
                trace.push((t.next_wakeup(), t.resumed().to_vec(), t.is_paused(d)));
            }
            (trace, t.take_log())
        };
        prop_assert_eq!(run(), run());
    }
}
