//! `portrace`: parse the command line, run what it asks for (live tracing, `record`,
//! `replay`, `report`, `diagram`, `top`, `doctor`, `serve`; `generate` for packaging), and turn the
//! outcome into an exit code, listed for `--help` and the manual in `commands::EXIT_STATUS`: 0 on
//! success (a recording cut short that was read up to its cut included), 1 on any error, 2
//! for a bad command line (clap's own); with a traced command (`portrace -- CMD`), the
//! command's status, or 127 when it could not be run; 3 when `--fail-on-alert` was given
//! and an alert fired; for `doctor`, 1 when the core timeline cannot run here.

use std::process::ExitCode;

use portrace::commands::{self, Args};

fn main() -> ExitCode {
    portrace::startup::began();
    portrace::heap::return_large_blocks();
    let task = Args::parse_env();
    // A recording is a file the user names: read with the user's rights, never the
    // program's (a binary given capabilities has them for whoever runs it).
    if task.is_offline() {
        if let Err(e) = portrace::privilege::drop_all() {
            eprintln!("portrace: cannot drop this process's capabilities before reading files: {e}");
            return ExitCode::FAILURE;
        }
    }
    match commands::execute(task) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<portrace::alerts::Fired>().is_some() => {
            eprintln!("portrace: {e}");
            ExitCode::from(portrace::alerts::FIRED_EXIT_CODE)
        }
        Err(e) => {
            eprintln!("portrace: {e:#}");
            if e.downcast_ref::<portrace::command::NotRun>().is_some() {
                ExitCode::from(127)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
