//! The command line. Flags that C xenstored also has mean the same here.

use std::path::PathBuf;

use clap::Parser;

use crate::engine::quota::QuotaKind;
use crate::engine::Config;
use crate::shell::platform::PlatformChoice;

/// A xenstore daemon: serves the xs_wire protocol to dom0's tools on a Unix
/// socket and to guests on their rings.
///
/// On a machine without /dev/xen it runs on an embedded mock-xen (a
/// simulated hypervisor, forked as a child process that live updates keep
/// and that ends with the daemon) and says so; simulated guests join
/// through the mock-xen socket it names (see the README).
///
/// When another daemon already serves the socket, it says so and exits 0,
/// leaving that daemon alone (an init script run twice).
#[derive(Debug, Parser)]
#[command(name = "xenstored-lite", version, disable_version_flag = true)]
pub struct Cli {
    /// Print the version.
    #[arg(long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,

    /// Write the daemon's process id to FILE.
    #[arg(short = 'F', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Write one line per request (connection, domid, type, path, result)
    /// to FILE: the access log, as C xenstored's trace file. Can be switched
    /// at run time with `xenstore-control log on|off` and `logfile FILE`.
    #[arg(short = 'T', long = "trace-file", value_name = "FILE")]
    pub trace_file: Option<PathBuf>,

    /// Stay in the foreground (do not fork and detach). Without it the
    /// daemon forks, as init scripts expect: the starting process exits 0
    /// once the detached one serves and has written the pid file (1 if it
    /// failed first, its error on stderr); the detached one's stdin and
    /// stdout become /dev/null, and stderr too unless it is a file or a
    /// socket (`2>>LOG`, the journal).
    #[arg(short = 'N', long = "no-fork")]
    pub no_fork: bool,

    /// Do not serve dom0's own ring (xsd_kva) at start-up.
    #[arg(short = 'D', long = "no-domain-init")]
    pub no_domain_init: bool,

    /// Quota: nodes a guest domain may own (0: unlimited). Default 1000.
    #[arg(short = 'E', long = "entry-nb", value_name = "N")]
    pub entry_nb: Option<u64>,

    /// Quota: bytes in one node's value (0: unlimited). Default 2048.
    #[arg(short = 'S', long = "entry-size", value_name = "BYTES")]
    pub entry_size: Option<u64>,

    /// Quota: watches per guest connection (0: unlimited). Default 128.
    #[arg(short = 'W', long = "watch-nb", value_name = "N")]
    pub watch_nb: Option<u64>,

    /// Quota: open transactions per guest connection (0: unlimited). Default 10.
    #[arg(short = 't', long = "transaction", value_name = "N")]
    pub transaction: Option<u64>,

    /// Quota: permission entries per node (0: unlimited). Default 5.
    #[arg(short = 'A', long = "perm-nb", value_name = "N")]
    pub perm_nb: Option<u64>,

    /// Quota: path length below a guest's home (0: unlimited). Default 2048.
    #[arg(short = 'M', long = "path-max", value_name = "BYTES")]
    pub path_max: Option<u64>,

    /// Quota by name, NAME=VALUE (repeatable): nodes, watches, outstanding,
    /// memory, transactions, transaction-nodes, node-permissions, path-max,
    /// node-size.
    #[arg(short = 'Q', long = "quota", value_name = "NAME=VALUE")]
    pub quota: Vec<String>,

    /// Soft quota by name, NAME=VALUE (repeatable; only memory has one:
    /// exceeding it is logged).
    #[arg(short = 'q', long = "quota-soft", value_name = "NAME=VALUE")]
    pub quota_soft: Vec<String>,

    /// Timeouts, WHAT=SECONDS (repeatable): watch-event (how long an
    /// undelivered watch event for a guest is kept; default 20).
    #[arg(short = 'w', long = "timeout", value_name = "WHAT=SECONDS")]
    pub timeout: Vec<String>,

    /// When a domain dies or is released, give the nodes it created
    /// outside its home to the privileged domain instead of deleting them,
    /// as C xenstored's -K. Off by default: kept nodes are a security risk
    /// (a guest allowed to write outside its home leaks its whole node and
    /// memory quota on every reboot, XSA-419).
    #[arg(short = 'K', long = "keep-orphans")]
    pub keep_orphans: bool,
    /// Throttling of guest domains, NAME=VALUE (repeatable). A throttled
    /// guest's ring is not read until its credit is back: its requests are
    /// delayed, never failed. `writes` (default 200): writes per second
    /// shared by all guests, as C xenstored's write rate limit (0: off);
    /// charged, as in C, only while some transaction is open. `burst`
    /// (10): writes one guest may make at once. `reserve` (1000): credit
    /// the guests that write less lend to those that write more.
    /// `conflicts` (5): transaction commits a guest's writes may make fail
    /// (EAGAIN) before it is paused, as oxenstored (0: off). `conflict-ms`
    /// (50): one conflict point back per this many milliseconds.
    /// `conflict-aggregate` (1): points go to one paused guest at a time
    /// (0: to each).
    #[arg(long = "rate-limit", value_name = "NAME=VALUE")]
    pub rate_limit: Vec<String>,
    /// Bytes of watch events that may wait for a privileged client (a
    /// toolstack or xenstore-watch that stopped reading); past it the
    /// oldest events are dropped, never replies, logged once until it
    /// reads its queue empty (0: unbounded). Default 16777216 (16 MiB).
    #[arg(long = "priv-event-queue", value_name = "BYTES")]
    pub priv_event_queue: Option<usize>,

    /// At most one log line per guest connection per SECONDS about its
    /// watch events (expired unread, too long to send), and per guest
    /// domain about its soft memory quota (crossed, back within),
    /// counting what it stands for (0: every line). Default 10.
    #[arg(long = "guest-log-interval", value_name = "SECONDS")]
    pub guest_log_interval: Option<u64>,

    /// The privileged domain (the control domain). Default 0.
    #[arg(long = "priv-domid", value_name = "DOMID", default_value_t = 0)]
    pub priv_domid: u16,

    /// More log output (repeat for more).
    #[arg(short = 'V', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The Unix socket to serve. Default: $XENSTORED_PATH, else
    /// $XENSTORED_RUNDIR/socket, else /var/run/xenstored/socket — where
    /// Xen's tools look for it.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Where to run: auto (Xen devices if /dev/xen exists, else an embedded
    /// mock-xen), linux, or mock (an embedded mock-xen).
    #[arg(
        long = "platform",
        value_name = "auto|linux|mock",
        default_value = "auto"
    )]
    pub platform: String,

    /// Run on a separate `mock-xen --socket PATH` process instead.
    #[arg(long = "mock-xen", value_name = "PATH")]
    pub mock_xen: Option<PathBuf>,

    /// Take over from the daemon that exec'd us (live update): restore the
    /// state it wrote to $XENSTORED_RUNDIR/state_dump, with the descriptors
    /// it passed down, instead of starting empty. Set by the old daemon (or
    /// by C xenstored's live update), not by hand.
    #[arg(short = 'U', long = "live-update")]
    pub live_update: bool,

    /// With -U: only check that the state in STATE (default
    /// $XENSTORED_RUNDIR/state_dump) can be restored, then exit (0: yes).
    /// The old daemon runs this before it hands over, and keeps serving if
    /// it fails.
    #[arg(
        long = "dry-run",
        value_name = "STATE",
        requires = "live_update",
        num_args = 0..=1,
        require_equals = true
    )]
    pub dry_run: Option<Option<PathBuf>>,

    /// With -U: a pre-copy live update — the old daemon serves on while
    /// this process loads the store from the image IMAGE, then sends the
    /// rest over SOCKET (both inherited descriptors). Set by the old
    /// daemon, not by hand.
    #[arg(
        long = "precopy",
        value_name = "SOCKET,IMAGE",
        requires = "live_update",
        conflicts_with = "dry_run",
        hide = true
    )]
    pub precopy: Option<String>,

    /// Record everything the daemon receives and sends, with its clock, into
    /// DIR (DIR/xenstored-lite.rec), to replay it later with --replay. A live
    /// update keeps recording into the same file.
    #[arg(long = "replay-record", value_name = "DIR")]
    pub replay_record: Option<PathBuf>,

    /// Replay the recording in DIR — no Xen, no mock-xen, no sockets — as
    /// fast as possible, checking every byte sent against the recording
    /// (see --no-verify), then print a summary and exit.
    #[arg(long = "replay", value_name = "DIR", conflicts_with_all = ["replay_record", "live_update"])]
    pub replay: Option<PathBuf>,

    /// With --replay: do not compare what the replayed daemon sends with
    /// the recording (fastest; for benchmarks).
    #[arg(long = "no-verify", requires = "replay")]
    pub no_verify: bool,

    /// Test-only: change the Nth reply (to show that --replay catches it).
    #[arg(long = "test-alter-reply", value_name = "N", hide = true)]
    pub test_alter_reply: Option<u64>,

    /// Test-only: a WRITE of exactly PATH panics the engine (to show that
    /// a crash recovery skips the request that crashed it).
    #[arg(long = "test-panic-on-write", value_name = "PATH", hide = true)]
    pub test_panic_on_write: Option<String>,

    /// Keep a crash journal in the run directory, so that the daemon
    /// started again with the same command line after a crash carries on
    /// where it was: auto (when the run directory is on tmpfs or ramfs),
    /// on, or off.
    #[arg(long = "journal", value_name = "WHEN", default_value = "auto")]
    pub journal: String,

    /// Start the crash journal anew with a snapshot once it is this long.
    #[arg(long = "journal-limit", value_name = "BYTES", hide = true)]
    pub journal_limit: Option<u64>,
}

/// A command-line value that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn name_value(arg: &str, what: &str) -> Result<(String, u64), UsageError> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| UsageError(format!("{what} {arg:?}: expected NAME=VALUE")))?;
    let value = value
        .parse()
        .map_err(|_| UsageError(format!("{what} {arg:?}: {value:?} is not a number")))?;
    Ok((name.to_string(), value))
}

impl Cli {
    /// The run directory, as Xen's tools find it.
    pub fn rundir(&self) -> PathBuf {
        std::env::var_os("XENSTORED_RUNDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(xenring::client::DEFAULT_RUNDIR))
    }

    /// The socket to serve.
    pub fn socket_path(&self) -> PathBuf {
        match &self.socket {
            Some(p) => p.clone(),
            None => xenring::client::default_socket_path(),
        }
    }

    /// Whether to keep a crash journal (`--journal`), and how long it may
    /// grow before a snapshot starts it anew.
    pub fn journal(&self) -> Result<Option<u64>, UsageError> {
        let on = match self.journal.as_str() {
            "on" => true,
            "off" => false,
            "auto" => on_memory_fs(&self.rundir()),
            other => {
                return Err(UsageError(format!(
                    "--journal {other:?}: expected auto, on or off"
                )))
            }
        };
        Ok(on.then(|| self.journal_limit.unwrap_or(JOURNAL_LIMIT)))
    }

    /// The platform to run on.
    pub fn platform_choice(&self) -> Result<PlatformChoice, UsageError> {
        if let Some(path) = &self.mock_xen {
            return Ok(PlatformChoice::Remote(path.clone()));
        }
        match self.platform.as_str() {
            "auto" => Ok(PlatformChoice::Auto),
            "linux" => Ok(PlatformChoice::Linux),
            "mock" => Ok(PlatformChoice::Embedded(
                self.rundir().join(crate::shell::platform::EMBEDDED_SOCKET),
            )),
            other => Err(UsageError(format!(
                "--platform {other:?}: expected auto, linux or mock"
            ))),
        }
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> Result<Config, UsageError> {
        let mut config = Config {
            priv_domid: self.priv_domid,
            test_alter_reply: self.test_alter_reply,
            test_panic_on_write: self.test_panic_on_write.clone(),
            keep_orphans: self.keep_orphans,
            ..Config::default()
        };
        if let Some(bytes) = self.priv_event_queue {
            config.max_priv_event_bytes = bytes;
        }
        if let Some(secs) = self.guest_log_interval {
            config.guest_log_interval_ms = secs.saturating_mul(1000);
        }
        let q = &mut config.quotas;
        for (kind, value) in [
            (QuotaKind::Nodes, self.entry_nb),
            (QuotaKind::NodeSize, self.entry_size),
            (QuotaKind::Watches, self.watch_nb),
            (QuotaKind::Transactions, self.transaction),
            (QuotaKind::NodePermissions, self.perm_nb),
            (QuotaKind::PathMax, self.path_max),
        ] {
            if let Some(v) = value {
                q.set_hard(kind, v);
            }
        }
        for arg in &self.quota {
            let (name, value) = name_value(arg, "--quota")?;
            let kind = QuotaKind::from_name(&name)
                .ok_or_else(|| UsageError(format!("--quota: unknown quota {name:?}")))?;
            q.set_hard(kind, value);
        }
        for arg in &self.quota_soft {
            let (name, value) = name_value(arg, "--quota-soft")?;
            let kind = QuotaKind::from_name(&name)
                .ok_or_else(|| UsageError(format!("--quota-soft: unknown quota {name:?}")))?;
            q.set_soft(kind, value);
        }
        for arg in &self.timeout {
            let (name, value) = name_value(arg, "--timeout")?;
            match name.as_str() {
                "watch-event" => config.watch_event_timeout_ms = value.saturating_mul(1000),
                other => {
                    return Err(UsageError(format!(
                        "--timeout: unknown timeout {other:?} (known: watch-event)"
                    )))
                }
            }
        }
        let t = &mut config.throttle;
        for arg in &self.rate_limit {
            let (name, value) = name_value(arg, "--rate-limit")?;
            let small = |v: u64| {
                u32::try_from(v)
                    .map_err(|_| UsageError(format!("--rate-limit {arg:?}: {v} is too large")))
            };
            match name.as_str() {
                "writes" => t.write_rate = small(value)?,
                "burst" => t.write_burst = small(value)?,
                "reserve" => t.write_reserve = small(value)?,
                "conflicts" => t.conflict_burst = small(value)?,
                "conflict-ms" => t.conflict_period_ms = value,
                "conflict-aggregate" => t.conflict_aggregate = value != 0,
                other => {
                    return Err(UsageError(format!(
                        "--rate-limit: unknown setting {other:?} (known: writes, burst, \
                         reserve, conflicts, conflict-ms, conflict-aggregate)"
                    )))
                }
            }
        }
        Ok(config)
    }
}

/// How long the crash journal grows before a snapshot starts it anew: a
/// recovery replays at most about this much.
pub const JOURNAL_LIMIT: u64 = 16 << 20;

/// Whether `dir` (or, if it does not exist yet, its nearest parent that
/// does) is on tmpfs or ramfs: memory that outlives a process crash and
/// makes a write without fsync enough.
fn on_memory_fs(dir: &std::path::Path) -> bool {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    /// ramfs (`linux/magic.h`), which nix does not name.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    dir.ancestors()
        .find_map(|d| statfs(d).ok())
        .is_some_and(|fs| {
            let t = fs.filesystem_type();
            t == TMPFS_MAGIC || t == RAMFS_MAGIC
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_c_xenstored_flags_set_quotas() {
        let cli = Cli::parse_from([
            "xenstored-lite",
            "-N",
            "-E",
            "50",
            "-W",
            "7",
            "-t",
            "3",
            "-A",
            "2",
            "-S",
            "100",
            "-M",
            "99",
            "-Q",
            "memory=1000",
            "-q",
            "memory=500",
            "-w",
            "watch-event=5",
            "--priv-domid",
            "3",
        ]);
        let c = cli.engine_config().unwrap();
        assert_eq!(c.quotas.hard(QuotaKind::Nodes), 50);
        assert_eq!(c.quotas.hard(QuotaKind::Watches), 7);
        assert_eq!(c.quotas.hard(QuotaKind::Transactions), 3);
        assert_eq!(c.quotas.hard(QuotaKind::NodePermissions), 2);
        assert_eq!(c.quotas.hard(QuotaKind::NodeSize), 100);
        assert_eq!(c.quotas.hard(QuotaKind::PathMax), 99);
        assert_eq!(c.quotas.hard(QuotaKind::Memory), 1000);
        assert_eq!(c.quotas.soft(QuotaKind::Memory), 500);
        assert_eq!(c.watch_event_timeout_ms, 5000);
        assert_eq!(c.priv_domid, 3);
    }

    /// The watch-event limits of our own: their defaults, and the flags.
    #[test]
    fn test_cli_watch_event_limits() {
        let c = Cli::parse_from(["x"]).engine_config().unwrap();
        assert_eq!(c.max_priv_event_bytes, 16 << 20);
        assert_eq!(c.guest_log_interval_ms, 10_000);
        let c = Cli::parse_from([
            "x",
            "--priv-event-queue",
            "4096",
            "--guest-log-interval",
            "3",
        ])
        .engine_config()
        .unwrap();
        assert_eq!(c.max_priv_event_bytes, 4096);
        assert_eq!(c.guest_log_interval_ms, 3000);
    }

    #[test]
    fn test_cli_keep_orphans_off_unless_asked() {
        let config = |args: &[&str]| Cli::parse_from(args).engine_config().unwrap();
        assert!(!config(&["x"]).keep_orphans);
        assert!(config(&["x", "-K"]).keep_orphans);
        assert!(config(&["x", "--keep-orphans"]).keep_orphans);
    }

    #[test]
    fn test_cli_rate_limit_settings() {
        let c = Cli::parse_from(["x"]).engine_config().unwrap();
        assert_eq!(
            c.throttle,
            crate::engine::throttle::ThrottleConfig::default()
        );
        let c = Cli::parse_from([
            "x",
            "--rate-limit",
            "writes=0",
            "--rate-limit",
            "burst=3",
            "--rate-limit",
            "reserve=7",
            "--rate-limit",
            "conflicts=2",
            "--rate-limit",
            "conflict-ms=9",
            "--rate-limit",
            "conflict-aggregate=0",
        ])
        .engine_config()
        .unwrap();
        let t = c.throttle;
        assert_eq!((t.write_rate, t.write_burst, t.write_reserve), (0, 3, 7));
        assert_eq!(
            (t.conflict_burst, t.conflict_period_ms, t.conflict_aggregate),
            (2, 9, false)
        );
        for (arg, needle) in [
            ("often=1", "unknown setting \"often\""),
            ("writes=99999999999", "too large"),
            ("writes", "expected NAME=VALUE"),
        ] {
            let err = Cli::parse_from(["x", "--rate-limit", arg])
                .engine_config()
                .unwrap_err();
            assert!(err.0.contains(needle), "{}", err.0);
        }
    }

    #[test]
    fn test_cli_bad_values_named_in_errors() {
        for (args, needle) in [
            (&["x", "-Q", "bogus=1"][..], "unknown quota \"bogus\""),
            (&["x", "-Q", "memory"][..], "expected NAME=VALUE"),
            (
                &["x", "-w", "watch-event=soon"][..],
                "\"soon\" is not a number",
            ),
        ] {
            let err = Cli::parse_from(args).engine_config().unwrap_err();
            assert!(err.0.contains(needle), "{}", err.0);
        }
        assert!(Cli::parse_from(["x", "--platform", "qemu"])
            .platform_choice()
            .is_err());
    }
}
