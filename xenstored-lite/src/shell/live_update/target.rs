//! A live update's target, told without running it, and the command line
//! Xen's C xenstored 4.17 is given when it is the target.
//!
//! C xenstored cannot be dry-run: it ignores options it does not know,
//! writes its pid file before it reads the state, and `--version` starts a
//! real second daemon. So the old process must know what it is about to
//! exec from the file alone ([`identify`]):
//!
//! * one of our own binaries carries [`LIVE_UPDATE_MARKER`] (kept in every
//!   binary that links this module);
//! * C xenstored 4.17 is an ELF whose dynamic section needs
//!   `libxenctrl.so.4.17` (the version is that soname's) and which holds C
//!   xenstored's own usage text and its live-update message, so that `xl`,
//!   `oxenstored` or another tool linking libxenctrl is not taken for it;
//! * Debian's `/usr/sbin/xenstored` is a shell script that picks
//!   `/usr/lib/xen-<version>/bin/xenstored`: a script is refused with the
//!   real binaries it could mean.
//!
//! For C, [`c_command_line`] turns our quotas into C 4.17's options, checks
//! the operator's `-c` words against C 4.17's own option list (from
//! `tools/xenstore/xenstored_core.c`, RELEASE-4.17.7: its `options[]` and
//! getopt string `DE:F:HI::KNPS:t:A:M:Q:q:T:RVW:w:U`), refuses what C would
//! die on after the exec, and adds `-U` once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use object::read::elf::{ElfFile, FileHeader};
use object::{Architecture, FileKind, Object};

use crate::engine::quota::QuotaKind;
use crate::engine::Config;

/// The marker of our own binaries: a daemon built from this crate takes
/// over from this one by live update (migration stream v1 and v2, our
/// `--dry-run`). [`identify`] looks for these bytes in the target; the
/// random tail keeps them from appearing by chance.
#[used]
pub static LIVE_UPDATE_MARKER: [u8; 64] =
    *b"\0xenstored-lite live-update target: stream v1 v2, 7d1f5c3a9e42\0\0";

/// The marker of our binaries that take a pre-copy live update
/// (`--precopy=SOCKET,IMAGE`, `live_update::precopy`): one without it gets
/// the classic hand-over.
#[used]
pub static PRECOPY_MARKER: [u8; 64] =
    *b"\0xenstored-lite live-update target: pre-copy v1, 5e0b93d4a7\0\0\0\0\0";

/// The only C xenstored version whose live update we know.
pub const SUPPORTED_C_VERSION: (u32, u32) = (4, 17);

/// Text of C xenstored's usage (`xenstored_core.c`, `usage()`): only the
/// daemon has it.
const C_USAGE: &[u8] = b"xenstored <options>";

/// C xenstored's live-update message (`xenstored_control.c`): a build
/// without live update (`NO_LIVE_UPDATE`) lacks it.
const C_LIVE_UPDATE: &[u8] = b"No state found after live-update";

/// A string of oxenstored (the OCaml xenstored), which also links
/// libxenctrl.
const OXENSTORED: &[u8] = b"/oxenstored.conf";

/// The soname whose version is C xenstored's.
const LIBXENCTRL: &str = "libxenctrl.so.";

/// Where Debian keeps each Xen version's real programs.
const XEN_LIB: &str = "/usr/lib";

/// Larger files are not read (no xenstored is near this).
const MAX_SIZE: u64 = 1 << 30;

/// What a live update would exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One of our own binaries (it carries [`LIVE_UPDATE_MARKER`]).
    XenstoredLite {
        /// It takes a pre-copy live update (it carries
        /// [`PRECOPY_MARKER`]).
        precopy: bool,
    },
    /// Xen's C xenstored (only [`SUPPORTED_C_VERSION`] is returned).
    CXenstored {
        /// Its Xen version (major, minor), from its libxenctrl soname.
        version: (u32, u32),
    },
}

/// Why a file is not a target a live update can exec.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file cannot be looked at.
    #[error("live-update target {}: {source}", path.display())]
    Inaccessible {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It is not a regular file.
    #[error("live-update target {} is {found}, not a program file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is ("a directory", ...).
        found: &'static str,
    },
    /// No one may execute it.
    #[error("live-update target {} is not executable (mode {mode:04o})", path.display())]
    NotExecutable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Too large to be a xenstored.
    #[error("live-update target {} has {size} bytes: too large for a xenstored", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// It is a script (Debian's `/usr/sbin/xenstored` is one).
    #[error(
        "live-update target {} is a script ({interpreter}), not a xenstored: name the real \
         binary{}",
        path.display(),
        candidates_text(candidates)
    )]
    Script {
        /// The file.
        path: PathBuf,
        /// Its `#!` line, without `#!`.
        interpreter: String,
        /// The real binaries it names or can run, installed or named.
        candidates: Vec<PathBuf>,
    },
    /// Not an ELF file.
    #[error("live-update target {} is not an ELF program ({found})", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What it starts with.
        found: String,
    },
    /// An ELF file that does not parse.
    #[error("live-update target {} is a broken ELF file: {source}", path.display())]
    BadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: object::read::Error,
    },
    /// Built for another machine.
    #[error(
        "live-update target {} is built for {found}, this machine runs {ours}",
        path.display()
    )]
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// Its architecture.
        found: String,
        /// Ours.
        ours: String,
    },
    /// C xenstored of a version we cannot hand over to.
    #[error(
        "live-update target {} is C xenstored {}.{} (it needs libxenctrl.so.{}.{}); only \
         {}.{} is supported",
        path.display(),
        version.0, version.1, version.0, version.1,
        SUPPORTED_C_VERSION.0, SUPPORTED_C_VERSION.1
    )]
    UnsupportedCVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: (u32, u32),
    },
    /// C xenstored without a libxenctrl soname to tell its version by.
    #[error(
        "live-update target {} looks like C xenstored but needs no libxenctrl.so.X.Y \
         (it needs: {}): its version is unknown; only {}.{} is supported",
        path.display(),
        list(needed),
        SUPPORTED_C_VERSION.0, SUPPORTED_C_VERSION.1
    )]
    UnknownCVersion {
        /// The file.
        path: PathBuf,
        /// Its DT_NEEDED libraries.
        needed: Vec<String>,
    },
    /// C xenstored built without live update.
    #[error(
        "live-update target {} is C xenstored {}.{} built without live update",
        path.display(),
        version.0, version.1
    )]
    CWithoutLiveUpdate {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: (u32, u32),
    },
    /// oxenstored, whose live update is its own.
    #[error(
        "live-update target {} is oxenstored (the OCaml xenstored): it cannot take over \
         from this daemon",
        path.display()
    )]
    Oxenstored {
        /// The file.
        path: PathBuf,
    },
    /// Some other program.
    #[error(
        "live-update target {} is neither xenstored-lite nor C xenstored {}.{} (an ELF \
         program that needs: {})",
        path.display(),
        SUPPORTED_C_VERSION.0, SUPPORTED_C_VERSION.1,
        list(needed)
    )]
    Unknown {
        /// The file.
        path: PathBuf,
        /// Its DT_NEEDED libraries.
        needed: Vec<String>,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no shared library".to_string()
    } else {
        items.join(", ")
    }
}

fn candidates_text(candidates: &[PathBuf]) -> String {
    if candidates.is_empty() {
        " (the script does not say which)".to_string()
    } else {
        let names: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        format!(", e.g. {}", names.join(" or "))
    }
}

/// What the live update at `path` would exec, told from the file alone
/// (it is never run): ours, C xenstored 4.17, or a refusal that names the
/// path and what was found.
pub fn identify(path: &Path) -> Result<Target, TargetError> {
    identify_with(path, Path::new(XEN_LIB), MAX_SIZE)
}

/// [`identify`], with Debian's Xen program folders looked for under
/// `xen_lib` (`/usr/lib`) and files larger than `max_size` refused.
fn identify_with(path: &Path, xen_lib: &Path, max_size: u64) -> Result<Target, TargetError> {
    let inaccessible = |source| TargetError::Inaccessible {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(inaccessible)?;
    if !meta.is_file() {
        return Err(TargetError::NotAFile {
            path: path.to_path_buf(),
            found: file_kind(&meta),
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(TargetError::NotExecutable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    if meta.len() > max_size {
        return Err(TargetError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let data = std::fs::read(path).map_err(inaccessible)?;
    classify(path, &data, xen_lib)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Tells the file's contents.
fn classify(path: &Path, data: &[u8], xen_lib: &Path) -> Result<Target, TargetError> {
    if let Some(rest) = data.strip_prefix(b"#!") {
        return Err(script_refusal(path, rest, data, xen_lib));
    }
    let kind = match FileKind::parse(data) {
        Ok(k @ (FileKind::Elf32 | FileKind::Elf64)) => k,
        _ => {
            return Err(TargetError::NotElf {
                path: path.to_path_buf(),
                found: describe_start(data),
            })
        }
    };
    let bad = |source| TargetError::BadElf {
        path: path.to_path_buf(),
        source,
    };
    let elf = match kind {
        FileKind::Elf32 => ElfFacts::read(
            &ElfFile::<object::elf::FileHeader32<object::Endianness>>::parse(data).map_err(bad)?,
        ),
        _ => ElfFacts::read(
            &ElfFile::<object::elf::FileHeader64<object::Endianness>>::parse(data).map_err(bad)?,
        ),
    }
    .map_err(bad)?;
    if let Some(ours) = host_architecture() {
        if elf.architecture != ours {
            return Err(TargetError::WrongArchitecture {
                path: path.to_path_buf(),
                found: format!("{:?}", elf.architecture),
                ours: format!("{ours:?}"),
            });
        }
    }
    let marker: &[u8] = std::hint::black_box(&LIVE_UPDATE_MARKER[..]);
    if contains(data, marker) {
        let precopy: &[u8] = std::hint::black_box(&PRECOPY_MARKER[..]);
        return Ok(Target::XenstoredLite {
            precopy: contains(data, precopy),
        });
    }
    let version = elf.needed.iter().find_map(|n| libxenctrl_version(n));
    let is_c = contains(data, C_USAGE);
    match version {
        Some(version) if is_c => {
            if !contains(data, C_LIVE_UPDATE) {
                Err(TargetError::CWithoutLiveUpdate {
                    path: path.to_path_buf(),
                    version,
                })
            } else if version == SUPPORTED_C_VERSION {
                Ok(Target::CXenstored { version })
            } else {
                Err(TargetError::UnsupportedCVersion {
                    path: path.to_path_buf(),
                    version,
                })
            }
        }
        None if is_c && contains(data, C_LIVE_UPDATE) => Err(TargetError::UnknownCVersion {
            path: path.to_path_buf(),
            needed: elf.needed,
        }),
        Some(_) if contains(data, OXENSTORED) => Err(TargetError::Oxenstored {
            path: path.to_path_buf(),
        }),
        _ => Err(TargetError::Unknown {
            path: path.to_path_buf(),
            needed: elf.needed,
        }),
    }
}

/// What [`classify`] needs from an ELF file.
struct ElfFacts {
    architecture: Architecture,
    /// DT_NEEDED, in order (lossy UTF-8).
    needed: Vec<String>,
}

impl ElfFacts {
    fn read<H: FileHeader>(elf: &ElfFile<'_, H>) -> Result<Self, object::read::Error> {
        let table = elf.elf_dynamic_table()?;
        let mut needed = Vec::new();
        for d in table.iter() {
            if d.tag == object::elf::DT_NEEDED {
                needed.push(String::from_utf8_lossy(table.string(d)?).into_owned());
            }
        }
        Ok(Self {
            architecture: elf.architecture(),
            needed,
        })
    }
}

/// The architecture this process runs on, where we know its name.
fn host_architecture() -> Option<Architecture> {
    if cfg!(target_arch = "x86_64") {
        Some(Architecture::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(Architecture::Aarch64)
    } else if cfg!(target_arch = "x86") {
        Some(Architecture::I386)
    } else if cfg!(target_arch = "arm") {
        Some(Architecture::Arm)
    } else if cfg!(target_arch = "riscv64") {
        Some(Architecture::Riscv64)
    } else {
        None
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// A file's first octets, for a refusal.
fn describe_start(data: &[u8]) -> String {
    if data.is_empty() {
        return "an empty file".to_string();
    }
    let head: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes starting with {}", data.len(), head.join(" "))
}

/// The Xen version in a `libxenctrl.so.MAJOR.MINOR` soname; `None` for
/// any other name (`libxenctrl.so`, `libxenctrl.so.4`,
/// `libxenctrl.so.4.17.0`, another library).
pub fn libxenctrl_version(soname: &str) -> Option<(u32, u32)> {
    let rest = soname.strip_prefix(LIBXENCTRL)?;
    let (major, minor) = rest.split_once('.')?;
    Some((decimal(major)?, decimal(minor)?))
}

/// A plain decimal number (digits only).
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The refusal of a script, with the real binaries it may mean: paths
/// `/usr/lib/xen-*/bin/xenstored` it names, and, if it builds such a path
/// (Debian's wrapper: `/usr/lib/xen-$VERSION/bin/$COMMAND`), the installed
/// `<xen_lib>/xen-*/bin/<name>` for the name it was called by.
fn script_refusal(path: &Path, rest: &[u8], data: &[u8], xen_lib: &Path) -> TargetError {
    let first = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let interpreter = String::from_utf8_lossy(first).trim().to_string();
    let text = String::from_utf8_lossy(data);
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut builds_path = false;
    for (at, _) in text.match_indices("/usr/lib/xen-") {
        builds_path = true;
        let word: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
            .collect();
        let named = PathBuf::from(&word);
        if word.ends_with("/bin/xenstored") && !candidates.contains(&named) {
            candidates.push(named);
        }
    }
    if builds_path {
        if let Some(name) = path.file_name() {
            for found in installed(xen_lib, name) {
                if !candidates.contains(&found) {
                    candidates.push(found);
                }
            }
        }
    }
    TargetError::Script {
        path: path.to_path_buf(),
        interpreter,
        candidates,
    }
}

/// `<xen_lib>/xen-*/bin/<name>` that exist, sorted.
fn installed(xen_lib: &Path, name: &std::ffi::OsStr) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(xen_lib) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("xen-"))
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

// ---------------------------------------------------------------------
// C xenstored 4.17's command line.

/// C's `INT_MAX`: the largest value its options take (`get_optval_int`;
/// the `strtol` ones are stored in an `int`).
const C_INT_MAX: u64 = 2_147_483_647;

/// C's `XENSTORE_REL_PATH_MAX` (xs_wire.h): `-M` is capped to it.
const C_REL_PATH_MAX: u64 = 2048;

/// The largest `-w watch-event=` C takes (it multiplies by 1000 in an
/// `int`).
const C_MAX_TIMEOUT_SECS: u64 = C_INT_MAX / 1000;

/// The settings C xenstored 4.17 must be given to go on as we do: our
/// quotas (0: unlimited, as in our engine) and the few other options C
/// shares with us. Filled from our [`Config`] by [`CQuotas::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CQuotas {
    /// Nodes a guest domain may own: `-E`.
    pub nodes: u64,
    /// Bytes in one node: `-S`.
    pub node_size: u64,
    /// Watches per guest connection: `-W`.
    pub watches: u64,
    /// Open transactions per guest connection: `-t`.
    pub transactions: u64,
    /// Permission entries per node: `-A`.
    pub node_permissions: u64,
    /// Path length below a guest's home: `-M` (C caps it to 2048).
    pub path_max: u64,
    /// Outstanding requests per guest: `-Q outstanding=`.
    pub outstanding: u64,
    /// Nodes one transaction may access: `-Q transaction-nodes=`.
    pub transaction_nodes: u64,
    /// Bytes a guest domain may be charged: `-Q memory=`.
    pub memory: u64,
    /// Bytes past which a guest's memory is logged: `-q memory=`.
    pub memory_soft: u64,
    /// How long an undelivered watch event for a guest is kept, ms (0:
    /// forever): `-w watch-event=` (in whole seconds).
    pub watch_event_timeout_ms: u64,
    /// The privileged domain: `--priv-domid`.
    pub priv_domid: u16,
    /// Keep a dead domain's nodes outside its home: `-K`.
    pub keep_orphans: bool,
    /// Keep messages on stderr: `-N` (recommended: with `-U` C does not
    /// fork either way).
    pub no_fork: bool,
}

impl CQuotas {
    /// Our engine's settings as C's (`no_fork`: whether to give `-N`).
    pub fn from_config(config: &Config, no_fork: bool) -> Self {
        let q = &config.quotas;
        Self {
            nodes: q.hard(QuotaKind::Nodes),
            node_size: q.hard(QuotaKind::NodeSize),
            watches: q.hard(QuotaKind::Watches),
            transactions: q.hard(QuotaKind::Transactions),
            node_permissions: q.hard(QuotaKind::NodePermissions),
            path_max: q.hard(QuotaKind::PathMax),
            outstanding: q.hard(QuotaKind::Outstanding),
            transaction_nodes: q.hard(QuotaKind::TransactionNodes),
            memory: q.hard(QuotaKind::Memory),
            memory_soft: q.soft(QuotaKind::Memory),
            watch_event_timeout_ms: config.watch_event_timeout_ms,
            priv_domid: config.priv_domid,
            keep_orphans: config.keep_orphans,
            no_fork,
        }
    }
}

/// The arguments for C xenstored 4.17 (after `argv[0]`), with what the
/// operator should know about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CCommandLine {
    /// Our settings, then the operator's words (but `-U`), then `-U`.
    pub args: Vec<OsString>,
    /// What C will not do as we did (to be logged).
    pub notes: Vec<CNote>,
}

/// Something about C's command line the operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CNote {
    /// The operator's option sets what one of ours did, to another value:
    /// theirs is given, ours not.
    UserOverride {
        /// The setting (`-E`, `-Q memory`, ...).
        option: String,
        /// Our value.
        ours: String,
        /// The operator's.
        theirs: String,
    },
    /// C cannot take our value: it gets the nearest it can.
    Adjusted {
        /// The setting.
        option: String,
        /// Our value.
        ours: String,
        /// What C gets.
        sent: String,
        /// Why.
        why: &'static str,
    },
    /// The operator's option does nothing in a live update.
    NoEffect {
        /// The option as written.
        option: String,
        /// Why.
        why: &'static str,
    },
}

impl fmt::Display for CNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CNote::UserOverride {
                option,
                ours,
                theirs,
            } => write!(
                f,
                "C xenstored gets {option} {theirs} from the command line given, not ours ({ours})"
            ),
            CNote::Adjusted {
                option,
                ours,
                sent,
                why,
            } => write!(
                f,
                "C xenstored gets {option} {sent}, not ours ({ours}): {why}"
            ),
            CNote::NoEffect { option, why } => write!(f, "{option} has no effect: {why}"),
        }
    }
}

/// Why the operator's command line for C xenstored is refused (C would
/// die on it, or do other than asked, after the exec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CArgsError {
    /// An option C 4.17 does not know.
    #[error(
        "C xenstored 4.17 has no option {option} (after the exec it would ignore it, or exit \
         on its value): leave it out"
    )]
    UnknownOption {
        /// The option as written.
        option: String,
    },
    /// A long option's abbreviation that fits several.
    #[error("{option} is ambiguous for C xenstored 4.17 ({})", candidates.join(", "))]
    AmbiguousOption {
        /// The option as written.
        option: String,
        /// The options it could be.
        candidates: Vec<String>,
    },
    /// An option that needs a value ends the command line.
    #[error("{option} needs a value")]
    MissingValue {
        /// The option.
        option: String,
    },
    /// `--name=value` for an option that takes none.
    #[error("{option} takes no value")]
    UnexpectedValue {
        /// The option as written.
        option: String,
    },
    /// A word that is no option: C exits ("No arguments desired").
    #[error("C xenstored takes no argument {word:?} (it would exit: No arguments desired)")]
    StrayArgument {
        /// The word.
        word: String,
    },
    /// An optional value given as a separate word (`-I off`).
    #[error(
        "{option} {value}: C xenstored takes -I's value only attached (-I{value} or \
         --internal-db={value}); as a separate word it would exit (No arguments desired)"
    )]
    DetachedValue {
        /// The option.
        option: String,
        /// The word after it.
        value: String,
    },
    /// An option that cannot work across a live update.
    #[error("{option} cannot be used for a live update: {why}")]
    Refused {
        /// The option as written.
        option: String,
        /// Why.
        why: &'static str,
    },
    /// A value C would misread or die on.
    #[error("{option} {value:?}: {why}")]
    InvalidValue {
        /// The option.
        option: String,
        /// Its value.
        value: String,
        /// What it must be.
        why: &'static str,
    },
    /// A limit of 0, which in C 4.17 stops guests at once.
    #[error(
        "{option} 0: in C xenstored 4.17 a limit of 0 is not unlimited, it stops guests at \
         once; give a number (2147483647 for no limit)"
    )]
    ZeroLimit {
        /// The option (with the quota's name for -Q).
        option: String,
    },
    /// A quota or timeout name C 4.17 does not know (it would exit).
    #[error("{option} {name:?}: C xenstored 4.17 knows only {known}")]
    UnknownName {
        /// The option.
        option: String,
        /// The name given.
        name: String,
        /// The names it knows.
        known: &'static str,
    },
    /// A NUL byte cannot be passed to `execv`.
    #[error("the command line contains a NUL byte")]
    NulByte,
}

/// Whether an option takes a value (getopt's `has_arg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HasArg {
    No,
    Required,
    Optional,
}

/// One of C 4.17's options.
#[derive(Debug)]
struct COpt {
    /// Its short letter, if the getopt string has it (`--event`,
    /// `--master-domid` and `--priv-domid` are long only).
    short: Option<char>,
    long: &'static str,
    arg: HasArg,
}

const fn opt(short: Option<char>, long: &'static str, arg: HasArg) -> COpt {
    COpt { short, long, arg }
}

/// C 4.17's `options[]` with its getopt string
/// (`DE:F:HI::KNPS:t:A:M:Q:q:T:RVW:w:U`).
const C_OPTIONS: [COpt; 23] = [
    opt(Some('D'), "no-domain-init", HasArg::No),
    opt(Some('E'), "entry-nb", HasArg::Required),
    opt(Some('F'), "pid-file", HasArg::Required),
    opt(None, "event", HasArg::Required),
    opt(None, "master-domid", HasArg::Required),
    opt(Some('H'), "help", HasArg::No),
    opt(Some('N'), "no-fork", HasArg::No),
    opt(None, "priv-domid", HasArg::Required),
    opt(Some('P'), "output-pid", HasArg::No),
    opt(Some('S'), "entry-size", HasArg::Required),
    opt(Some('T'), "trace-file", HasArg::Required),
    opt(Some('t'), "transaction", HasArg::Required),
    opt(Some('A'), "perm-nb", HasArg::Required),
    opt(Some('M'), "path-max", HasArg::Required),
    opt(Some('Q'), "quota", HasArg::Required),
    opt(Some('q'), "quota-soft", HasArg::Required),
    opt(Some('w'), "timeout", HasArg::Required),
    opt(Some('R'), "no-recovery", HasArg::No),
    opt(Some('I'), "internal-db", HasArg::Optional),
    opt(Some('K'), "keep-orphans", HasArg::No),
    opt(Some('V'), "verbose", HasArg::No),
    opt(Some('W'), "watch-nb", HasArg::Required),
    opt(Some('U'), "live-update", HasArg::No),
];

/// An option of the operator's, as C's `getopt_long` reads it.
#[derive(Debug)]
struct UserOpt {
    opt: &'static COpt,
    /// As written (`-E`, `--entry-nb`, `--entry`).
    spelled: String,
    value: Option<String>,
    /// The words it took, to pass on as they are.
    words: Vec<String>,
}

/// Reads `words` as GNU `getopt_long` does with C 4.17's options
/// (clusters `-NV`, attached values `-E100`, `--name=value`, unique
/// abbreviations of long names, a required value from the next word,
/// `--` ending the options); refuses what it would reject.
fn parse_c_args(words: &[&str]) -> Result<Vec<UserOpt>, CArgsError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        i += 1;
        if word == "--" {
            if let Some(stray) = words.get(i) {
                return Err(CArgsError::StrayArgument {
                    word: (*stray).to_string(),
                });
            }
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let o = find_long(name, word)?;
            let spelled = format!("--{name}");
            let mut taken = vec![word.to_string()];
            let value = match (o.arg, value) {
                (HasArg::No, Some(_)) => {
                    return Err(CArgsError::UnexpectedValue { option: spelled })
                }
                (HasArg::Required, None) => {
                    let v = words
                        .get(i)
                        .ok_or_else(|| CArgsError::MissingValue {
                            option: spelled.clone(),
                        })?
                        .to_string();
                    i += 1;
                    taken.push(v.clone());
                    Some(v)
                }
                (_, v) => v,
            };
            if o.arg == HasArg::Optional && value.is_none() {
                check_detached(words.get(i), &spelled)?;
            }
            out.push(UserOpt {
                opt: o,
                spelled,
                value,
                words: taken,
            });
            continue;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) else {
            return Err(CArgsError::StrayArgument {
                word: word.to_string(),
            });
        };
        // Split the cluster into options, each passed on as its own words.
        for (at, c) in cluster.char_indices() {
            let spelled = format!("-{c}");
            let o = C_OPTIONS
                .iter()
                .find(|o| o.short == Some(c))
                .ok_or_else(|| CArgsError::UnknownOption {
                    option: spelled.clone(),
                })?;
            let attached = &cluster[at + c.len_utf8()..];
            match o.arg {
                HasArg::No => out.push(UserOpt {
                    opt: o,
                    spelled: spelled.clone(),
                    value: None,
                    words: vec![spelled],
                }),
                HasArg::Required => {
                    let v = if attached.is_empty() {
                        let v = words
                            .get(i)
                            .ok_or_else(|| CArgsError::MissingValue {
                                option: spelled.clone(),
                            })?
                            .to_string();
                        i += 1;
                        v
                    } else {
                        attached.to_string()
                    };
                    out.push(UserOpt {
                        opt: o,
                        spelled: spelled.clone(),
                        value: Some(v.clone()),
                        words: vec![spelled, v],
                    });
                    break;
                }
                HasArg::Optional => {
                    let v = if attached.is_empty() {
                        check_detached(words.get(i), &spelled)?;
                        None
                    } else {
                        Some(attached.to_string())
                    };
                    let mut w = spelled.clone();
                    if let Some(v) = &v {
                        w.push_str(v);
                    }
                    out.push(UserOpt {
                        opt: o,
                        spelled,
                        value: v,
                        words: vec![w],
                    });
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// An optional value's option followed by a word that is no option: C
/// would take that word for an argument and exit.
fn check_detached(next: Option<&&str>, option: &str) -> Result<(), CArgsError> {
    match next {
        Some(w) if !w.starts_with('-') || *w == "-" => Err(CArgsError::DetachedValue {
            option: option.to_string(),
            value: (*w).to_string(),
        }),
        _ => Ok(()),
    }
}

/// A long option by its name or a unique abbreviation (an exact name
/// wins), as getopt_long finds it.
fn find_long(name: &str, word: &str) -> Result<&'static COpt, CArgsError> {
    if let Some(o) = C_OPTIONS.iter().find(|o| o.long == name) {
        return Ok(o);
    }
    let fits: Vec<&'static COpt> = if name.is_empty() {
        Vec::new()
    } else {
        C_OPTIONS
            .iter()
            .filter(|o| o.long.starts_with(name))
            .collect()
    };
    match fits.as_slice() {
        [one] => Ok(one),
        [] => Err(CArgsError::UnknownOption {
            option: word.split('=').next().unwrap_or(word).to_string(),
        }),
        many => Err(CArgsError::AmbiguousOption {
            option: format!("--{name}"),
            candidates: many.iter().map(|o| format!("--{}", o.long)).collect(),
        }),
    }
}

/// The settings we give C: which option and value, and the key under
/// which an operator's option of the same meaning overrides it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Setting {
    /// A short option with a numeric value (`-E` ...).
    Short(char),
    /// `-Q NAME=` (hard) or `-q NAME=` (soft).
    Quota { soft: bool, name: &'static str },
    /// `-w watch-event=`.
    WatchEvent,
    /// `--priv-domid`.
    PrivDomid,
    /// A flag (`-K`, `-N`).
    Flag(char),
}

impl Setting {
    fn label(&self) -> String {
        match self {
            Setting::Short(c) | Setting::Flag(c) => format!("-{c}"),
            Setting::Quota { soft, name } => format!("-{} {name}", if *soft { 'q' } else { 'Q' }),
            Setting::WatchEvent => "-w watch-event".to_string(),
            Setting::PrivDomid => "--priv-domid".to_string(),
        }
    }

    fn words(&self, value: &str) -> Vec<String> {
        match self {
            Setting::Short(c) => vec![format!("-{c}"), value.to_string()],
            Setting::Quota { soft, name } => vec![
                format!("-{}", if *soft { 'q' } else { 'Q' }),
                format!("{name}={value}"),
            ],
            Setting::WatchEvent => vec!["-w".to_string(), format!("watch-event={value}")],
            Setting::PrivDomid => vec!["--priv-domid".to_string(), value.to_string()],
            Setting::Flag(c) => vec![format!("-{c}")],
        }
    }
}

/// A limit of ours as C's: `0` (unlimited) is C's `INT_MAX` where C 4.17
/// reads 0 as "none" (`zero_is_none`), and values past `INT_MAX` are
/// capped (noted).
fn c_limit(label: &str, ours: u64, zero_is_none: bool, notes: &mut Vec<CNote>) -> u64 {
    if ours == 0 && zero_is_none {
        C_INT_MAX
    } else if ours > C_INT_MAX {
        notes.push(CNote::Adjusted {
            option: label.to_string(),
            ours: ours.to_string(),
            sent: C_INT_MAX.to_string(),
            why: "C's limit is an int",
        });
        C_INT_MAX
    } else {
        ours
    }
}

/// Ours: every setting in [`CQuotas`], in C's spelling.
fn our_settings(q: &CQuotas, notes: &mut Vec<CNote>) -> Vec<(Setting, String)> {
    let mut out = Vec::new();
    for (c, v) in [
        ('E', q.nodes),
        ('S', q.node_size),
        ('W', q.watches),
        ('t', q.transactions),
        ('A', q.node_permissions),
    ] {
        let v = c_limit(&format!("-{c}"), v, true, notes);
        out.push((Setting::Short(c), v.to_string()));
    }
    let path_max = if q.path_max == 0 || q.path_max > C_REL_PATH_MAX {
        notes.push(CNote::Adjusted {
            option: "-M".to_string(),
            ours: if q.path_max == 0 {
                "unlimited".to_string()
            } else {
                q.path_max.to_string()
            },
            sent: C_REL_PATH_MAX.to_string(),
            why: "C 4.17 allows at most XENSTORE_REL_PATH_MAX",
        });
        C_REL_PATH_MAX
    } else {
        q.path_max
    };
    out.push((Setting::Short('M'), path_max.to_string()));
    for (soft, name, v, zero_is_none) in [
        (false, "outstanding", q.outstanding, true),
        (false, "transaction-nodes", q.transaction_nodes, true),
        (false, "memory", q.memory, false),
        (true, "memory", q.memory_soft, false),
    ] {
        let label = format!("-{} {name}", if soft { 'q' } else { 'Q' });
        let v = c_limit(&label, v, zero_is_none, notes);
        out.push((Setting::Quota { soft, name }, v.to_string()));
    }
    let ms = q.watch_event_timeout_ms;
    let secs = ms.div_ceil(1000).min(C_MAX_TIMEOUT_SECS);
    if secs.saturating_mul(1000) != ms {
        notes.push(CNote::Adjusted {
            option: "-w watch-event".to_string(),
            ours: format!("{ms} ms"),
            sent: format!("{secs} s"),
            why: "C takes whole seconds, at most INT_MAX / 1000",
        });
    }
    out.push((Setting::WatchEvent, secs.to_string()));
    out.push((Setting::PrivDomid, q.priv_domid.to_string()));
    if q.keep_orphans {
        out.push((Setting::Flag('K'), String::new()));
    }
    if q.no_fork {
        out.push((Setting::Flag('N'), String::new()));
    }
    out
}

/// A value C reads as an `int` (`get_optval_int`: digits, at most
/// `INT_MAX`; the `strtol` options would misread anything else).
fn c_int(option: &str, value: &str) -> Result<u64, CArgsError> {
    let invalid = || CArgsError::InvalidValue {
        option: option.to_string(),
        value: value.to_string(),
        why: "C takes a decimal number from 0 to 2147483647",
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match value.parse::<u64>() {
        Ok(v) if v <= C_INT_MAX => Ok(v),
        _ => Err(invalid()),
    }
}

/// What one of the operator's options means for [`c_command_line`].
enum Meaning {
    /// Passed on; sets this setting to this value.
    Sets(Setting, u64),
    /// Passed on; nothing of ours.
    Plain,
    /// Passed on, with a note.
    Noted(CNote),
    /// Dropped (`-U`: added once at the end).
    Dropped,
}

/// Checks one option of the operator's.
fn meaning(u: &UserOpt) -> Result<Meaning, CArgsError> {
    let spelled = u.spelled.clone();
    let value = u.value.as_deref().unwrap_or_default();
    let refused = |why| CArgsError::Refused {
        option: spelled.clone(),
        why,
    };
    Ok(match (u.opt.short, u.opt.long) {
        (_, "help") => {
            return Err(refused(
                "C prints its usage and exits: the store would be lost",
            ))
        }
        (_, "no-recovery") => {
            return Err(refused(
                "debug only (C's usage): a store C finds damaged after the restore would be \
                 kept damaged",
            ))
        }
        (_, "live-update") => Meaning::Dropped,
        (_, "no-domain-init") => Meaning::Noted(CNote::NoEffect {
            option: spelled,
            why: "with -U C 4.17 takes dom0's ring from the state",
        }),
        (_, "event") => {
            c_int(&spelled, value)?;
            Meaning::Noted(CNote::NoEffect {
                option: spelled,
                why: "only C's MiniOS build reads it",
            })
        }
        (_, "master-domid") => {
            if c_int(&spelled, value)? != 0 {
                return Err(refused(
                    "the state's master ring is domain 0's: C would look for it elsewhere",
                ));
            }
            Meaning::Plain
        }
        (_, "priv-domid") => Meaning::Sets(Setting::PrivDomid, c_int(&spelled, value)?),
        (Some(c @ ('E' | 'S' | 'W' | 't' | 'A' | 'M')), _) => {
            let v = c_int(&spelled, value)?;
            if v == 0 {
                return Err(CArgsError::ZeroLimit { option: spelled });
            }
            Meaning::Sets(Setting::Short(c), v)
        }
        (Some(c @ ('Q' | 'q')), _) => {
            let soft = c == 'q';
            let (name, v) = value
                .split_once('=')
                .ok_or_else(|| CArgsError::InvalidValue {
                    option: spelled.clone(),
                    value: value.to_string(),
                    why: "C takes NAME=NUMBER",
                })?;
            let known: &[&'static str] = if soft {
                &["memory"]
            } else {
                &["outstanding", "transaction-nodes", "memory"]
            };
            let Some(&name) = known.iter().find(|k| **k == name) else {
                return Err(CArgsError::UnknownName {
                    option: spelled,
                    name: name.to_string(),
                    known: if soft {
                        "memory"
                    } else {
                        "outstanding, transaction-nodes, memory"
                    },
                });
            };
            let label = format!("{spelled} {name}");
            let v = c_int(&label, v)?;
            if v == 0 && name != "memory" {
                return Err(CArgsError::ZeroLimit { option: label });
            }
            Meaning::Sets(Setting::Quota { soft, name }, v)
        }
        (Some('w'), _) => {
            let (name, v) = value
                .split_once('=')
                .ok_or_else(|| CArgsError::InvalidValue {
                    option: spelled.clone(),
                    value: value.to_string(),
                    why: "C takes NAME=SECONDS",
                })?;
            if name != "watch-event" {
                return Err(CArgsError::UnknownName {
                    option: spelled,
                    name: name.to_string(),
                    known: "watch-event",
                });
            }
            let v = c_int(&spelled, v)?;
            if v > C_MAX_TIMEOUT_SECS {
                return Err(CArgsError::InvalidValue {
                    option: spelled,
                    value: value.to_string(),
                    why: "C takes at most 2147483 seconds (it counts ms in an int)",
                });
            }
            Meaning::Sets(Setting::WatchEvent, v)
        }
        (Some(c @ ('K' | 'N')), _) => Meaning::Sets(Setting::Flag(c), 1),
        // -F, -T, -P, -V, -I: passed on as they are.
        _ => Meaning::Plain,
    })
}

/// The arguments (after `argv[0]`) for C xenstored 4.17 taking over by
/// live update: our settings as C's options, then the operator's `-c`
/// words (`user`, split at white space) once checked against C 4.17's
/// options, then `-U` (once, whether or not the operator gave it).
///
/// An operator's option that sets one of ours wins: ours is left out, and
/// a different value is reported in [`CCommandLine::notes`], as are our
/// values C cannot take. A word C would die on after the exec (an option
/// it does not know, a stray argument, a bad value) or an option that
/// cannot work across a live update (`-H`, `-R`, `--master-domid` other
/// than 0) is refused.
pub fn c_command_line(quotas: &CQuotas, user: Option<&str>) -> Result<CCommandLine, CArgsError> {
    let user = user.unwrap_or_default();
    if user.contains('\0') {
        return Err(CArgsError::NulByte);
    }
    let words: Vec<&str> = user.split_whitespace().collect();
    let parsed = parse_c_args(&words)?;
    let mut notes = Vec::new();
    let ours = our_settings(quotas, &mut notes);
    let mut theirs: BTreeMap<Setting, u64> = BTreeMap::new();
    let mut user_words: Vec<String> = Vec::new();
    let mut user_notes = Vec::new();
    for u in &parsed {
        match meaning(u)? {
            Meaning::Sets(s, v) => {
                // C keeps the last.
                theirs.insert(s, v);
            }
            Meaning::Plain => {}
            Meaning::Noted(n) => user_notes.push(n),
            Meaning::Dropped => continue,
        }
        user_words.extend(u.words.iter().cloned());
    }
    let mut args: Vec<OsString> = Vec::new();
    for (setting, value) in &ours {
        match theirs.get(setting) {
            None => args.extend(setting.words(value).into_iter().map(OsString::from)),
            Some(t) => {
                let t = t.to_string();
                let is_flag = matches!(setting, Setting::Flag(_));
                if !is_flag && &t != value {
                    notes.push(CNote::UserOverride {
                        option: setting.label(),
                        ours: value.clone(),
                        theirs: t,
                    });
                }
            }
        }
    }
    // A flag the operator gives and we do not (-K): theirs, noted.
    for setting in theirs.keys() {
        if let Setting::Flag(c) = setting {
            if !ours.iter().any(|(s, _)| s == setting) && *c == 'K' {
                notes.push(CNote::UserOverride {
                    option: setting.label(),
                    ours: "off".to_string(),
                    theirs: "on".to_string(),
                });
            }
        }
    }
    notes.extend(user_notes);
    args.extend(user_words.into_iter().map(OsString::from));
    args.push(OsString::from("-U"));
    Ok(CCommandLine { args, notes })
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
