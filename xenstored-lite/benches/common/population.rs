//! The synthetic guest population the benchmarks load: the nodes a
//! toolstack writes for a domain (home, frontend and backend devices,
//! `/vm`, `/libxl`; values of 10 to 40 bytes), shared by the live-update
//! benchmark (`tests/benches/live_update.rs`) and the replay benchmark
//! (`xenstored-lite/benches/replay.rs`), which include this file with
//! `#[path]`.

/// Domain ids of the populated (not running) domains start here, clear of
/// the guests mock-xen creates.
pub const FIRST_DOMID: u32 = 100;

/// A value of 10 to 40 bytes: `seed` repeated and cut (realistic content,
/// lengths spread by `salt`).
pub fn value(seed: &str, salt: u32) -> String {
    let len = 10 + (salt.wrapping_mul(2_654_435_761) >> 27) as usize; // 10..=41
    let len = len.min(40);
    seed.chars().cycle().take(len).collect()
}

/// The nodes a toolstack writes for domain `d`, parents first.
pub fn domain_nodes(d: u32) -> Vec<(String, String)> {
    let home = format!("/local/domain/{d}");
    let uuid = format!("6a0f{d:04x}-58c1-4b7e-9d2a-{:012x}", u64::from(d) * 7919);
    let fe_vbd = format!("{home}/device/vbd/51712");
    let fe_vif = format!("{home}/device/vif/0");
    let be_vbd = format!("/local/domain/0/backend/vbd/{d}/51712");
    let be_vif = format!("/local/domain/0/backend/vif/{d}/0");
    let mac = format!(
        "00:16:3e:{:02x}:{:02x}:{:02x}",
        (d >> 16) & 0xff,
        (d >> 8) & 0xff,
        d & 0xff
    );
    let mut out: Vec<(String, String)> = Vec::new();
    let mut salt = d * 97;
    let dir = |out: &mut Vec<(String, String)>, p: String| out.push((p, String::new()));
    let mut leaf = |out: &mut Vec<(String, String)>, p: String, seed: &str| {
        salt += 1;
        out.push((p, value(seed, salt)));
    };
    dir(&mut out, home.clone());
    leaf(
        &mut out,
        format!("{home}/name"),
        &format!("guest-{d:05}.example.net "),
    );
    leaf(&mut out, format!("{home}/domid"), &format!("{d} "));
    leaf(&mut out, format!("{home}/vm"), &format!("/vm/{uuid}"));
    dir(&mut out, format!("{home}/memory"));
    for k in ["target", "static-max", "videoram"] {
        leaf(&mut out, format!("{home}/memory/{k}"), "1048576 ");
    }
    dir(&mut out, format!("{home}/cpu"));
    for c in 0..2 {
        dir(&mut out, format!("{home}/cpu/{c}"));
        leaf(&mut out, format!("{home}/cpu/{c}/availability"), "online ");
    }
    dir(&mut out, format!("{home}/control"));
    leaf(&mut out, format!("{home}/control/shutdown"), "poweroff ");
    for f in ["poweroff", "reboot", "suspend"] {
        leaf(&mut out, format!("{home}/control/feature-{f}"), "1 ");
    }
    dir(&mut out, format!("{home}/console"));
    leaf(&mut out, format!("{home}/console/ring-ref"), "2062354 ");
    leaf(&mut out, format!("{home}/console/port"), "2 ");
    leaf(&mut out, format!("{home}/console/type"), "xenconsoled ");
    dir(&mut out, format!("{home}/data"));
    leaf(
        &mut out,
        format!("{home}/data/updated"),
        "Sat Nov 21 18:52:46 UTC 2026 ",
    );
    dir(&mut out, format!("{home}/device"));
    dir(&mut out, format!("{home}/device/vbd"));
    dir(&mut out, fe_vbd.clone());
    for (k, v) in [
        ("backend", be_vbd.as_str()),
        ("backend-id", "0 "),
        ("state", "4 "),
        ("virtual-device", "51712 "),
        ("device-type", "disk "),
        ("ring-ref", "8 "),
        ("event-channel", "3 "),
        ("protocol", "x86_64-abi "),
    ] {
        leaf(&mut out, format!("{fe_vbd}/{k}"), v);
    }
    dir(&mut out, format!("{home}/device/vif"));
    dir(&mut out, fe_vif.clone());
    for (k, v) in [
        ("backend", be_vif.as_str()),
        ("backend-id", "0 "),
        ("state", "4 "),
        ("handle", "0 "),
        ("mac", mac.as_str()),
        ("tx-ring-ref", "1280 "),
        ("rx-ring-ref", "1281 "),
        ("event-channel", "4 "),
        ("request-rx-copy", "1 "),
        ("feature-rx-notify", "1 "),
    ] {
        leaf(&mut out, format!("{fe_vif}/{k}"), v);
    }
    dir(&mut out, format!("/local/domain/0/backend/vbd/{d}"));
    dir(&mut out, be_vbd.clone());
    for (k, v) in [
        ("frontend", fe_vbd.as_str()),
        ("frontend-id", &format!("{d} ")),
        ("params", &format!("/var/lib/xen/images/guest-{d:05}.img")),
        ("type", "phy "),
        ("mode", "w "),
        ("online", "1 "),
        ("state", "4 "),
        ("dev", "xvda "),
    ] {
        leaf(&mut out, format!("{be_vbd}/{k}"), v);
    }
    dir(&mut out, format!("/local/domain/0/backend/vif/{d}"));
    dir(&mut out, be_vif.clone());
    for (k, v) in [
        ("frontend", fe_vif.as_str()),
        ("frontend-id", &format!("{d} ")),
        ("mac", mac.as_str()),
        ("bridge", "xenbr0 "),
        ("handle", "0 "),
        ("online", "1 "),
        ("state", "4 "),
        ("script", "/etc/xen/scripts/vif-bridge"),
    ] {
        leaf(&mut out, format!("{be_vif}/{k}"), v);
    }
    dir(&mut out, format!("/vm/{uuid}"));
    leaf(
        &mut out,
        format!("/vm/{uuid}/name"),
        &format!("guest-{d:05} "),
    );
    leaf(&mut out, format!("/vm/{uuid}/uuid"), &uuid);
    leaf(&mut out, format!("/vm/{uuid}/start_time"), "1763751166.42 ");
    dir(&mut out, format!("/libxl/{d}"));
    leaf(&mut out, format!("/libxl/{d}/type"), "pvh ");
    leaf(&mut out, format!("/libxl/{d}/dm-version"), "qemu_xen ");
    out
}

/// Nodes above every domain's (written once, first).
pub const COMMON: [&str; 8] = [
    "/local",
    "/local/domain",
    "/local/domain/0",
    "/local/domain/0/backend",
    "/local/domain/0/backend/vbd",
    "/local/domain/0/backend/vif",
    "/vm",
    "/libxl",
];
