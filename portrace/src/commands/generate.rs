//! `portrace generate`: the manual pages and shell completions, for packaging.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// `portrace generate`: parsed apart from `Args`, so that neither `--help`, nor the pages,
// nor the completions it writes offer it.
#[derive(Debug, Parser)]
#[command(
    name = "portrace-generate",
    bin_name = "portrace generate",
    version,
    about = "Write portrace's manual pages or shell completions (for packaging: `cargo xtask install` and `cargo xtask dist` run it)"
)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    /// Write portrace.1 and a page for each command (portrace-record.1, ...) into DIR,
    /// which must exist; an existing page is not replaced.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print SHELL's completion script for portrace on standard output.
    Complete {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

impl GenerateWhat {
    pub fn into_config(self) -> crate::manual::Generate {
        match self {
            GenerateWhat::Man { dir } => crate::manual::Generate::Man { dir },
            GenerateWhat::Complete { shell } => crate::manual::Generate::Completion { shell },
        }
    }
}

pub fn execute(what: &crate::manual::Generate) -> anyhow::Result<()> {
    crate::manual::generate(super::manual(), what, &mut std::io::stdout().lock())
}
