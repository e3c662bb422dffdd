//! `portrace diagram`: the TCP state diagram drawn from real data. It traces live for
//! `--duration` (ten seconds unless told) or reads a recording (`--from FILE`), counts
//! every transition onto RFC 9293's diagram ([`stats`], [`model`], [`figure`]) and draws
//! it as SVG, Graphviz DOT, Mermaid or text, chosen by `--format` or by the output file's
//! extension. `--conn ID` draws one connection of a recording as a sequence diagram
//! instead ([`sequence`]).

pub mod dot;
pub mod figure;
pub mod mermaid;
pub mod model;
pub mod sequence;
pub mod stats;
pub mod svg;
pub mod text;

use std::io::{self, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::output::{Sink, Start};
use crate::record::{Lost, SocketRecord, Transition};
use crate::engine::replay::replay_into;
use crate::destination::{Output, Progress, RunSetup};
use crate::engine::TraceOptions;
use crate::pipeline::Consumers;
use crate::summary::Summary;
use crate::tracefile::input::Input;
use crate::tracefile::{filter_flags, ReadOptions};
use crate::transition_filter::TransitionFilter;
use figure::Figure;
use stats::Observed;

/// How long a live diagram traces when neither `--duration` nor `--count` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// What the diagram is drawn as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagramFormat {
    /// An SVG picture (the default for a file ending in .svg).
    Svg,
    /// Graphviz DOT, for `dot -Tpng` (.dot, .gv).
    Dot,
    /// A Mermaid flowchart, for Markdown (.mmd, .mermaid).
    Mermaid,
    /// Plain text for a terminal (the default on standard output; .txt).
    Text,
}

impl DiagramFormat {
    /// The format a file name asks for, by its extension.
    pub fn from_path(path: &Path) -> Option<DiagramFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "svg" => DiagramFormat::Svg,
            "dot" | "gv" => DiagramFormat::Dot,
            "mmd" | "mermaid" => DiagramFormat::Mermaid,
            "txt" | "text" => DiagramFormat::Text,
            _ => return None,
        })
    }
}

/// `portrace diagram`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagramConfig {
    /// The live trace (filters, limits); with `from`, only its filter is used.
    pub trace: TraceOptions,
    /// A recording to draw instead of tracing live.
    pub from: Option<PathBuf>,
    pub salvage: bool,
    /// Where to write; standard output when `None`.
    pub output: Option<PathBuf>,
    /// Replace `output` if it exists (`--force`).
    pub force: bool,
    pub format: Option<DiagramFormat>,
    /// Draw this socket's connection as a sequence diagram.
    pub conn: Option<u64>,
}

impl DiagramConfig {
    /// The format to draw in: `--format`, else the output file's extension, else text on
    /// standard output.
    pub fn resolve_format(&self) -> anyhow::Result<DiagramFormat> {
        let format = match (self.format, &self.output) {
            (Some(f), _) => f,
            (None, None) => DiagramFormat::Text,
            (None, Some(path)) => DiagramFormat::from_path(path).with_context(|| {
                format!(
                    "cannot tell the diagram's format from '{}': name the file .svg, .dot, .mmd or .txt, or give --format svg|dot|mermaid|text",
                    path.display()
                )
            })?,
        };
        if self.conn.is_some() && matches!(format, DiagramFormat::Dot | DiagramFormat::Mermaid) {
            bail!("--conn draws a connection as SVG or text, not {format:?}: use --format svg or --format text (or a .svg or .txt file)");
        }
        Ok(format)
    }
}

/// Transitions a live `--conn` run keeps at most (a recording is read twice instead,
/// keeping only the connection's: [`sequence::Kept`]).
pub const LIVE_KEEP_MAX: usize = 200_000;

/// What a trace gave the diagram.
#[derive(Default)]
pub struct Collected {
    pub observed: Observed,
    /// Every transition (up to [`LIVE_KEEP_MAX`]), kept only for a live `--conn`.
    pub all: Option<Vec<Transition>>,
    /// What a recording gave `--conn`.
    pub kept: Option<sequence::Kept>,
    /// Transitions left out of `all` at the cap.
    pub dropped: u64,
}

/// A sink that collects what the diagram needs.
struct Collector(Arc<Mutex<Collected>>);

impl Collector {
    fn with<R>(&self, f: impl FnOnce(&mut Collected) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Sink for Collector {
    fn start(&mut self, start: &Start) -> io::Result<()> {
        self.with(|c| {
            // A recording's host name is whatever its writer put there.
            c.observed.host = crate::escape::text(&start.host).into_owned();
            c.observed.start = Some(start.time);
        });
        Ok(())
    }
    fn socket(&mut self, _: &SocketRecord) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        self.with(|c| {
            c.observed.add(t);
            if let Some(kept) = &mut c.kept {
                kept.first_pass(t);
            }
            if let Some(all) = &mut c.all {
                if all.len() < LIVE_KEEP_MAX {
                    all.push(t.clone());
                } else {
                    c.dropped += 1;
                }
            }
        });
        Ok(())
    }
    fn lost(&mut self, lost: &Lost) -> io::Result<()> {
        self.with(|c| c.observed.lost += lost.count);
        Ok(())
    }
    fn end(&mut self, summary: &Summary) -> io::Result<()> {
        self.with(|c| c.observed.end = Some(summary.end()));
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The live run's [`Output`]: a [`Collector`].
struct Live {
    collected: Arc<Mutex<Collected>>,
    banner: String,
}

impl Output for Live {
    /// The kernel programs are attached: says so on stderr, terminal or not, since the
    /// diagram shows nothing until the end (and tests wait for this line).
    fn open(&mut self, _setup: RunSetup) -> anyhow::Result<Box<dyn Sink + Send>> {
        eprintln!("{}", self.banner);
        Ok(Box::new(Collector(self.collected.clone())))
    }
    fn name(&self) -> String {
        "the diagram".into()
    }
    fn banner(&self) -> String {
        String::new()
    }
    fn progress(&mut self, _progress: &Progress) {}
}

/// Runs `portrace diagram`.
pub async fn run(mut config: DiagramConfig) -> anyhow::Result<()> {
    let format = config.resolve_format()?;
    // Before a live trace: a file in the way is said at once, not after the trace.
    if let Some(path) = &config.output {
        crate::outfile::check_target(path, config.force).context("cannot write the diagram")?;
    }
    let keep_all = config.conn.is_some();
    let collected = match &config.from {
        Some(path) => from_recording(path, &config)?,
        None => {
            crate::preflight::check_privileges()?;
            if config.trace.duration.is_none() && config.trace.count.is_none() {
                config.trace.duration = Some(DEFAULT_DURATION);
            }
            let mut banner = "portrace: tracing TCP state transitions for the diagram".to_string();
            if let Some(d) = config.trace.duration {
                banner.push_str(&format!(" for {}", crate::format::HumanDuration(d.as_nanos() as u64)));
            }
            banner.push_str("; Ctrl-C to draw it now");
            let shared = Arc::new(Mutex::new(Collected { all: keep_all.then(Vec::new), ..Default::default() }));
            let mut out = Live { collected: shared.clone(), banner };
            crate::engine::trace(&config.trace, &mut out).await?;
            let mut collected = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
            collected.observed.filter = filter_flags(&config.trace.filter);
            collected
        }
    };
    let mut collected = collected;
    let drawing = draw(&mut collected, format, config.conn)?;
    write(&drawing, config.output.as_deref(), config.force, format, &collected.observed)
}

/// Reads a recording through the user's filter; for `--conn`, up to three times: the
/// later passes for the connection's possible peers ([`sequence::Kept`]).
fn from_recording(path: &Path, config: &DiagramConfig) -> anyhow::Result<Collected> {
    let input = Input::rereadable(path)?;
    let mut reader = input.open(ReadOptions { salvage: config.salvage })?;
    let recorded = filter_flags(&reader.header().filter);
    let shared = Arc::new(Mutex::new(Collected { kept: config.conn.map(sequence::Kept::new), ..Default::default() }));
    let mut sink = Collector(shared.clone());
    let mut filter = TransitionFilter::new(config.trace.filter.clone());
    let replayed = replay_into(&mut reader, &mut filter, Consumers::writing(&mut sink))?;
    if let Some(w) = replayed.warning {
        eprintln!("portrace: warning: {w}");
    }
    drop(sink);
    let mut collected = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(kept) = &mut collected.kept {
        if kept.wants_second_pass() {
            let mut reader = input.open(ReadOptions { salvage: config.salvage })?;
            let mut filter = TransitionFilter::new(config.trace.filter.clone());
            replay_into(&mut reader, &mut filter, Consumers::writing(&mut Peers(kept, 2)))?;
            if kept.wants_third_pass() {
                let mut reader = input.open(ReadOptions { salvage: config.salvage })?;
                let mut filter = TransitionFilter::new(config.trace.filter.clone());
                replay_into(&mut reader, &mut filter, Consumers::writing(&mut Peers(kept, 3)))?;
            }
        }
    }
    let asked = filter_flags(&config.trace.filter);
    collected.observed.filter = [recorded, asked].into_iter().filter(|f| !f.is_empty()).collect::<Vec<_>>().join(" ");
    Ok(collected)
}

/// The second or third pass of `--conn` over a recording: the possible peers.
struct Peers<'a>(&'a mut sequence::Kept, u8);

impl Sink for Peers<'_> {
    fn start(&mut self, _: &Start) -> io::Result<()> {
        Ok(())
    }
    fn socket(&mut self, _: &SocketRecord) -> io::Result<()> {
        Ok(())
    }
    fn transition(&mut self, t: &Transition) -> io::Result<()> {
        match self.1 {
            2 => self.0.second_pass(t),
            _ => self.0.third_pass(t),
        }
        Ok(())
    }
    fn lost(&mut self, _: &Lost) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The drawing, in `format`.
pub fn draw(collected: &mut Collected, format: DiagramFormat, conn: Option<u64>) -> anyhow::Result<String> {
    if let Some(id) = conn {
        let connection = match collected.kept.take() {
            Some(kept) => {
                if kept.dropped > 0 {
                    eprintln!(
                        "portrace: --conn {id}: drew the first {} transitions of each socket and kept {} of its possible peers' at most; {} more were left out (a narrower --from recording or filter shows them)",
                        sequence::SIDE_MAX,
                        sequence::PEERS_MAX,
                        kept.dropped
                    );
                }
                kept.connection()
            }
            None => {
                if collected.dropped > 0 {
                    eprintln!(
                        "portrace: --conn {id}: kept the first {LIVE_KEEP_MAX} transitions of the live trace; {} later ones were left out (record with `portrace record` and draw with --from to see them)",
                        collected.dropped
                    );
                }
                sequence::find(collected.all.as_deref().unwrap_or(&[]), id)
            }
        }
        .map_err(anyhow::Error::msg)?;
        return Ok(match format {
            DiagramFormat::Svg => sequence::render_svg(&connection),
            _ => sequence::render_text(&connection),
        });
    }
    let figure = Figure::new(&collected.observed);
    Ok(match format {
        DiagramFormat::Svg => svg::render(&figure),
        DiagramFormat::Dot => dot::render(&figure),
        DiagramFormat::Mermaid => mermaid::render(&figure),
        DiagramFormat::Text => text::render(&figure),
    })
}

/// Writes the drawing to `output` ([`crate::outfile`]: mode 0644, never through a link, an
/// existing file replaced only with `force`), or to standard output.
fn write(
    drawing: &str,
    output: Option<&Path>,
    force: bool,
    format: DiagramFormat,
    observed: &Observed,
) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            crate::outfile::write_whole(path, drawing.as_bytes(), crate::outfile::DIAGRAM_MODE, force)
                .context("cannot write the diagram")?;
            if io::stderr().is_terminal() {
                eprintln!(
                    "portrace: wrote {} ({format:?}: {} transitions, {} kinds)",
                    path.display(),
                    observed.transitions,
                    observed.edges.len()
                );
            }
            Ok(())
        }
        None => {
            let mut out = io::stdout().lock();
            match out.write_all(drawing.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing the diagram"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{EndReason, Timestamp};
    use crate::tcp_state::TcpState::{self, *};
    use stats::tests::tr;

    /// A trace like a loopback run's: `n` connections where the client closes first,
    /// `n` where the server does, refusals, resets, a killed TIME_WAIT and a listener.
    fn observed(n: u64) -> Observed {
        let mut o = Observed::default();
        o.host = "lab".into();
        let mut socket = 0;
        let mut add = |o: &mut Observed, at: u64, steps: &[(TcpState, TcpState, u64, Option<EndReason>)]| {
            socket += 1;
            for (i, &(old, new, ns, reason)) in steps.iter().enumerate() {
                let prev = (old != Close && old != Listen).then_some(ns);
                o.add(&crate::record::Transition { reason, ..tr(socket, at + i as u64 * 1000, old, new, prev) });
            }
        };
        o.start = Some(Timestamp { mono_ns: 0, unix_ns: 1_795_920_067_000_000_000 });
        add(&mut o, 1, &[(Close, Listen, 0, None)]);
        for i in 0..n {
            let at = 10_000 + i * 100_000;
            add(&mut o, at, &[(Close, SynSent, 0, None), (SynSent, Established, 60_000 + i, None), (Established, FinWait1, 90_000, None), (FinWait1, FinWait2, 40_000, None), (FinWait2, TimeWait, 12_000, None), (TimeWait, Close, 60_000_000_000, Some(EndReason::ActiveClose))]);
            add(&mut o, at, &[(Listen, SynRecv, 0, None), (SynRecv, Established, 3_000, None), (Established, CloseWait, 85_000, None), (CloseWait, LastAck, 70_000, None), (LastAck, Close, 9_000, Some(EndReason::PassiveClose))]);
        }
        add(&mut o, 5, &[(Close, SynSent, 0, None), (SynSent, Close, 63_500, Some(EndReason::Refused))]);
        add(&mut o, 6, &[(Close, SynSent, 0, None), (SynSent, Established, 50_000, None), (Established, Close, 2_000_000, Some(EndReason::ResetByPeer))]);
        add(&mut o, 7, &[(Listen, SynRecv, 0, None), (SynRecv, Established, 2_000, None), (Established, Close, 1_500_000, Some(EndReason::ResetSent))]);
        add(&mut o, 8, &[(FinWait2, Close, 30_000_000_000, Some(EndReason::FinWait2Timeout))]);
        o.lost = 2;
        o.end = Some(Timestamp { mono_ns: 10_000_000_000, unix_ns: 1_795_920_077_000_000_000 });
        o
    }

    fn drawn(o: &Observed, format: DiagramFormat) -> String {
        draw(&mut Collected { observed: o.clone(), ..Default::default() }, format, None).unwrap()
    }

    #[test]
    fn text_snapshot() {
        insta::assert_snapshot!(drawn(&observed(3), DiagramFormat::Text));
    }

    #[test]
    fn mermaid_snapshot() {
        insta::assert_snapshot!(drawn(&observed(3), DiagramFormat::Mermaid));
    }

    #[test]
    fn dot_names_every_box_and_edge() {
        let dot = drawn(&observed(2), DiagramFormat::Dot);
        for p in model::Place::ALL {
            assert!(dot.contains(&format!("  {} [label=\"{}", p.id(), p.rfc_name())), "{p:?}");
        }
        assert_eq!(dot.matches(" -> ").count(), 20 + 2, "twenty RFC edges and two Linux ones");
        assert!(dot.contains("LISTEN -> SYN_RECEIVED [label=\"rcv SYN / snd SYN,ACK [1]\\n3×\" penwidth=2];"), "{dot}");
    }

    /// The SVG, parsed: every state has its box, every observed (old, new) pair its edge
    /// with its count, in the data and in the visible text.
    fn check_svg(o: &Observed) {
        let svg = drawn(o, DiagramFormat::Svg);
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("the SVG is not XML: {e}\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let states: std::collections::BTreeSet<&str> =
            doc.descendants().filter(|n| n.attribute("class") == Some("state")).filter_map(|n| n.attribute("data-rfc")).collect();
        for name in ["CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"] {
            assert!(states.contains(name), "no box for {name}");
        }
        let edges: Vec<roxmltree::Node<'_, '_>> =
            doc.descendants().filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("edge "))).collect();
        assert_eq!(edges.iter().filter(|n| n.attribute("class") == Some("edge rfc seen") || n.attribute("class") == Some("edge rfc unseen")).count(), 20);
        for ((old, new), stats) in &o.edges {
            let edge = edges
                .iter()
                .find(|n| n.attribute("data-from") == Some(old.name()) && n.attribute("data-to") == Some(new.name()))
                .unwrap_or_else(|| panic!("no edge {old} -> {new} in the SVG"));
            assert_eq!(edge.attribute("data-count"), Some(stats.count.to_string().as_str()), "{old} -> {new}");
            let text: String = edge.descendants().filter(|n| n.is_text()).map(|n| n.text().unwrap()).collect();
            assert!(text.contains(&format!("{}×", stats.count)), "{old} -> {new} does not show its count: {text}");
        }
        for edge in &edges {
            let (from, to) = (edge.attribute("data-from").unwrap(), edge.attribute("data-to").unwrap());
            let seen = o.edges.keys().any(|(a, b)| a.name() == from && b.name() == to);
            assert_eq!(edge.attribute("class") != Some("edge rfc unseen"), seen, "{from} -> {to}");
        }
        let title: String = doc.descendants().find(|n| n.has_tag_name("title")).and_then(|n| n.text()).unwrap().to_string();
        assert!(title.starts_with("TCP state diagram (RFC 9293), observed"), "{title}");
    }

    #[test]
    fn svg_has_every_state_and_every_observed_edge_with_its_count() {
        check_svg(&observed(3));
        check_svg(&observed(1234));
        check_svg(&Observed::default());
        // Transitions the figure has no place for still get an edge.
        let mut odd = observed(1);
        odd.add(&tr(99, 5, CloseWait, Established, None));
        odd.add(&tr(99, 5, Listen, NewSynRecv, None));
        odd.add(&tr(98, 5, SynRecv, Close, Some(4)));
        odd.add(&tr(97, 5, Closing, Close, Some(4)));
        odd.add(&tr(96, 5, CloseWait, Close, Some(4)));
        odd.add(&tr(95, 5, FinWait1, Close, Some(4)));
        odd.host = "a<b&\"c\"".into();
        check_svg(&odd);
    }

    #[test]
    fn the_format_comes_from_the_flag_or_the_file_name() {
        let config = |format, output: Option<&str>, conn| DiagramConfig {
            trace: TraceOptions::new(crate::filter::FilterSpec::default(), 4 << 20),
            from: None,
            salvage: false,
            output: output.map(PathBuf::from),
            force: false,
            format,
            conn,
        };
        let f = |format, output, conn| config(format, output, conn).resolve_format().map_err(|e| e.to_string());
        assert_eq!(f(None, None, None), Ok(DiagramFormat::Text));
        assert_eq!(f(None, Some("tcp.svg"), None), Ok(DiagramFormat::Svg));
        assert_eq!(f(None, Some("tcp.GV"), None), Ok(DiagramFormat::Dot));
        assert_eq!(f(None, Some("x.mmd"), None), Ok(DiagramFormat::Mermaid));
        assert_eq!(f(Some(DiagramFormat::Dot), Some("x.svg"), None), Ok(DiagramFormat::Dot));
        let err = f(None, Some("tcp.png"), None).unwrap_err();
        assert!(err.contains("cannot tell the diagram's format from 'tcp.png'"), "{err}");
        let err = f(None, Some("c.mmd"), Some(4)).unwrap_err();
        assert!(err.contains("--conn draws a connection as SVG or text"), "{err}");
    }

    /// `diagram -o FILE` leaves an existing FILE alone unless --force is given, like
    /// `record`, and says so before reading or tracing anything.
    #[test]
    fn an_existing_output_is_replaced_only_with_force() {
        let dir = std::env::temp_dir().join(format!("portrace-diagram-force-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let out = dir.join("tcp.svg");
        std::fs::write(&out, "mine").unwrap();
        let out_arg = out.to_str().unwrap();
        let run_with = |extra: &[&str]| {
            let mut argv = vec!["portrace", "diagram", "--from", "/nonexistent/portrace-test.ptr", "-o", out_arg];
            argv.extend_from_slice(extra);
            let Ok(crate::commands::Task::Diagram(config)) = crate::commands::Args::try_parse_task(argv, None) else {
                panic!("not a diagram");
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            format!("{:#}", runtime.block_on(run(*config)).unwrap_err())
        };
        let err = run_with(&[]);
        assert!(err.contains("already exists") && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
        // With --force the file is no obstacle: what fails is the missing recording.
        let err = run_with(&["--force"]);
        assert!(!err.contains("already exists") && err.contains("portrace-test.ptr"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
