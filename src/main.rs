//! Entry point: parse the command line, set up logging, run the subcommand, turn the outcome into an exit code.

use std::process::ExitCode;

use costsim_breaker::cli::{self, Command};
use costsim_breaker::telemetry;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    runtime.block_on(start())
}

async fn start() -> ExitCode {
    let cli = cli::parse();
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

/// Caps glibc's malloc at two arenas, before any thread starts. By default each thread that meets contention gets
/// an arena of its own (up to 8 per core) and every arena keeps what was freed in it: `run`'s resident memory grew
/// by a step of 17 MiB (89 to 106 MiB) between its first and second million events on tansu; with two arenas it
/// went from 85.7 MiB after 1M to 77.4 MiB after 5M (BENCHMARKS.md).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator tuning; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
