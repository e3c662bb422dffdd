//! `portrace`: parse the command line, run what it asks for (live tracing, `record`,
//! `replay`, `report`, `diagram`, `top`, `doctor`, `serve`; `generate` for packaging), and turn the
//! outcome into an exit code, listed for `--help` and the manual in `cli::EXIT_STATUS`: 0 on
//! success (a recording cut short that was read up to its cut included), 1 on any error, 2
//! for a bad command line (clap's own); with a traced command (`portrace -- CMD`), the
//! command's status, or 127 when it could not be run; 3 when `--fail-on-alert` was given
//! and an alert fired; for `doctor`, 1 when the core timeline cannot run here.

use std::process::ExitCode;

use portrace::cli::{Args, Task};

fn main() -> ExitCode {
    portrace::startup::began();
    let task = Args::parse_env();
    // A recording is a file the user names: read with the user's rights, never the
    // program's (a binary given capabilities has them for whoever runs it).
    if task.is_offline() {
        if let Err(e) = portrace::privilege::drop_all() {
            eprintln!("portrace: cannot drop this process's capabilities before reading files: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match task {
        Task::Replay(config) => portrace::replay::replay(config).map(|()| 0),
        Task::Report(config) => portrace::replay::report(config).map(|()| 0),
        Task::Live(config) => block_on(portrace::run::run(config)),
        Task::Record(config) => block_on(portrace::run::record(config)),
        Task::Diagram(config) => block_on(async { portrace::diagram::run(*config).await.map(|()| 0) }),
        Task::Top(config) => portrace::top::top(config).map(|()| 0),
        Task::Doctor(config) => portrace::doctor::doctor(config),
        Task::Generate(what) => {
            portrace::manual::generate(portrace::cli::manual(), &what, &mut std::io::stdout().lock()).map(|()| 0)
        }
        Task::Serve(config) => block_on(portrace::serve::serve(config)),
    };
    match result {
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

/// Runs a tracing task on a single-threaded async runtime.
fn block_on(task: impl std::future::Future<Output = anyhow::Result<u8>>) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(task)
}
