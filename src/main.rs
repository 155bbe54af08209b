//! Entry point: parse the command line, set up logging, run the subcommand, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;
use costsim_breaker::cli::{self, Cli, Command};
use costsim_breaker::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        restore_sigpipe();
    }
    telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed output pipe end a reporting command quietly, as it ends other Unix tools (`breaker status | head -1`):
/// Rust ignores SIGPIPE, so `println!` would panic instead. Not for `run`, whose sockets must never kill it.
fn restore_sigpipe() {
    // SAFETY: `signal` only changes the process's disposition of SIGPIPE back to the default; no handler runs Rust.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
