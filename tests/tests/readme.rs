//! The README's walkthrough, run as the README writes it: the commands are
//! read out of `README.md` itself, so a README that changes without the
//! code (or code that changes without the README) fails here.
//!
//! The daemon is started as the README's first command does (its
//! environment and arguments, in a temporary directory standing for
//! `$PWD`), then "Simulated guest domains join the embedded mock-xen ..."
//! is followed line by line. `cargo run -p PKG [--bin NAME] -- ARGS`
//! becomes the freshly built binary from `tests::bin()` with `ARGS`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use mock_xen::{Connector, Toolstack};
use tests::{bin, have, wait_until, Proc, LIMIT};
use xenring::{Error as XsError, XsErrno};

/// The README, as checked in.
fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The commands of the first ```sh block after the line containing
/// `marker`: continuation lines joined, `# comments` dropped.
fn sh_block_after(text: &str, marker: &str) -> Vec<String> {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("README.md no longer says {marker:?}"));
    let rest = &text[at..];
    let open = rest
        .find("```sh\n")
        .unwrap_or_else(|| panic!("no ```sh block after {marker:?} in README.md"));
    let body = &rest[open + "```sh\n".len()..];
    let close = body
        .find("```")
        .unwrap_or_else(|| panic!("unterminated ```sh block after {marker:?}"));
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in body[..close].lines() {
        let line = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let command = pending.split_whitespace().collect::<Vec<_>>().join(" ");
        pending.clear();
        if !command.is_empty() && !command.starts_with('#') {
            commands.push(command);
        }
    }
    commands
}

/// One README command, ready to run in the walkthrough's directory.
#[derive(Debug, PartialEq)]
struct Step {
    /// `NAME=value` words before the program (`$PWD` replaced).
    env: Vec<(String, String)>,
    /// The program: a workspace binary for `cargo run`, else as written.
    program: PathBuf,
    /// Its arguments.
    args: Vec<String>,
    /// The command as the README writes it, for messages.
    text: String,
}

/// Reads a README command; `$PWD` stands for `pwd`. `cargo run ... -p PKG
/// [--bin NAME] -- ARGS` runs binary NAME (PKG if no `--bin`) from
/// [`bin`]; `export` lines are environment for the steps after them.
fn parse_step(command: &str, pwd: &Path) -> Step {
    let pwd = pwd.to_str().expect("a UTF-8 temporary directory");
    let mut words = command
        .split_whitespace()
        .map(|w| w.replace("$PWD", pwd))
        .peekable();
    let mut env = Vec::new();
    while let Some((name, value)) = words.peek().and_then(|w| w.split_once('=')) {
        env.push((name.to_string(), value.to_string()));
        words.next();
    }
    let program = words
        .next()
        .unwrap_or_else(|| panic!("no program in {command:?}"));
    let rest: Vec<String> = words.collect();
    if program != "cargo" {
        return Step {
            env,
            program: PathBuf::from(program),
            args: rest,
            text: command.to_string(),
        };
    }
    assert_eq!(rest.first().map(String::as_str), Some("run"), "{command}");
    let split = rest.iter().position(|w| w == "--");
    let (cargo_args, args) = match split {
        Some(at) => (&rest[1..at], rest[at + 1..].to_vec()),
        None => (&rest[1..], Vec::new()),
    };
    let value_of = |flag: &str| {
        cargo_args
            .iter()
            .position(|w| w == flag)
            .and_then(|at| cargo_args.get(at + 1))
            .cloned()
    };
    let package = value_of("-p").unwrap_or_else(|| panic!("no -p PACKAGE in {command:?}"));
    let name = value_of("--bin").unwrap_or(package);
    Step {
        env,
        program: bin(&name),
        args,
        text: command.to_string(),
    }
}

impl Step {
    fn command(&self, pwd: &Path, exported: &[(String, String)]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .current_dir(pwd)
            .env_remove("XENSTORED_PATH")
            .env_remove("XENSTORED_RUNDIR")
            .stdin(Stdio::null());
        for (name, value) in exported.iter().chain(&self.env) {
            c.env(name, value);
        }
        c
    }

    /// Runs it to the end; panics with its output unless it succeeded.
    fn run(&self, pwd: &Path, exported: &[(String, String)]) -> String {
        let o = tests::output_within_limit(&mut self.command(pwd, exported), &self.text);
        assert!(
            o.status.success(),
            "{}: {}\n{}{}",
            self.text,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// `xenstore-ls` output as relative path -> value (one space of
/// indentation per level, `name = "value"`).
fn parse_ls(out: &str) -> BTreeMap<String, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut nodes = BTreeMap::new();
    for line in out.lines() {
        let depth = line.len() - line.trim_start_matches(' ').len();
        let (name, value) = line
            .trim_start()
            .split_once(" = ")
            .unwrap_or_else(|| panic!("not a xenstore-ls line: {line:?}"));
        stack.truncate(depth);
        stack.push(name.to_string());
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted value in {line:?}"));
        nodes.insert(stack.join("/"), value.to_string());
    }
    nodes
}

#[test]
fn test_readme_parses_the_commands_it_shows() {
    let text = "x\n```sh\nA=$PWD/run cargo run --release -p pkg --bin \\\n  b -- -x y   # note\n# only a comment\nls /z\n```\n";
    let commands = sh_block_after(text, "x");
    assert_eq!(
        commands,
        vec![
            "A=$PWD/run cargo run --release -p pkg --bin b -- -x y",
            "ls /z"
        ]
    );
    let step = parse_step(&commands[1], Path::new("/p"));
    assert_eq!(step.program, PathBuf::from("ls"));
    assert_eq!(step.args, vec!["/z"]);
    let ls = parse_ls("name = \"g\"\ndata = \"\"\n greeting = \"hi\"\nx = \"\"\n");
    assert_eq!(ls.get("data/greeting").map(String::as_str), Some("hi"));
    assert_eq!(ls.get("x").map(String::as_str), Some(""));
    assert_eq!(ls.len(), 4);
}

#[test]
fn test_readme_walkthrough_adds_three_guests_and_powers_one_off() {
    let text = readme();
    let setup = sh_block_after(&text, "## Set-up");
    let talking = sh_block_after(&text, "### Talking to the daemon");
    let guests = sh_block_after(&text, "Simulated guest domains join the embedded mock-xen");
    let [guest_cmd, ls_cmd, shutdown_cmd] = guests.as_slice() else {
        panic!("the guest walkthrough is no longer three commands: {guests:?}");
    };
    let tool = |c: &str| c.split_whitespace().next().unwrap_or("").to_string();
    for t in [tool(ls_cmd), tool(shutdown_cmd)] {
        if !have(&t) {
            return;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let pwd = dir.path();
    // The daemon, as the first command of the README starts it.
    let start = parse_step(
        setup
            .first()
            .unwrap_or_else(|| panic!("no command under ## Set-up")),
        pwd,
    );
    assert!(
        start.program.ends_with("xenstored-lite"),
        "the README's first command starts {}",
        start.text
    );
    let log = std::fs::File::create(pwd.join("xenstored.log")).unwrap();
    let child = start
        .command(pwd, &[])
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", start.text));
    let mut daemon = Proc { child };
    let daemon_log = || std::fs::read_to_string(pwd.join("xenstored.log")).unwrap_or_default();
    // The rest of the walkthrough uses the README's `export` lines.
    let exported: Vec<(String, String)> = talking
        .iter()
        .filter_map(|c| c.strip_prefix("export "))
        .flat_map(|a| parse_step(&format!("{a} true"), pwd).env)
        .collect();
    let rundir = exported
        .iter()
        .find(|(n, _)| n == "XENSTORED_RUNDIR")
        .map(|(_, v)| PathBuf::from(v))
        .expect("the README exports XENSTORED_RUNDIR for the tools");
    wait_until("the daemon's socket and its mock-xen's", || {
        assert!(
            matches!(daemon.child.try_wait(), Ok(None)),
            "the daemon exited:\n{}",
            daemon_log()
        );
        rundir.join("socket").exists() && rundir.join("mock-xen.sock").exists()
    });

    // mock-xen-guest --count 3: runs until its guests are gone.
    let guest = parse_step(guest_cmd, pwd);
    let count: usize = guest
        .args
        .iter()
        .position(|a| a == "--count")
        .and_then(|at| guest.args.get(at + 1))
        .and_then(|n| n.parse().ok())
        .expect("the walkthrough's --count N");
    assert_eq!(count, 3, "the README says three guests");
    let child = guest
        .command(pwd, &exported)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", guest.text));
    let mut guests = Proc { child };
    let stdout = guests.child.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let mut next_line = |what: &str| -> String {
        let line = lines.recv_timeout(LIMIT).unwrap_or_else(|e| {
            panic!("mock-xen-guest printed no line for {what} within {LIMIT:?} ({e}); so far: {printed:?}")
        });
        printed.push(line.clone());
        line
    };
    for _ in 0..count {
        let line = next_line("a guest coming up");
        assert!(line.contains(") is up"), "{line}");
    }

    // Every guest has its home with `name` and `data/greeting`.
    let mut dom0 = tests::client(&rundir.join("socket"));
    for d in 1..=3u16 {
        for key in ["name", "data/greeting"] {
            let value = dom0
                .read(0, &format!("/local/domain/{d}/{key}"))
                .unwrap_or_else(|e| panic!("domain {d}'s {key}: {e}"));
            assert!(!value.is_empty(), "domain {d}'s {key} is empty");
        }
    }
    // `xenstore-ls /local/domain/1` shows them, found via XENSTORED_RUNDIR.
    let ls = parse_ls(&parse_step(ls_cmd, pwd).run(pwd, &exported));
    for key in ["name", "data/greeting", "control/shutdown"] {
        assert!(ls.contains_key(key), "{ls_cmd} lacks {key}: {ls:?}");
    }
    assert_eq!(
        ls.get("data/greeting").map(String::as_str),
        Some("hello from domain 1")
    );

    // `xenstore-write .../control/shutdown poweroff` destroys domain 1.
    parse_step(shutdown_cmd, pwd).run(pwd, &exported);
    assert_eq!(
        next_line("domain 1 going away"),
        "domain 1 powered off and destroyed"
    );
    wait_until("the daemon to release domain 1", || {
        !dom0.is_domain_introduced(1).unwrap()
    });
    wait_until("domain 1's home to go", || {
        matches!(
            dom0.read(0, "/local/domain/1"),
            Err(XsError::Xs(XsErrno::ENOENT))
        )
    });
    let ts = Toolstack::open(&Connector::remote(rundir.join("mock-xen.sock"))).unwrap();
    wait_until("mock-xen to forget domain 1", || {
        !ts.list().unwrap().iter().any(|d| d.domid == 1)
    });
    // The other two are untouched.
    for d in 2..=3u16 {
        assert!(dom0.is_domain_introduced(d).unwrap());
        assert!(!dom0
            .read(0, &format!("/local/domain/{d}/data/greeting"))
            .unwrap()
            .is_empty());
    }
    assert!(
        matches!(guests.child.try_wait(), Ok(None)),
        "mock-xen-guest keeps running for its other guests"
    );
    assert!(
        matches!(daemon.child.try_wait(), Ok(None)),
        "{}",
        daemon_log()
    );
}
