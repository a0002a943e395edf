//! The mirrors against Xen 4.17's own headers (Debian's `libxen-dev`, or
//! the directory `XEN_TOOLS_INCLUDE_DIR` names).

use super::*;
use crate::cprobe;
use crate::testskip::{skip, Missing};

/// The directory holding Xen's public headers (`xen/event_channel.h`), or
/// `None` (the test then says it skipped, or fails under `XSL_REQUIRE_ALL`).
fn xen_include_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("XEN_TOOLS_INCLUDE_DIR") {
        return Some(dir.into());
    }
    let debian = std::path::Path::new("/usr/include");
    debian
        .join("xen/event_channel.h")
        .is_file()
        .then(|| debian.to_path_buf())
}

/// Compares each `(C expression, our value)` with what the headers say.
fn compare(test: &str, ours: &[(&str, u64)]) {
    let Some(dir) = xen_include_dir() else {
        skip(
            Missing::Tool,
            test,
            "no /usr/include/xen/event_channel.h and XEN_TOOLS_INCLUDE_DIR unset \
             (Xen 4.17 public headers: apt-get install libxen-dev)",
        );
        return;
    };
    let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
    let theirs = cprobe::probe_with(
        &[dir.as_path()],
        "#define __XEN_TOOLS__ 1\n#include <xen/xen.h>\n#include <xen/sched.h>\n#include <xen/errno.h>\n",
        "xen/event_channel.h",
        &exprs,
    )
    .unwrap_or_else(|reason| panic!("Xen's headers in {} are unusable: {reason}", dir.display()));
    for ((name, ours), theirs) in ours.iter().zip(theirs) {
        assert_eq!(*ours, theirs, "{name}");
    }
}

fn size<T>() -> u64 {
    size_of::<T>() as u64
}

#[test]
fn test_hypercall_and_op_numbers_xen_417_headers_match() {
    compare(
        "test_hypercall_and_op_numbers_xen_417_headers_match",
        &[
            (
                "__HYPERVISOR_set_timer_op",
                u64::from(HYPERVISOR_SET_TIMER_OP),
            ),
            (
                "__HYPERVISOR_xen_version",
                u64::from(HYPERVISOR_XEN_VERSION),
            ),
            (
                "__HYPERVISOR_grant_table_op",
                u64::from(HYPERVISOR_GRANT_TABLE_OP),
            ),
            ("__HYPERVISOR_sched_op", u64::from(HYPERVISOR_SCHED_OP)),
            (
                "__HYPERVISOR_event_channel_op",
                u64::from(HYPERVISOR_EVENT_CHANNEL_OP),
            ),
            ("__HYPERVISOR_domctl", u64::from(HYPERVISOR_DOMCTL)),
            ("DOMID_SELF", u64::from(DOMID_SELF)),
            ("VIRQ_TIMER", u64::from(VIRQ_TIMER)),
            ("VIRQ_DOM_EXC", u64::from(crate::VIRQ_DOM_EXC)),
            ("EVTCHNOP_bind_interdomain", EVTCHNOP_BIND_INTERDOMAIN),
            ("EVTCHNOP_bind_virq", EVTCHNOP_BIND_VIRQ),
            ("EVTCHNOP_close", EVTCHNOP_CLOSE),
            ("EVTCHNOP_send", EVTCHNOP_SEND),
            ("EVTCHNOP_alloc_unbound", EVTCHNOP_ALLOC_UNBOUND),
            ("EVTCHNOP_unmask", EVTCHNOP_UNMASK),
            ("SCHEDOP_yield", SCHEDOP_YIELD),
            ("SCHEDOP_block", SCHEDOP_BLOCK),
            ("SCHEDOP_shutdown", SCHEDOP_SHUTDOWN),
            ("SCHEDOP_poll", SCHEDOP_POLL),
            ("SHUTDOWN_poweroff", u64::from(SHUTDOWN_POWEROFF)),
            ("SHUTDOWN_crash", u64::from(SHUTDOWN_CRASH)),
            ("XEN_LEGACY_MAX_VCPUS", XEN_LEGACY_MAX_VCPUS as u64),
            ("EVTCHN_2L_NR_CHANNELS", u64::from(EVTCHN_2L_NR_CHANNELS)),
        ],
    );
}

#[test]
fn test_event_channel_structs_xen_417_headers_match() {
    compare(
        "test_event_channel_structs_xen_417_headers_match",
        &[
            (
                "sizeof(struct evtchn_alloc_unbound)",
                size::<EvtchnAllocUnbound>(),
            ),
            (
                "offsetof(struct evtchn_alloc_unbound, remote_dom)",
                offset_of!(EvtchnAllocUnbound, remote_dom) as u64,
            ),
            (
                "offsetof(struct evtchn_alloc_unbound, port)",
                offset_of!(EvtchnAllocUnbound, port) as u64,
            ),
            (
                "sizeof(struct evtchn_bind_interdomain)",
                size::<EvtchnBindInterdomain>(),
            ),
            (
                "offsetof(struct evtchn_bind_interdomain, remote_port)",
                offset_of!(EvtchnBindInterdomain, remote_port) as u64,
            ),
            (
                "offsetof(struct evtchn_bind_interdomain, local_port)",
                offset_of!(EvtchnBindInterdomain, local_port) as u64,
            ),
            ("sizeof(struct evtchn_bind_virq)", size::<EvtchnBindVirq>()),
            (
                "offsetof(struct evtchn_bind_virq, vcpu)",
                offset_of!(EvtchnBindVirq, vcpu) as u64,
            ),
            (
                "offsetof(struct evtchn_bind_virq, port)",
                offset_of!(EvtchnBindVirq, port) as u64,
            ),
            ("sizeof(struct evtchn_close)", size::<EvtchnPort>()),
            ("sizeof(struct evtchn_send)", size::<EvtchnPort>()),
            ("sizeof(struct evtchn_unmask)", size::<EvtchnPort>()),
            ("sizeof(struct sched_shutdown)", size::<SchedShutdown>()),
            ("sizeof(struct sched_poll)", size::<SchedPoll>()),
            (
                "offsetof(struct sched_poll, nr_ports)",
                offset_of!(SchedPoll, nr_ports) as u64,
            ),
            (
                "offsetof(struct sched_poll, timeout)",
                offset_of!(SchedPoll, timeout) as u64,
            ),
        ],
    );
}

#[test]
fn test_shared_info_layout_xen_417_headers_match() {
    compare(
        "test_shared_info_layout_xen_417_headers_match",
        &[
            ("sizeof(xen_ulong_t)", size::<XenUlong>()),
            ("sizeof(struct vcpu_time_info)", size::<VcpuTimeInfo>()),
            (
                "offsetof(struct vcpu_time_info, system_time)",
                offset_of!(VcpuTimeInfo, system_time) as u64,
            ),
            (
                "offsetof(struct vcpu_time_info, tsc_to_system_mul)",
                offset_of!(VcpuTimeInfo, tsc_to_system_mul) as u64,
            ),
            (
                "offsetof(struct vcpu_time_info, tsc_shift)",
                offset_of!(VcpuTimeInfo, tsc_shift) as u64,
            ),
            (
                "offsetof(struct vcpu_time_info, flags)",
                offset_of!(VcpuTimeInfo, flags) as u64,
            ),
            ("sizeof(struct arch_vcpu_info)", size::<ArchVcpuInfo>()),
            ("sizeof(struct vcpu_info)", size::<VcpuInfo>()),
            (
                "offsetof(struct vcpu_info, evtchn_upcall_mask)",
                offset_of!(VcpuInfo, evtchn_upcall_mask) as u64,
            ),
            (
                "offsetof(struct vcpu_info, evtchn_pending_sel)",
                offset_of!(VcpuInfo, evtchn_pending_sel) as u64,
            ),
            (
                "offsetof(struct vcpu_info, arch)",
                offset_of!(VcpuInfo, arch) as u64,
            ),
            (
                "offsetof(struct vcpu_info, time)",
                offset_of!(VcpuInfo, time) as u64,
            ),
            ("sizeof(struct arch_shared_info)", size::<ArchSharedInfo>()),
            ("sizeof(struct shared_info)", size::<SharedInfo>()),
            (
                "offsetof(struct shared_info, vcpu_info[0].evtchn_upcall_pending)",
                OFFSET_UPCALL_PENDING as u64,
            ),
            (
                "offsetof(struct shared_info, vcpu_info[0].evtchn_upcall_mask)",
                OFFSET_UPCALL_MASK as u64,
            ),
            (
                "offsetof(struct shared_info, vcpu_info[0].evtchn_pending_sel)",
                OFFSET_PENDING_SEL as u64,
            ),
            (
                "offsetof(struct shared_info, vcpu_info[0].time)",
                OFFSET_VCPU_TIME as u64,
            ),
            (
                "offsetof(struct shared_info, evtchn_pending)",
                OFFSET_EVTCHN_PENDING as u64,
            ),
            (
                "offsetof(struct shared_info, evtchn_mask)",
                OFFSET_EVTCHN_MASK as u64,
            ),
            (
                "offsetof(struct shared_info, wc_version)",
                offset_of!(SharedInfo, wc_version) as u64,
            ),
            (
                "offsetof(struct shared_info, wc_sec_hi)",
                offset_of!(SharedInfo, wc_sec_hi) as u64,
            ),
            (
                "offsetof(struct shared_info, arch)",
                offset_of!(SharedInfo, arch) as u64,
            ),
        ],
    );
}

#[test]
fn test_xen_errno_names_xen_417_headers_match() {
    let named: Vec<(String, u64)> = (0..=200)
        .filter_map(|code| {
            let e = crate::hypercall::XenErrno(code);
            e.name()
                .map(|n| (format!("XEN_{n}"), u64::try_from(code).unwrap()))
        })
        .collect();

    // Every code errno.h shows a guest has its name: its 51 entries less
    // two aliases (EWOULDBLOCK = EAGAIN, EDEADLOCK = EDEADLK, named once
    // here) and the two internal to Xen (EINTR, ERESTART).
    assert_eq!(named.len(), 47, "{named:?}");
    let ours: Vec<(&str, u64)> = named.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    compare("test_xen_errno_names_xen_417_headers_match", &ours);
}
