//! How records are shown on standard output: the format and colour flags shared by live
//! tracing and `replay`, and the one sink they make.

use std::io::{self, IsTerminal as _};

use clap::ValueEnum;

use crate::output::{self, Format, Sink};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Text,
    /// One JSON object per line (schema in docs/json.md).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl OutputFormat {
    pub fn format(self) -> Format {
        match self {
            OutputFormat::Text => Format::Text,
            OutputFormat::Json => Format::Json,
            OutputFormat::Csv => Format::Csv,
        }
    }
}

/// The sink writing to standard output in `format`, coloured as `color` says.
pub fn stdout_sink(format: OutputFormat, color: ColorChoice, explain: bool) -> Box<dyn Sink + Send> {
    let stdout = io::stdout();
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout.is_terminal() && crate::color::allowed(),
    };
    let out = Box::new(io::BufWriter::with_capacity(1 << 16, stdout));
    output::sink(format.format(), out, output::TextOptions { explain, ..output::TextOptions::system(color) })
}

/// `--alerts-only` needs a format with rows for alerts.
pub fn check_alerts_only(format: OutputFormat, only: bool) -> anyhow::Result<()> {
    if only && format == OutputFormat::Csv {
        anyhow::bail!(
            "--alerts-only shows alerts, and the CSV format has no rows for them: use --format text or json"
        );
    }
    Ok(())
}
