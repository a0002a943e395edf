//! `mock-xen --socket PATH`: the simulated hypervisor as a process.

use std::process::ExitCode;

const USAGE: &str = "usage: mock-xen --socket PATH

Runs a simulated Xen hypervisor (domains, machine memory, grant tables,
event channels, VIRQ_DOM_EXC) serving clients on the Unix socket PATH
(SOCK_SEQPACKET). dom0 (domid 0, privileged) exists from the start; a
toolstack client creates guests. Runs until killed.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--socket" => path.clone(),
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut server = match mock_xen::Server::bind(&path) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mock-xen: cannot listen on {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("mock-xen: serving on {path}");
    match server.run(None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-xen: {e}");
            ExitCode::FAILURE
        }
    }
}
