//! Entry point: parse the command line, set up logging, run the subcommand, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;
use costsim_breaker::cli::{self, Cli};
use costsim_breaker::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
