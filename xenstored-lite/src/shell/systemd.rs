//! systemd's readiness protocol (`sd_notify`): a `Type=notify` unit learns
//! that the daemon serves.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Tells systemd the daemon is ready (`sd_notify(READY=1)`), when it
/// started us with `Type=notify` (`NOTIFY_SOCKET` is set); a failure is
/// logged, not fatal.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = PathBuf::from(path);
    // Abstract socket names start with '@'.
    let sent = if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(
            &path.as_os_str().as_encoded_bytes()[1..],
        )
        .and_then(|addr| UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr))
    } else {
        UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1", &path))
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
