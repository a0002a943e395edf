//! XS_CONTROL (C's control.c): one table ([`COMMANDS`]) of the commands,
//! with C xenstored 4.17's names, help texts, argument checks and reply
//! texts (docs/c-compat.md): `xenstore-control` prints a reply as a C
//! string plus a newline, and shows the `help` text after any `EINVAL`, so
//! both must be C's bytes. What only the shell can do (switch its logs,
//! write a file, a live update) reaches it as an [`Action`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xenring::codec::split_args;
use xenring::{DomId, Header, XsErrno};

use super::dispatch::{Reply, Request};
use super::quota::QuotaKind;
use super::{text, Action, ConnId, ConnKind, Engine};

/// An XS_CONTROL command the shell carries out ([`Action::Control`]); the
/// engine has checked its arguments and answered `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellControl {
    /// `log on` (`true`) or `log off`: the access log.
    Log(bool),
    /// `logfile <file>`: (re)open the access log at this path.
    LogFile(String),
}

/// How a command's arguments are read from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Args {
    /// As C's `get_strings()` reads them: the NUL-terminated strings (bytes
    /// after the last NUL are not an argument).
    CStrings,
    /// Every NUL-separated string, a last unterminated one too (what
    /// `live-update` has always taken).
    All,
}

/// What a command's handler is given.
struct ControlRequest<'a> {
    /// The connection that asked.
    conn: ConnId,
    /// The request's header (to answer later).
    header: Header,
    /// The arguments after the command's name.
    args: &'a [String],
}

/// A command's handler: the reply's text, or `None` if the shell answers
/// later ([`Engine::answer_control`]).
type Handler = fn(&mut Engine, &ControlRequest<'_>) -> Result<Option<String>, XsErrno>;

/// One XS_CONTROL command.
struct Command {
    /// Its name, the payload's first string.
    name: &'static str,
    /// Its arguments, as `help` shows them.
    help: &'static str,
    /// How its arguments are read.
    args: Args,
    /// What runs it.
    handler: Handler,
}

const fn command(name: &'static str, help: &'static str, handler: Handler) -> Command {
    Command {
        name,
        help,
        args: Args::CStrings,
        handler,
    }
}

/// The XS_CONTROL commands, in C xenstored 4.17's order and words (`help`
/// prints them as `<name>\t<help>\n`).
static COMMANDS: [Command; 9] = [
    command("check", "", Engine::control_check),
    command("log", "on|off", Engine::control_log),
    Command {
        name: "live-update",
        help: "[-c <cmdline>] [-F] [-t <timeout>] <file>\n    Default timeout is 60 seconds.",
        args: Args::All,
        handler: Engine::control_live_update,
    },
    command("logfile", "<file>", Engine::control_logfile),
    command("memreport", "[<file>]", Engine::control_memreport),
    command("print", "<string>", Engine::control_print),
    command("quota", "[set <name> <val>|<domid>]", |e, r| {
        e.control_quota(false, r.args).map(Some)
    }),
    command("quota-soft", "[set <name> <val>]", |e, r| {
        e.control_quota(true, r.args).map(Some)
    }),
    command("help", "", Engine::control_help),
];

fn find(name: &[u8]) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name.as_bytes() == name)
}

fn none(args: &[String]) -> Result<(), XsErrno> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(XsErrno::EINVAL)
    }
}

fn one(args: &[String]) -> Result<&str, XsErrno> {
    match args {
        [arg] => Ok(arg),
        _ => Err(XsErrno::EINVAL),
    }
}

fn ok() -> Result<Option<String>, XsErrno> {
    Ok(Some("OK".to_string()))
}

impl Engine {
    /// `XS_CONTROL <command> <args>...`: the command's handler from
    /// [`COMMANDS`]; the reply is its text, NUL-terminated.
    pub(super) fn control(&mut self, req: &Request<'_>) -> Reply {
        let payload = req.payload;
        let found = split_args(payload).next().and_then(find);
        let args: Vec<String> = match found.map(|c| c.args) {
            Some(Args::All) => split_args(payload).map(text).collect::<Result<_, _>>()?,
            _ => c_strings(payload).map(text).collect::<Result<_, _>>()?,
        };
        let Some((name, rest)) = args.split_first() else {
            return Err(XsErrno::EINVAL);
        };
        let cmd = found.filter(|c| c.name == name).ok_or(XsErrno::EINVAL)?;
        let ctl = ControlRequest {
            conn: req.conn,
            header: req.hdr,
            args: rest,
        };
        Ok((cmd.handler)(self, &ctl)?.map(|text| {
            let mut out = text.into_bytes();
            out.push(0);
            out
        }))
    }

    fn control_help(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        none(req.args)?;
        Ok(Some(
            COMMANDS
                .iter()
                .map(|c| format!("{}\t{}\n", c.name, c.help))
                .collect(),
        ))
    }

    fn control_check(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        none(req.args)?;
        let problems = self.check();
        Ok(Some(if problems.is_empty() {
            "OK".to_string()
        } else {
            // C repairs and logs; we report what is wrong (a documented
            // difference: only a broken store shows it).
            problems.join("\n") + "\n"
        }))
    }

    fn control_print(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        let line = one(req.args)?;
        self.actions.push(Action::Log(line.to_string()));
        ok()
    }

    fn control_memreport(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        match req.args {
            // C dumps talloc's tree to its log and answers OK; ours answers
            // with the report itself (documented).
            [] => Ok(Some(self.memreport(false))),
            // The shell appends it to the file and answers; a file has
            // room for what each domain's bytes are made of.
            [file] => {
                let report = self.memreport(true);
                self.actions.push(Action::MemReport {
                    conn: req.conn,
                    header: req.header,
                    file: file.clone(),
                    report,
                });
                Ok(None)
            }
            _ => Err(XsErrno::EINVAL),
        }
    }

    fn control_log(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        let on = match one(req.args)? {
            "on" => true,
            "off" => false,
            _ => return Err(XsErrno::EINVAL),
        };
        self.actions.push(Action::Control {
            conn: req.conn,
            command: ShellControl::Log(on),
        });
        ok()
    }

    fn control_logfile(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        let file = one(req.args)?;
        self.actions.push(Action::Control {
            conn: req.conn,
            command: ShellControl::LogFile(file.to_string()),
        });
        ok()
    }

    /// `live-update <args>`: only the shell can carry it out, and it
    /// answers when it knows the outcome.
    fn control_live_update(&mut self, req: &ControlRequest<'_>) -> Result<Option<String>, XsErrno> {
        self.actions.push(Action::LiveUpdate {
            conn: req.conn,
            header: req.header,
            args: req.args.to_vec(),
        });
        Ok(None)
    }

    /// What `memreport` answers: what the store holds, and per domain the
    /// nodes it owns and the bytes it is charged (the memory quota's
    /// figure, `account`); with `detail`, what those bytes are made of
    /// (too long for a reply's payload with many domains).
    fn memreport(&self, detail: bool) -> String {
        let mut s = format!(
            "nodes {}\nwatches {}\nconnections {}\ndomains {}\n",
            self.store.len(),
            self.watches.len(),
            self.conns.len(),
            self.domains.len()
        );
        for (d, u) in self.usages() {
            s.push_str(&format!(
                "domain {d}: {} nodes, {} bytes",
                self.store.account(d).nodes,
                u.total()
            ));
            if detail {
                s.push_str(&format!(
                    " ({} nodes, {} transactions, {} watches, {} output)",
                    u.nodes, u.transactions, u.watches, u.output
                ));
            }
            s.push('\n');
        }
        s
    }

    /// `quota [set <name> <val>|<domid>]` and `quota-soft [set <name>
    /// <val>]`, as C 4.17 parses and prints them.
    fn control_quota(&mut self, soft: bool, args: &[String]) -> Result<String, XsErrno> {
        let table: &[(QuotaKind, &str, &str)] = if soft { C_SOFT_QUOTAS } else { C_HARD_QUOTAS };
        match args {
            [] => {
                let mut s = "Quota settings:\n".to_string();
                for &(q, name, descr) in table {
                    let v = if soft {
                        self.config.quotas.soft(q)
                    } else {
                        self.config.quotas.hard(q)
                    };
                    s.push_str(&format!("{name:<17}: {v:>8} {descr}\n"));
                }
                Ok(s)
            }
            [set, rest @ ..] if set == "set" => {
                let [name, value] = rest else {
                    return Err(XsErrno::EINVAL);
                };
                let v = c_atoi(value);
                if v < 1 {
                    return Err(XsErrno::EINVAL);
                }
                let &(q, _, _) = table
                    .iter()
                    .find(|(_, n, _)| n == name)
                    .ok_or(XsErrno::EINVAL)?;
                let v = v as u64;
                if soft {
                    self.config.quotas.set_soft(q, v);
                } else {
                    self.config.quotas.set_hard(q, v);
                }
                Ok("OK".to_string())
            }
            [domid] if !soft => {
                // C reads the domid with atoi(): "abc" is domain 0.
                let d = DomId::try_from(c_atoi(domid)).map_err(|_| XsErrno::ENOENT)?;
                self.domain_usage(d).ok_or(XsErrno::ENOENT)
            }
            _ => Err(XsErrno::EINVAL),
        }
    }

    /// `quota <domid>`: what a known domain (the privileged one or an
    /// introduced one) uses, in C's layout. Memory is our own accounting
    /// (documented difference): everything the domain is charged, the
    /// figure its memory quota is checked against (`account`).
    fn domain_usage(&self, d: DomId) -> Option<String> {
        if d != self.config.priv_domid && !self.domains.contains_key(&d) {
            return None;
        }
        let priv_domid = self.config.priv_domid;
        let of_domain = |k: &ConnKind| match k {
            ConnKind::Socket => priv_domid == d,
            ConnKind::Domain(x) => *x == d,
        };
        let (mut watches, mut transactions, mut outstanding) = (0, 0, 0);
        for (id, c) in &self.conns {
            if of_domain(&c.kind) {
                watches += self.watches.count(*id);
                transactions += c.transactions.len();
                outstanding += c.outstanding();
            }
        }
        let acct = self.store.account(d);
        let mut s = format!("Domain {d}:\n");
        for (name, v) in [
            ("nodes", u64::from(acct.nodes)),
            ("watches", watches as u64),
            ("transactions", transactions as u64),
            ("outstanding", outstanding as u64),
            ("memory", self.usage(d).total()),
        ] {
            s.push_str(&format!("{name:<16}: {v:>8}\n"));
        }
        Some(s)
    }
}

/// The hard quotas `xenstore-control quota` shows and sets: C 4.17's
/// names, order and descriptions.
const C_HARD_QUOTAS: &[(QuotaKind, &str, &str)] = &[
    (QuotaKind::Nodes, "nodes", "Nodes per domain"),
    (QuotaKind::Watches, "watches", "Watches per domain"),
    (
        QuotaKind::Transactions,
        "transactions",
        "Transactions per domain",
    ),
    (
        QuotaKind::Outstanding,
        "outstanding",
        "Outstanding requests per domain",
    ),
    (
        QuotaKind::TransactionNodes,
        "transaction-nodes",
        "Max. number of accessed nodes per transaction",
    ),
    (
        QuotaKind::Memory,
        "memory",
        "Total Xenstore memory per domain (error level)",
    ),
    (QuotaKind::NodeSize, "node-size", "Max. size of a node"),
    (QuotaKind::PathMax, "path-max", "Max. length of a node path"),
    (
        QuotaKind::NodePermissions,
        "permissions",
        "Max. number of permissions per node",
    ),
];

/// The soft quotas C 4.17 has (only memory).
const C_SOFT_QUOTAS: &[(QuotaKind, &str, &str)] = &[(
    QuotaKind::Memory,
    "memory",
    "Total Xenstore memory per domain (warning level)",
)];

/// The NUL-terminated strings of a payload, as C's `get_strings()` sees
/// them: bytes after the last NUL are not an argument.
fn c_strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = payload.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    split_args(&payload[..end])
}

/// C's `atoi()`: optional blanks and sign, then as many digits as there
/// are; 0 if none. Saturates instead of overflowing.
pub(super) fn c_atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}
