//! The manual pages and shell completion scripts, generated from the command line's own
//! definition (clap's `Command`), so they always say what the binary accepts. This module
//! owns their content: one page for `portrace` and one per command (`portrace-record(1)`,
//! ...), each with its options, the examples, the exit statuses and cross-references; and
//! the completion scripts clap_complete writes for each shell. Rendering is pure (a page
//! is bytes); [`generate`] only writes them out, never replacing a file
//! ([`crate::outfile`]). `portrace generate` (hidden) is its command; packaging
//! (`cargo xtask install`, `cargo xtask dist`) is its user.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap_mangen::roff::{bold, roman, Inline, Roff};
use clap_mangen::Man;

/// What `portrace generate` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Generate {
    /// The manual pages, into this directory.
    Man { dir: PathBuf },
    /// A shell's completion script, on standard output.
    Completion { shell: clap_complete::Shell },
}

/// What the pages are made from: the command line, and the text clap does not hold as
/// structure.
pub struct Manual<'a> {
    /// The top-level command with its subcommands.
    pub command: clap::Command,
    /// The examples as `--help` prints them: a heading line, then entries of a command
    /// indented by two spaces, its description after two or more spaces or on the
    /// following, more indented lines.
    pub examples: &'a str,
    /// Each exit status with when it is used.
    pub exit_status: &'a [(u8, &'a str)],
}

/// A manual page: its file name (`portrace-record.1`) and its roff source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub file_name: String,
    pub roff: Vec<u8>,
}

/// Mode of the written pages: documentation anyone may read.
const PAGE_MODE: u32 = 0o644;

/// Does what `portrace generate` was asked to: writes the pages into their directory
/// (printing each path), or the completion script to `out`.
pub fn generate(manual: Manual<'_>, what: &Generate, out: &mut impl Write) -> anyhow::Result<()> {
    match what {
        Generate::Man { dir } => {
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory: create it first", crate::escape::text(&dir.display().to_string()));
            }
            for page in pages(&manual)? {
                let path = dir.join(&page.file_name);
                crate::outfile::write_whole(&path, &page.roff, PAGE_MODE, false)?;
                writeln!(out, "{}", path.display())?;
            }
            Ok(())
        }
        Generate::Completion { shell } => {
            let mut command = manual.command;
            let name = command.get_name().to_owned();
            clap_complete::generate(*shell, &mut command, name, out);
            Ok(())
        }
    }
}

/// Every page: the top-level one, then one per visible command, in the order `--help`
/// lists them.
pub fn pages(manual: &Manual<'_>) -> anyhow::Result<Vec<Page>> {
    // The heading `--help` gives the commands is a sentence; a man page's is a word.
    let mut top = manual.command.clone().disable_help_subcommand(true).subcommand_help_heading("COMMANDS");
    top.build();
    let commands: Vec<&clap::Command> = top.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    let name = top.get_name().to_owned();
    let mut see_also: Vec<String> = commands.iter().map(|c| format!("{name}-{}", c.get_name())).collect();
    let mut out = vec![page(&top, manual, &see_also, true).context("rendering the main manual page")?];
    see_also.insert(0, name.clone());
    for command in &commands {
        let others: Vec<String> =
            see_also.iter().filter(|p| **p != format!("{name}-{}", command.get_name())).cloned().collect();
        let rendered =
            page(command, manual, &others, false).with_context(|| format!("rendering the page of {}", command.get_name()))?;
        out.push(rendered);
    }
    Ok(out)
}

/// One page: clap_mangen's sections for `command`, then the examples (top-level page
/// only), notes from the command's after-help, the exit statuses and the other pages.
fn page(command: &clap::Command, manual: &Manual<'_>, see_also: &[String], top: bool) -> io::Result<Page> {
    let program = manual.command.get_name();
    let source = format!("{program} {}", manual.command.get_version().unwrap_or_default());
    let man = Man::new(command.clone()).source(source.trim_end()).manual(format!("{program} manual"));
    let file_name = man.get_filename();
    let mut w = Vec::new();
    man.render_title(&mut w)?;
    man.render_name_section(&mut w)?;
    man.render_synopsis_section(&mut w)?;
    man.render_description_section(&mut w)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut w)?;
    }
    if command.get_subcommands().any(|c| !c.is_hide_set()) {
        man.render_subcommands_section(&mut w)?;
    }
    let mut roff = Roff::new();
    if top {
        examples(&mut roff, manual.examples);
    } else if let Some(notes) = command.get_after_long_help().or_else(|| command.get_after_help()) {
        roff.control("SH", ["NOTES"]);
        paragraphs(&mut roff, &notes.to_string());
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in manual.exit_status {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<Inline> = Vec::new();
    for (i, page) in see_also.iter().enumerate() {
        if i > 0 {
            refs.push(roman(", "));
        }
        refs.push(bold(page.as_str()));
        refs.push(roman("(1)"));
    }
    if !refs.is_empty() {
        refs.push(roman(", "));
    }
    refs.extend([bold("ss"), roman("(8), "), bold("capabilities"), roman("(7)")]);
    roff.text(refs);
    if let Some(version) = manual.command.get_version() {
        roff.control("SH", ["VERSION"]);
        roff.text([roman(format!("{} {version}", manual.command.get_name()))]);
    }
    roff.to_writer(&mut w)?;
    Ok(Page { file_name, roff: single_preamble(&w) })
}

/// The page with only the first of the preambles each clap_mangen section starts with
/// (two lines that define the `Aq` string), so the source reads as one page.
fn single_preamble(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut seen = false;
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(".ie \\n(.g .ds Aq ") && lines.peek().is_some_and(|next| next.starts_with(".el .ds Aq ")) {
            let next = lines.next().unwrap_or_default();
            if !seen {
                out.push_str(line);
                out.push_str(next);
                seen = true;
            }
            continue;
        }
        out.push_str(line);
    }
    out.into_bytes()
}

/// The examples as a tagged list: each command in bold, its description below.
fn examples(roff: &mut Roff, text: &str) {
    roff.control("SH", ["EXAMPLES"]);
    for (command, description) in parse_examples(text) {
        roff.control("TP", []);
        roff.text([bold(command)]);
        if !description.is_empty() {
            roff.text([roman(description)]);
        }
    }
}

/// Splits the `--help` examples into (command, description) pairs.
pub fn parse_examples(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        match (indent, out.last_mut()) {
            (2, _) | (_, None) => {
                let (command, description) = match content.find("  ") {
                    Some(at) => (&content[..at], content[at..].trim()),
                    None => (content, ""),
                };
                out.push((command.to_owned(), description.to_owned()));
            }
            (_, Some((_, description))) => {
                if !description.is_empty() {
                    description.push(' ');
                }
                description.push_str(content);
            }
        }
    }
    out
}

/// Text whose blank lines separate paragraphs.
fn paragraphs(roff: &mut Roff, text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else {
            roff.text([roman(line)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual() -> Manual<'static> {
        crate::commands::manual()
    }

    fn text(page: &Page) -> String {
        String::from_utf8(page.roff.clone()).expect("roff is UTF-8")
    }

    #[test]
    fn one_page_per_visible_command_each_with_exit_status_and_cross_references() {
        let pages = pages(&manual()).unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
        // The main page, then one per command `--help` lists, in its order.
        let mut expected = vec!["portrace.1".to_owned()];
        expected.extend(
            manual().command.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| format!("portrace-{}.1", c.get_name())),
        );
        assert_eq!(names, expected);
        for page in ["portrace-record.1", "portrace-replay.1", "portrace-report.1", "portrace-top.1", "portrace-diagram.1", "portrace-doctor.1"] {
            assert!(names.contains(&page), "{page}: {names:?}");
        }
        for page in &pages {
            let roff = text(page);
            assert_eq!(roff.matches("\n.TH ").count(), 1, "{}: {roff}", page.file_name);
            assert_eq!(roff.matches(".ds Aq").count(), 2, "{}: one preamble:\n{roff}", page.file_name);
            for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "\"EXIT STATUS\"", "\"SEE ALSO\"", "VERSION"] {
                assert!(roff.contains(&format!(".SH {section}\n")), "{} lacks {section}:\n{roff}", page.file_name);
            }
            for (code, _) in crate::commands::EXIT_STATUS {
                assert!(roff.contains(&format!(".TP\n\\fB{code}\\fR\n")), "{}: exit status {code}", page.file_name);
            }
            // Every other page is referred to, and the page itself is not.
            for other in &pages {
                let reference = format!("\\fB{}\\fR(1)", other.file_name.trim_end_matches(".1").replace('-', "\\-"));
                assert_eq!(roff.contains(&reference), other.file_name != page.file_name, "{}: {reference}", page.file_name);
            }
            assert!(!roff.contains("generate"), "{}: the packaging command is hidden", page.file_name);
        }
        let record = text(&pages[1]);
        assert!(record.contains("\\-\\-output") && record.contains("\\-\\-compress"), "{record}");
        assert!(record.contains(".SH NOTES\n") && record.contains("docs/trace\\-format.md"), "{record}");
        let top = text(&pages[0]);
        assert!(top.contains(".SH COMMANDS\n") && top.contains("portrace\\-record(1)"), "{top}");
        assert!(top.contains(".SH EXAMPLES\n") && top.contains("\\fBportrace \\-\\-port 443\\fR"), "{top}");
    }

    #[test]
    fn examples_are_command_and_description_pairs() {
        let examples = parse_examples(crate::commands::manual().examples);
        assert!(examples.len() >= 15, "{examples:?}");
        for (command, description) in &examples {
            assert!(command.starts_with("portrace"), "{command:?}");
            assert!(!command.ends_with(' ') && !description.starts_with(' '), "{command:?} {description:?}");
        }
        let with = |c: &str| examples.iter().find(|(command, _)| command == c).map(|(_, d)| d.as_str());
        assert_eq!(
            with("portrace -- make test"),
            Some("run `make test`, tracing only its sockets and those of every process it starts; lists those left open, exits with its status")
        );
        assert_eq!(with("portrace --addr 10.0.0.0/8 -c 100 --duration 30s"), Some(""));
        assert_eq!(
            parse_examples("Examples:\n  portrace a    does a\n                 and more\n  portrace b\n      b's\n"),
            [("portrace a".to_owned(), "does a and more".to_owned()), ("portrace b".to_owned(), "b's".to_owned())]
        );
    }

    #[test]
    fn completions_offer_commands_and_flags_but_not_the_hidden_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            generate(manual(), &Generate::Completion { shell }, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for word in ["record", "replay", "doctor", "lport", "ring-size", "fail-on-alert"] {
                assert!(script.contains(word), "{shell}: {word}");
            }
            assert!(!script.contains("generate"), "{shell}: offers the hidden command");
        }
    }

    #[test]
    fn pages_are_written_once_and_never_replace_a_file() {
        let dir = std::env::temp_dir().join(format!("portrace-manual-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut listed = Vec::new();
        generate(manual(), &Generate::Man { dir: dir.clone() }, &mut listed).unwrap();
        let listed = String::from_utf8(listed).unwrap();
        let pages = 1 + manual().command.get_subcommands().filter(|c| !c.is_hide_set()).count();
        assert!(pages >= 8, "portrace and its commands");
        assert_eq!(listed.lines().count(), pages, "{listed}");
        assert!(listed.contains("portrace-serve.1"), "{listed}");
        let page = std::fs::read(dir.join("portrace-doctor.1")).unwrap();
        assert!(String::from_utf8(page).unwrap().contains("\n.TH portrace-doctor 1 "));
        let err = generate(manual(), &Generate::Man { dir: dir.clone() }, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("portrace.1 already exists"), "{err}");
        let err = generate(manual(), &Generate::Man { dir: dir.join("nonexistent") }, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
