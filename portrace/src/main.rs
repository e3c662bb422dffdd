//! `portrace`: parse the command line, run, and turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser as _;
use portrace::cli::Args;

fn main() -> ExitCode {
    let config = Args::parse().into_config();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portrace: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portrace::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portrace: {e:#}");
            ExitCode::FAILURE
        }
    }
}
