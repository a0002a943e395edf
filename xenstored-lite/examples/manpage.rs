//! Writes the man page `xenstored-lite(8)` (roff) to stdout, generated from
//! the daemon's real command line (`xenstored_lite::cli::Cli`), so it cannot
//! drift from `--help`. `scripts/build-deb.sh` runs it for the package:
//!
//! ```sh
//! cargo run -q -p xenstored-lite --example manpage > xenstored-lite.8
//! ```

use clap::CommandFactory;
use xenstored_lite::cli::Cli;

fn main() -> std::io::Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Administration")
        .source(concat!("xenstored-lite ", env!("CARGO_PKG_VERSION")));
    let mut out = std::io::stdout().lock();
    man.render(&mut out)
}
