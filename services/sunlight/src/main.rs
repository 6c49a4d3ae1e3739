//! The `sunlight` binary: parses the command line, installs logging and runs the command.

use std::process::ExitCode;

use clap::Parser;
use sunlight_cli::{Cli, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SUNLIGHT_LOG")
                .unwrap_or_else(|_| EnvFilter::new(cli.default_log())),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
