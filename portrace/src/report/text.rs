//! The text report: aligned tables for people.

use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::clock::Rfc3339;
use crate::format::{errno, HumanDuration};

/// A duration cell: `?` when unknown, `>=` in front of a lower bound.
pub(super) fn duration_text(ns: Option<u64>, at_least: bool) -> String {
    match ns {
        None => "?".to_string(),
        Some(ns) if at_least => format!(">={}", HumanDuration(ns)),
        Some(ns) => HumanDuration(ns).to_string(),
    }
}

fn sample_text(sample: Option<Sample>) -> String {
    sample.map_or_else(|| "-".to_string(), |s| duration_text(Some(s.ns), s.at_least))
}

/// A percentile, `~` before it when it comes from a histogram.
fn approximate_text(sample: Option<Sample>, approximate: bool) -> String {
    match sample {
        Some(_) if approximate => format!("~{}", sample_text(sample)),
        _ => sample_text(sample),
    }
}

/// A command name for a table: anything but printable ASCII as `?`, so that a process
/// name cannot break the alignment or send escape sequences.
fn comm_text(comm: &Comm) -> String {
    comm.as_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '?' })
        .collect()
}

/// `pid/comm`, or `-`.
pub(super) fn owner_text(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "-".to_string(), |o| format!("{}/{}", o.pid, comm_text(&o.comm)))
}

/// `addr:port` (`[v6]:port`), or `*:*` for no address at all (a listener's remote end).
fn endpoint_text((addr, port): (IpAddr, u16)) -> String {
    if addr.is_unspecified() && port == 0 {
        "*:*".to_string()
    } else {
        SocketAddr::new(addr, port).to_string()
    }
}

/// How a row ended: `open`, or the reason, the error and the retransmissions.
pub(super) fn ending_text(c: &Conn) -> String {
    let Some(ending) = c.ending.filter(|_| c.now.is_none()) else {
        return "open".to_string();
    };
    let mut text = ending.reason.map_or("closed", EndReason::describe).to_string();
    if let Some(errno) = ending.error {
        text.push_str(&format!(" ({})", errno::tcp_text(errno)));
    }
    if ending.retransmits > 0 {
        let s = if ending.retransmits == 1 { "" } else { "s" };
        text.push_str(&format!(", after {} retransmit{s}", ending.retransmits));
    }
    text
}

/// A row's stays: `SYN_SENT 84.1us > ESTABLISHED 2.30s > ...`, `...` where states were
/// missed, the ongoing stay last.
pub(super) fn states_text(c: &Conn, end: Timestamp) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(c.stays.len() + 1);
    for stay in &c.stays {
        if stay.gap_before {
            parts.push("...".to_string());
        }
        parts.push(format!("{} {}", stay.state, duration_text(stay.ns, stay.at_least)));
    }
    if c.stays_cut > 0 {
        parts.push(format!("[{} not kept]", plural(c.stays_cut, "more stay", "more stays")));
    }
    if let Some((state, ns)) = Report::ongoing(c, end) {
        parts.push(format!("{state} {}", duration_text(Some(ns), true)));
    }
    if parts.is_empty() {
        return "-".to_string();
    }
    parts.join(" > ")
}

/// An aligned table: columns separated by two spaces, the last one unpadded.
struct Table {
    heads: Vec<&'static str>,
    /// Right-aligned columns (numbers, durations).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns given as `(head, right-aligned)`.
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            heads: columns.iter().map(|&(h, _)| h).collect(),
            right: columns.iter().map(|&(_, r)| r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.heads.len());
        self.rows.push(cells);
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.heads.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let heads: Vec<String> = self.heads.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&heads).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.len();
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < cells.len() {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            writeln!(w, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The connection table's classes, most interesting first.
fn interest(c: &Conn, role: Role) -> u8 {
    if role == Role::Listener {
        0
    } else if c.now.is_none() && c.ending.is_some_and(|e| e.abnormal()) {
        1
    } else if c.now.is_some() {
        2
    } else {
        3
    }
}

const CLASS_NAMES: [&str; 4] = ["listeners", "ended abnormally", "still open", "closed normally"];

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Report {
    /// The report for people; see the module documentation.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let a = self.analysis();
        let mut out = BufWriter::new(w);
        self.text_totals(&mut out, &a)?;
        self.text_connections(&mut out, &a)?;
        self.text_matrix(&mut out)?;
        self.text_time_in_state(&mut out, &a)?;
        let top = self.options.top;
        writeln!(out, "\nSlowest client handshakes (time in SYN_SENT, top {top})")?;
        self.text_picks(&mut out, &a.client_handshakes, TcpState::SynSent)?;
        writeln!(out, "\nSlowest server handshakes (time in SYN_RECV, top {top})")?;
        self.text_picks(&mut out, &a.server_handshakes, TcpState::SynRecv)?;
        writeln!(out, "\nLongest CLOSE_WAITs (the application has not closed yet; top {top})")?;
        self.text_picks(&mut out, &a.close_waits, TcpState::CloseWait)?;
        self.text_peers(&mut out, &a)?;
        if let Some(alerts) = &self.alerts {
            alerts.write_text(&mut out)?;
        }
        out.flush()
    }

    fn text_totals(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        let start = self.start(a.end);
        let span = a.end.mono_ns.saturating_sub(start.mono_ns);
        let inventory = self.conns.iter().filter(|c| c.inventory).count() as u64;
        writeln!(w, "portrace report")?;
        writeln!(
            w,
            "  trace        {} to {} ({})",
            Rfc3339::new(start.unix_ns),
            Rfc3339::new(a.end.unix_ns),
            HumanDuration(span)
        )?;
        writeln!(w, "  transitions  {}", self.transitions)?;
        writeln!(
            w,
            "  connections  {}: {}, {}, {}; {} from the start-up inventory, {} at the end",
            self.conns.len(),
            plural(a.listeners, "listener", "listeners"),
            plural(a.clients, "client", "clients"),
            plural(a.servers, "server", "servers"),
            inventory,
            plural(a.open_at_end, "still open", "still open"),
        )?;
        if self.unmatched_children > 0 {
            writeln!(
                w,
                "               {} accepted by no listener of the trace",
                plural(self.unmatched_children, "server connection", "server connections")
            )?;
        }
        self.text_cut(w)?;
        let lost = self.lost_total();
        if lost == 0 {
            writeln!(w, "  lost         none")?;
            return Ok(());
        }
        let causes: Vec<String> = CAUSES
            .into_iter()
            .filter(|&c| self.lost[cause_slot(c)] > 0)
            .map(|c| format!("{} {}", c.name(), self.lost[cause_slot(c)]))
            .collect();
        writeln!(
            w,
            "  lost         {} ({})",
            plural(lost, "transition", "transitions"),
            causes.join(", ")
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "!! WARNING: {} LOST: every figure below may be incomplete.",
            plural(lost, "TRANSITION WAS", "TRANSITIONS WERE")
        )?;
        writeln!(
            w,
            "!! Connections can be missing, and states and durations unknown (`?`) or wrong."
        )
    }

    /// What the report's bounds left out, said under the totals when anything was.
    fn text_cut(&self, w: &mut impl Write) -> io::Result<()> {
        let cut = &self.cut;
        if cut.transitions > 0 || cut.sockets > 0 {
            let mut parts = Vec::new();
            if cut.transitions > 0 {
                let transitions = plural(cut.transitions, "transition", "transitions");
                parts.push(format!("{transitions} ({} begun)", cut.births));
            }
            if cut.sockets > 0 {
                parts.push(plural(cut.sockets, "socket of the inventory", "sockets of the inventory"));
            }
            writeln!(
                w,
                "  NOT KEPT     the report keeps the first {ROWS_MAX} connections as rows; after them \
                 {} count only in the totals, the matrix and time in state (not in the rows, \
                 lists, groups or TIME_WAIT per peer)",
                parts.join(" and "),
            )?;
        }
        if cut.stays > 0 {
            writeln!(
                w,
                "  NOT KEPT     {} after the first {STAYS_KEPT} of their connection: counted in \
                 time in state, the lists and TIME_WAIT per peer, not shown in the rows or the \
                 groups by port and process",
                plural(cut.stays, "stay", "stays"),
            )?;
        }
        Ok(())
    }

    fn text_connections(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        let shown: Vec<usize> = if a.order.len() <= TEXT_ROWS {
            a.order.clone()
        } else {
            let mut ranked = a.order.clone();
            ranked.sort_by_key(|&row| {
                let c = &self.conns[row];
                (interest(c, a.roles[row]), std::cmp::Reverse(Self::lifetime(c, a.end).0))
            });
            ranked.truncate(TEXT_ROWS);
            // Back to order of first sight: `order` ranks every row.
            let mut rank = vec![0usize; self.conns.len()];
            for (i, &row) in a.order.iter().enumerate() {
                rank[row] = i;
            }
            ranked.sort_by_key(|&row| rank[row]);
            ranked
        };
        writeln!(w, "\nConnections ({}, in order of first sight)", self.conns.len())?;
        let mut table = Table::new(&[
            ("SOCKET", true),
            ("ROLE", false),
            ("OWNER", false),
            ("LOCAL", false),
            ("REMOTE", false),
            ("START", true),
            ("LIFETIME", true),
            ("CHILDREN", true),
            ("END", false),
            ("STATES", false),
        ]);
        let start = self.start(a.end);
        for &row in &shown {
            let c = &self.conns[row];
            let role = a.roles[row];
            let (lifetime, at_least) = Self::lifetime(c, a.end);
            table.row(vec![
                c.socket.to_string(),
                role.name().to_string(),
                owner_text(c.owner.as_ref()),
                endpoint_text((c.ends.saddr, c.ends.sport)),
                endpoint_text((c.ends.daddr, c.ends.dport)),
                format!("+{}", HumanDuration(c.since.mono_ns.saturating_sub(start.mono_ns))),
                duration_text(Some(lifetime), at_least),
                if role == Role::Listener { c.children.to_string() } else { "-".to_string() },
                ending_text(c),
                states_text(c, a.end),
            ]);
        }
        table.write(w)?;
        if shown.len() < self.conns.len() {
            let mut hidden = [0u64; 4];
            let mut is_shown = vec![false; self.conns.len()];
            for &row in &shown {
                is_shown[row] = true;
            }
            for (row, c) in self.conns.iter().enumerate() {
                if !is_shown[row] {
                    hidden[usize::from(interest(c, a.roles[row]))] += 1;
                }
            }
            let parts: Vec<String> = hidden
                .iter()
                .zip(CLASS_NAMES)
                .filter(|&(&n, _)| n > 0)
                .map(|(n, name)| format!("{n} {name}"))
                .collect();
            writeln!(
                w,
                "... {} not shown ({}); the JSON report has every row",
                plural(
                    (self.conns.len() - shown.len()) as u64,
                    "more connection",
                    "more connections"
                ),
                parts.join(", ")
            )?;
        }
        writeln!(
            w,
            "START: time since the trace began. Durations: \">=\" at least (older than the trace, \
             or still going at the end), \"?\" unknown, \"...\" states missed."
        )
    }

    fn text_matrix(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "\nTransitions (rows: from, columns: to)")?;
        let from: Vec<TcpState> = LIFE_ORDER
            .into_iter()
            .filter(|&s| self.matrix[slot(s)].iter().any(|&n| n > 0))
            .collect();
        let to: Vec<TcpState> = LIFE_ORDER
            .into_iter()
            .filter(|&s| self.matrix.iter().any(|row| row[slot(s)] > 0))
            .collect();
        if from.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut columns = vec![("FROM \\ TO", false)];
        columns.extend(to.iter().map(|s| (s.name(), true)));
        let mut table = Table::new(&columns);
        for &old in &from {
            let mut cells = vec![old.name().to_string()];
            cells.extend(to.iter().map(|&new| match self.matrix[slot(old)][slot(new)] {
                0 => ".".to_string(),
                n => n.to_string(),
            }));
            table.row(cells);
        }
        table.write(w)
    }

    fn text_time_in_state(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        writeln!(
            w,
            "\nTime in state (complete stays; nearest-rank percentiles of exact samples; {} unknown)",
            a.unknown_durations
        )?;
        stats_table(None, [(String::new(), &a.time_in_state[..])]).write(w)?;
        writeln!(
            w,
            "COUNT: stays with a known time, LOWER of them lower bounds; UNKNOWN and AT_END \
             (still in the state at the end) are not in COUNT."
        )?;
        if a.time_in_state.iter().any(|s| s.approximate) {
            writeln!(
                w,
                "~: a state with more than {EXACT_SAMPLES_MAX} samples has percentiles from a \
                 histogram, within 1/32 of the exact value (MAX stays exact)."
            )?;
        }
        let groups_cut = self.cut.stays > 0 || self.cut.transitions > 0;
        if let Some(groups) = &a.by_port {
            writeln!(w, "\nTime in state by service port (local port of listeners and servers, remote port of clients)")?;
            if groups_cut {
                writeln!(w, "(from the stays the rows keep: see NOT KEPT above)")?;
            }
            let groups = groups.iter().map(|(port, stats)| (port.to_string(), &stats[..]));
            stats_table(Some("PORT"), groups).write(w)?;
        }
        if let Some(groups) = &a.by_process {
            writeln!(w, "\nTime in state by process (owner's command name)")?;
            if groups_cut {
                writeln!(w, "(from the stays the rows keep: see NOT KEPT above)")?;
            }
            let groups = groups.iter().map(|(comm, stats)| {
                (comm.as_ref().map_or_else(|| "-".to_string(), comm_text), &stats[..])
            });
            stats_table(Some("PROCESS"), groups).write(w)?;
        }
        Ok(())
    }

    fn text_picks(&self, w: &mut impl Write, picks: &[Pick], state: TcpState) -> io::Result<()> {
        if picks.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut table = Table::new(&[
            ("SOCKET", true),
            ("OWNER", false),
            ("LOCAL", false),
            ("REMOTE", false),
            ("TIME", true),
            ("THEN", false),
        ]);
        for pick in picks {
            let c = &self.conns[pick.row];
            let then = match pick.then {
                None => format!("still in {state} at the end (ongoing)"),
                Some(TcpState::Close) => format!("CLOSE: {}", ending_text(c)),
                Some(next) => next.name().to_string(),
            };
            table.row(vec![
                c.socket.to_string(),
                owner_text(c.owner.as_ref()),
                endpoint_text((c.ends.saddr, c.ends.sport)),
                endpoint_text((c.ends.daddr, c.ends.dport)),
                duration_text(Some(pick.ns), pick.at_least),
                then,
            ]);
        }
        table.write(w)
    }

    fn text_peers(&self, w: &mut impl Write, a: &Analysis) -> io::Result<()> {
        writeln!(w, "\nTIME_WAIT by peer (connections seen in TIME_WAIT, by remote address)")?;
        if a.peers.is_empty() {
            return writeln!(w, "(none)");
        }
        let mut table = Table::new(&[("PEER", false), ("TIME_WAIT", true), ("AT_END", true)]);
        for p in a.peers.iter().take(self.options.top) {
            table.row(vec![p.addr.to_string(), p.count.to_string(), p.at_end.to_string()]);
        }
        table.write(w)?;
        if a.peers.len() > self.options.top {
            let more = (a.peers.len() - self.options.top) as u64;
            writeln!(
                w,
                "... {} not shown; the JSON report has every peer",
                plural(more, "more peer", "more peers")
            )?;
        }
        Ok(())
    }
}

/// A time-in-state table; with `group`, a first column naming each group of rows (on its
/// first row only).
fn stats_table<'a>(
    group: Option<&'static str>,
    groups: impl IntoIterator<Item = (String, &'a [Stats])>,
) -> Table {
    let mut columns = Vec::new();
    if let Some(head) = group {
        columns.push((head, false));
    }
    columns.extend([
        ("STATE", false),
        ("COUNT", true),
        ("P50", true),
        ("P90", true),
        ("P99", true),
        ("MAX", true),
        ("LOWER", true),
        ("UNKNOWN", true),
        ("AT_END", true),
    ]);
    let mut table = Table::new(&columns);
    for (name, stats) in groups {
        for (i, s) in stats.iter().enumerate() {
            let mut cells = Vec::with_capacity(columns.len());
            if group.is_some() {
                cells.push(if i == 0 { name.clone() } else { String::new() });
            }
            cells.extend([
                s.state.name().to_string(),
                s.count.to_string(),
                approximate_text(s.p50, s.approximate),
                approximate_text(s.p90, s.approximate),
                approximate_text(s.p99, s.approximate),
                sample_text(s.max),
                s.lower_bounds.to_string(),
                s.unknown.to_string(),
                s.at_end.to_string(),
            ]);
            table.row(cells);
        }
    }
    table
}
