//! `portrace doctor`: what this machine lets portrace do, without tracing.

use crate::doctor::DoctorConfig;

/// `portrace doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// One JSON object on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl DoctorArgs {
    pub fn into_config(self) -> DoctorConfig {
        DoctorConfig { json: self.json }
    }
}

/// Returns the exit status: 1 when the core timeline cannot run here.
pub fn execute(config: DoctorConfig) -> anyhow::Result<u8> {
    crate::doctor::doctor(config)
}
