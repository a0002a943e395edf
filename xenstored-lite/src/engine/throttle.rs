//! Per-domain throttling: C xenstored's write rate limit (`wrl_*` in
//! xenstored_domain.c, XSA-206) and oxenstored's conflict credit.
//!
//! # The write rate limit
//!
//! As C: each unprivileged domain has a credit, in thousandths of a write.
//! A write costs one write; time earns credit at `rate` writes per second
//! *shared* by all known domains (a domain earns `rate / ndomains`), up to
//! `burst` writes per domain; what a domain earns beyond its burst goes to
//! a reserve shared by all (up to `reserve` writes), from which a domain in
//! deficit is topped up first. A new domain starts with up to `burst`
//! writes taken from the reserve (which may go `5 * burst` into deficit for
//! new domains, as C's `WRL_NEWDOMS`). A domain whose credit is negative is
//! not read from until it has earned it back: its requests are delayed,
//! never failed. As C, writes are charged only while some transaction is
//! open (outside one, a write cannot make another's commit fail), and a
//! commit once, when another transaction is open too.
//!
//! # The conflict credit
//!
//! As oxenstored (`conflict-burst-limit`, `conflict-max-history-seconds`,
//! `conflict-rate-limit-is-aggregate`): each domain has `conflict_burst`
//! points; each transaction commit its writes make fail (EAGAIN) costs one;
//! at zero the domain is not read from. Points come back one per
//! `conflict_period_ms`: to the first domain of a queue of those below
//! their burst (aggregate, the default: colluding domains share the
//! refill), or to each of them. So a domain rewriting what a toolstack's
//! transaction reads is paused until the transaction commits.
//!
//! Time comes only from the engine's clock (`Input::Time`): the same
//! inputs give the same pauses.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use xenring::DomId;

use super::store::{is_child_of, parent, Path};
use super::Time;

/// Fixed-point factor: credit is kept in thousandths of a write.
const FACTOR: i64 = 1000;

/// C's `WRL_CREDIT_MAX`.
const CREDIT_MAX: i64 = 1000 * 1000 * 1000;

/// C's `WRL_NEWDOMS`: how many new domains' bursts the reserve may lend.
const NEWDOMS: i64 = 5;

/// C's `WRL_LOGEVERY`: after this long without limiting, say so once.
const LOG_EVERY_MS: Time = 120_000;

/// Throttling settings (`--rate-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Writes per second shared by all domains (C's `WRL_RATE`, 200);
    /// 0 turns the write rate limit off.
    pub write_rate: u32,
    /// Writes a domain may make in a burst (C's `WRL_DBURST`, 10).
    pub write_burst: u32,
    /// Writes the shared reserve holds at most (C's `WRL_GBURST`, 1000).
    pub write_reserve: u32,
    /// Transaction conflicts a domain may cause in a burst (oxenstored's
    /// `conflict-burst-limit`, 5); 0 turns the conflict credit off.
    pub conflict_burst: u32,
    /// One conflict point comes back per this many milliseconds
    /// (oxenstored's `conflict-max-history-seconds`, 0.05 s).
    pub conflict_period_ms: u64,
    /// A point goes to one domain at a time, in turn (oxenstored's
    /// `conflict-rate-limit-is-aggregate`, true), not to each.
    pub conflict_aggregate: bool,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            write_rate: 200,
            write_burst: 10,
            write_reserve: 1000,
            conflict_burst: 5,
            conflict_period_ms: 50,
            conflict_aggregate: true,
        }
    }
}

/// One domain's state.
#[derive(Debug, Clone)]
struct Bucket {
    /// Write credit, in thousandths of a write.
    credit: i64,
    /// When `credit` was last brought up to date.
    stamp: Time,
    /// Credit earned but not yet whole (numerator over `1000 * ndomains`).
    carry: i64,
    /// Conflict points left.
    conflict: i64,
    /// "is affected" was logged for it.
    delay_logged: bool,
    /// Its first conflict pause was logged.
    conflict_logged: bool,
}

/// The throttle: every domain's credits, and which are paused.
#[derive(Debug, Clone)]
pub struct Throttle {
    config: ThrottleConfig,
    buckets: BTreeMap<DomId, Bucket>,
    /// The shared reserve, in thousandths of a write.
    reserve: i64,
    /// Paused domains, with when to look at them again.
    paused: BTreeMap<DomId, Time>,
    /// Domains unpaused by the last [`Throttle::tick`].
    resumed: Vec<DomId>,
    /// Domains below their conflict burst, in refill order.
    refill: VecDeque<DomId>,
    /// When the next conflict point is given.
    next_refill: Time,
    /// When limiting was last in force (C's `wrl_log_last_warning`).
    last_warning: Option<Time>,
    /// Lines for the daemon's log.
    log: Vec<String>,
}

impl Throttle {
    /// A throttle with no domain known.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            buckets: BTreeMap::new(),
            reserve: 0,
            paused: BTreeMap::new(),
            resumed: Vec::new(),
            refill: VecDeque::new(),
            next_refill: 0,
            last_warning: None,
            log: Vec::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn burst(&self) -> i64 {
        i64::from(self.config.write_burst) * FACTOR
    }

    /// Whether `domid` is paused (its connection is not read).
    pub fn is_paused(&self, domid: DomId) -> bool {
        self.paused.contains_key(&domid)
    }

    /// The earliest time a paused domain may resume, if any is paused.
    pub fn next_wakeup(&self) -> Option<Time> {
        self.paused.values().copied().min()
    }

    /// The domains the last [`Throttle::tick`] resumed, in domid order.
    pub fn resumed(&self) -> &[DomId] {
        &self.resumed
    }

    /// Takes the lines to log.
    pub fn take_log(&mut self) -> Vec<String> {
        core::mem::take(&mut self.log)
    }

    /// Domains known (their state kept).
    pub fn known(&self) -> usize {
        self.buckets.len()
    }

    /// Makes `domid`'s bucket as C's `wrl_domain_new` if it has none;
    /// buckets of domains `live` no longer knows go first (C's
    /// `wrl_domain_destroy`: their credit back to the reserve).
    fn ensure(&mut self, domid: DomId, now: Time, live: &dyn Fn(DomId) -> bool) {
        if self.buckets.contains_key(&domid) {
            return;
        }
        let gone: Vec<DomId> = self.buckets.keys().copied().filter(|&d| !live(d)).collect();
        for d in gone {
            self.forget(d);
        }
        let mut credit = 0;
        let burst = self.burst();
        xfer(&mut self.reserve, -burst * NEWDOMS, &mut credit, burst);
        self.buckets.insert(
            domid,
            Bucket {
                credit,
                stamp: now,
                carry: 0,
                conflict: i64::from(self.config.conflict_burst),
                delay_logged: false,
                conflict_logged: false,
            },
        );
    }

    /// Forgets a domain (it is gone): its credit goes back to the reserve.
    pub fn forget(&mut self, domid: DomId) {
        if let Some(mut b) = self.buckets.remove(&domid) {
            let burst = self.burst();
            xfer(&mut b.credit, 0, &mut self.reserve, burst);
        }
        self.paused.remove(&domid);
        self.refill.retain(|&d| d != domid);
    }

    /// C's `wrl_credit_update`: `domid`'s credit brought up to `now`.
    fn update(&mut self, domid: DomId, now: Time, ndomains: usize) {
        let rate = i64::from(self.config.write_rate) * FACTOR;
        let burst = self.burst();
        let gburst = i64::from(self.config.write_reserve) * FACTOR;
        let Some(b) = self.buckets.get_mut(&domid) else {
            return;
        };
        let msec = i64::try_from(now.saturating_sub(b.stamp).min(1_000_000_000)).unwrap_or(0);
        let denom = i64::try_from(ndomains.max(1))
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let earned = msec.saturating_mul(rate).saturating_add(b.carry);
        b.carry = earned % denom;
        b.credit = (b.credit + earned / denom).min(CREDIT_MAX);
        b.stamp = now;
        // Take from the reserve to make the credit non-negative, then give
        // what is above the burst back to it (the rest is discarded).
        xfer(&mut self.reserve, 0, &mut b.credit, 0);
        let mut surplus = 0;
        xfer(&mut b.credit, burst, &mut surplus, CREDIT_MAX);
        xfer(&mut surplus, 0, &mut self.reserve, gburst);
    }

    /// Charges `writes` writes to `domid` at `now` (C's
    /// `wrl_apply_debit_actual`), `ndomains` domains being known; pauses
    /// it if its credit goes negative. `live` tells which domains still
    /// exist. No-op when the write rate limit is off.
    pub fn charge_writes(
        &mut self,
        domid: DomId,
        writes: u32,
        now: Time,
        ndomains: usize,
        live: &dyn Fn(DomId) -> bool,
    ) {
        if self.config.write_rate == 0 || writes == 0 {
            return;
        }
        self.ensure(domid, now, live);
        self.update(domid, now, ndomains);
        let Some(b) = self.buckets.get_mut(&domid) else {
            return;
        };
        b.credit -= i64::from(writes) * FACTOR;
        // What C's next credit update does at once: the reserve covers a
        // deficit if it can.
        xfer(&mut self.reserve, 0, &mut b.credit, 0);
        if b.credit < 0 {
            if !b.delay_logged {
                b.delay_logged = true;
                self.log
                    .push(format!("write rate limit: domain {domid} is affected"));
            } else if self.last_warning.is_none() {
                self.log
                    .push(String::from("write rate limit: rate limiting restarts"));
            }
            self.last_warning = Some(now);
            let at = self.wakeup(domid, now, ndomains);
            self.paused.insert(domid, at);
        }
    }

    /// Charges one caused transaction conflict to `domid` (oxenstored's
    /// `decr_conflict_credit`); pauses it at zero. No-op when the conflict
    /// credit is off.
    pub fn charge_conflict(
        &mut self,
        domid: DomId,
        now: Time,
        ndomains: usize,
        live: &dyn Fn(DomId) -> bool,
    ) {
        let burst = i64::from(self.config.conflict_burst);
        if burst == 0 {
            return;
        }
        self.ensure(domid, now, live);
        let Some(b) = self.buckets.get_mut(&domid) else {
            return;
        };
        // Floored, so that one pause lasts at most two bursts' refill.
        b.conflict = (b.conflict - 1).max(-burst);
        let paused = b.conflict <= 0;
        let first = paused && !b.conflict_logged;
        if first {
            b.conflict_logged = true;
        }
        if self.refill.is_empty() {
            self.next_refill = now.saturating_add(self.config.conflict_period_ms.max(1));
        }
        if !self.refill.contains(&domid) {
            self.refill.push_back(domid);
        }
        if first {
            self.log.push(format!(
                "conflict rate limit: domain {domid} paused: its writes keep making other transactions fail"
            ));
        }
        if paused {
            let at = self.wakeup(domid, now, ndomains);
            self.paused.insert(domid, at);
        }
    }

    /// Whether `b` has no conflict point left (never, with the conflict
    /// credit off).
    fn out_of_conflicts(&self, b: &Bucket) -> bool {
        self.config.conflict_burst > 0 && b.conflict <= 0
    }

    /// When a paused domain is to be looked at again: when its write
    /// credit is back to zero, or the next conflict point is given.
    fn wakeup(&self, domid: DomId, now: Time, ndomains: usize) -> Time {
        let Some(b) = self.buckets.get(&domid) else {
            return now.saturating_add(1);
        };
        let mut at = now.saturating_add(1);
        let rate = i64::from(self.config.write_rate) * FACTOR;
        if b.credit < 0 && rate > 0 {
            // -credit / (rate / ndomains), in milliseconds, rounded up.
            let n = i64::try_from(ndomains.max(1)).unwrap_or(i64::MAX);
            let num = (-b.credit).saturating_mul(1000).saturating_mul(n);
            let ms = num.saturating_add(rate - 1) / rate;
            at = at.max(now.saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)));
        }
        if self.out_of_conflicts(b) {
            at = at.max(self.next_refill.max(now.saturating_add(1)));
        }
        at
    }

    /// The clock moved to `now`: conflict points given for the periods
    /// elapsed, paused domains whose time has come looked at again (and
    /// resumed if their credit allows, see [`Throttle::resumed`]).
    pub fn tick(&mut self, now: Time, ndomains: usize) {
        self.resumed.clear();
        self.refill_conflicts(now);
        if let Some(last) = self.last_warning {
            if now.saturating_sub(last) > LOG_EVERY_MS {
                self.log
                    .push(String::from("write rate limit: not in force recently"));
                self.last_warning = None;
            }
        }
        let due: Vec<DomId> = self
            .paused
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&d, _)| d)
            .collect();
        for d in due {
            if self.config.write_rate > 0 {
                self.update(d, now, ndomains);
            }
            let ok = self.buckets.get(&d).is_none_or(|b| {
                (b.credit >= 0 || self.config.write_rate == 0) && !self.out_of_conflicts(b)
            });
            if ok {
                self.paused.remove(&d);
                self.resumed.push(d);
            } else {
                let at = self.wakeup(d, now, ndomains);
                self.paused.insert(d, at);
            }
        }
    }

    /// oxenstored's `incr_conflict_credit`, once per period elapsed.
    fn refill_conflicts(&mut self, now: Time) {
        let burst = i64::from(self.config.conflict_burst);
        let period = self.config.conflict_period_ms.max(1);
        // Never more rounds than points missing: bounded however long the
        // clock jumped.
        let mut missing: i64 = self
            .refill
            .iter()
            .filter_map(|d| self.buckets.get(d))
            .map(|b| burst - b.conflict)
            .sum();
        while !self.refill.is_empty() && self.next_refill <= now && missing > 0 {
            self.next_refill = self.next_refill.saturating_add(period);
            let rounds = if self.config.conflict_aggregate {
                1
            } else {
                self.refill.len()
            };
            for _ in 0..rounds {
                let Some(d) = self.refill.pop_front() else {
                    break;
                };
                let Some(b) = self.buckets.get_mut(&d) else {
                    continue;
                };
                b.conflict = (b.conflict + 1).min(burst);
                missing -= 1;
                if b.conflict < burst {
                    self.refill.push_back(d);
                }
            }
        }
        if self.refill.is_empty() {
            self.next_refill = now;
        }
    }
}

/// C's `wrl_xfer_credit`: moves as much as possible from `debit` to
/// `credit` keeping `debit >= floor` and `credit <= ceil`.
fn xfer(debit: &mut i64, floor: i64, credit: &mut i64, ceil: i64) {
    let amount = (*debit - floor).min(ceil - *credit);
    if amount > 0 {
        *debit -= amount;
        *credit += amount;
    }
}

/// Recent writes by unprivileged domains, to tell who made a transaction
/// fail: each committed change's store version, writer and path. Bounded
/// (oldest dropped first); a write that fell off is not blamed.
#[derive(Debug, Clone, Default)]
pub struct WriteLog {
    entries: VecDeque<(u64, DomId, Path)>,
    bytes: usize,
}

/// Entries a [`WriteLog`] keeps at most.
const WRITE_LOG_ENTRIES: usize = 1024;

/// Path bytes a [`WriteLog`] keeps at most.
const WRITE_LOG_BYTES: usize = 256 * 1024;

impl WriteLog {
    /// Notes that `domid`'s write to `path` made the committed store
    /// `version`.
    pub fn record(&mut self, version: u64, domid: DomId, path: Path) {
        self.bytes += path.len();
        self.entries.push_back((version, domid, path));
        while self.entries.len() > WRITE_LOG_ENTRIES || self.bytes > WRITE_LOG_BYTES {
            match self.entries.pop_front() {
                Some((_, _, p)) => self.bytes -= p.len(),
                None => break,
            }
        }
    }

    /// The domains that changed, after store version `since`, what a
    /// request on `path` sees: the node itself, an ancestor (its removal,
    /// or the permissions a creation inherits), or a child (its parent's
    /// child list).
    pub fn writers_since(&self, since: u64, path: &str) -> BTreeSet<DomId> {
        self.entries
            .iter()
            .rev()
            .take_while(|(v, _, _)| *v > since)
            .filter(|(_, _, w)| is_child_of(path, w) || parent(w) == Some(path))
            .map(|&(_, d, _)| d)
            .collect()
    }

    /// How many writes are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "throttle_engine_tests.rs"]
mod engine_tests;
