//! Drawing `portrace top` with ratatui, from the [`Top`] model alone: a title bar (source,
//! clock, totals, losses, pause), the open sockets per state, the sockets table (new ones,
//! state changes and closed ones marked and coloured), the pane of recent transitions, a
//! key line or the filter being typed, and the help and timeline windows over them.
//! Markers (`+` new, `*` changed, `x` closed) say in text what the colours say, for
//! terminals without colour and for the snapshot tests.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::buffer::Buffer;
use ratatui::Frame;

use crate::escape;
use crate::clock::{LocalTime, Zone};
use crate::format::{errno, CompactDuration};
use crate::record::{Timestamp, Transition};
use crate::tcp_state::TcpState;

use super::input::HELP;
use super::model::{endpoint, Change, Conn, Cursor, Overlay, Top};

/// The smallest screen the full view is drawn on; below it, a message says so.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

/// Where each part of the screen goes.
struct Areas {
    title: Rect,
    counters: Rect,
    table: Rect,
    recent: Option<Rect>,
    status: Rect,
}

fn areas(area: Rect) -> Areas {
    let rest = area.height.saturating_sub(3);
    let recent = if rest >= 20 {
        (rest / 3).min(14)
    } else if rest >= 12 {
        6
    } else {
        0
    };
    let [title, counters, table, recent_area, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(recent),
        Constraint::Length(1),
    ])
    .areas(area);
    Areas { title, counters, table, recent: (recent > 0).then_some(recent_area), status }
}

/// Rows of sockets the table shows on a screen of `area`: what PgUp and PgDn move by.
pub fn page_rows(area: Rect) -> usize {
    usize::from(areas(area).table.height.saturating_sub(3)).max(1)
}

/// Takes the colours out of a drawn screen (`NO_COLOR`, `TERM=dumb`), keeping bold,
/// reverse video and the rest, so that highlights and the selection still show.
pub fn without_colors(buffer: &mut Buffer) {
    for cell in &mut buffer.content {
        cell.set_fg(Color::Reset);
        cell.set_bg(Color::Reset);
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, top: &Top, zone: Zone) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "portrace top: the terminal is {}x{}; it needs at least {MIN_WIDTH}x{MIN_HEIGHT}. \
             Enlarge it, or press q to quit.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let mut clock = LocalTime::new(zone);
    let a = areas(area);
    frame.render_widget(title(top, &mut clock), a.title);
    frame.render_widget(counters(top), a.counters);
    sockets(frame, top, a.table);
    if let Some(r) = a.recent {
        recent(frame, top, r, &mut clock);
    }
    frame.render_widget(status(top), a.status);
    match top.overlay {
        Overlay::None => {}
        Overlay::Help => help(frame, top, area),
        Overlay::Timeline { scroll, .. } => timeline(frame, top, area, scroll, &mut clock),
    }
}

fn title(top: &Top, clock: &mut LocalTime) -> Paragraph<'static> {
    let table = top.shown();
    let now = table.now();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(" portrace top ", bold.add_modifier(Modifier::REVERSED))];
    if let Some(s) = table.start_record() {
        spans.push(Span::raw(format!(" {} ", crate::escape::text(&s.host))));
    }
    spans.push(Span::raw(format!(" {} ", top.source)));
    spans.push(Span::styled(format!(" {} ", &clock.time_of_day(now.unix_ns).as_str()[..8]), bold));
    if let Some(c) = &top.cursor {
        spans.push(Span::raw(cursor_text(c, now)));
    }
    spans.push(Span::raw(format!("  {} transitions", table.transitions())));
    let lost = table.lost_total();
    let lost_style = if lost > 0 { Style::new().fg(Color::Red).add_modifier(Modifier::BOLD) } else { Style::new() };
    spans.push(Span::styled(format!("  lost {lost}"), lost_style));
    if table.evicted() > 0 {
        spans.push(Span::styled(format!("  {} sockets dropped (table full)", table.evicted()), lost_style));
    }
    if top.paused() {
        spans.push(Span::styled(
            format!("  PAUSED ({} new)", top.pending),
            Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if table.ended() && top.cursor.is_none() {
        spans.push(Span::styled("  tracing ended", Style::new().fg(Color::Red)));
    }
    Paragraph::new(Line::from(spans))
}

fn cursor_text(c: &Cursor, now: Timestamp) -> String {
    let at = now.mono_ns.saturating_sub(c.first.mono_ns);
    let total = c.last.mono_ns.saturating_sub(c.first.mono_ns);
    let play = if c.playing { format!("playing {}x", c.speed) } else { "stopped".to_string() };
    format!(" +{} of {}  record {}/{}  {play}", CompactDuration(at), CompactDuration(total), c.position, c.total)
}

fn counters(top: &Top) -> Paragraph<'static> {
    let table = top.shown();
    let mut spans = vec![Span::raw(" ")];
    let counts = table.state_counts();
    for (state, n) in counts.iter().filter(|(_, n)| *n > 0) {
        spans.push(Span::styled(state.name(), state_style(*state)));
        spans.push(Span::raw(format!(" {n}   ")));
    }
    let closed = table.sockets().filter(|c| c.is_closed()).count();
    if closed > 0 {
        spans.push(Span::styled("closed", Style::new().fg(Color::DarkGray)));
        spans.push(Span::raw(format!(" {closed}   ")));
    }
    if spans.len() == 1 {
        spans.push(Span::styled("no sockets yet", Style::new().fg(Color::DarkGray)));
    }
    Paragraph::new(Line::from(spans))
}

fn state_style(state: TcpState) -> Style {
    let color = match state {
        TcpState::Established => Color::Green,
        TcpState::Listen => Color::Blue,
        TcpState::SynSent | TcpState::SynRecv | TcpState::NewSynRecv => Color::Yellow,
        TcpState::CloseWait => Color::Red,
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::LastAck => Color::Magenta,
        TcpState::TimeWait => Color::Cyan,
        TcpState::Close => Color::DarkGray,
    };
    Style::new().fg(color)
}

/// The marker and style of a row at `now_ns`.
fn row_look(c: &Conn, now_ns: u64) -> (&'static str, Style) {
    if c.is_closed() {
        return ("x", Style::new().fg(Color::DarkGray));
    }
    if !c.highlighted(now_ns) {
        return (" ", Style::new());
    }
    match c.change {
        Change::New => ("+", Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)),
        _ => ("*", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
    }
}

fn owner_cells(owner: Option<crate::record::Owner>) -> (String, String) {
    match owner {
        Some(o) => (o.pid.to_string(), crate::escape::comm(&o.comm)),
        None => ("-".into(), "?".into()),
    }
}

fn sockets(frame: &mut Frame, top: &Top, area: Rect) {
    let table = top.shown();
    let now = table.now().mono_ns;
    let rows = top.rows();
    let visible = usize::from(area.height.saturating_sub(3));
    let selected = top.selected_index(&rows);
    let offset = selected.map_or(0, |s| (s + 1).saturating_sub(visible));
    // Endpoints are never cut when the screen has room: the process column gives way
    // first (down to 6 columns), then the endpoints are cut with a mark.
    let longest = rows
        .iter()
        .skip(offset)
        .take(visible)
        .map(|c| endpoint(c.ends.saddr, c.ends.sport).chars().count().max(endpoint(c.ends.daddr, c.ends.dport).chars().count()))
        .max()
        .unwrap_or(0)
        .max(9);
    let inner = usize::from(area.width.saturating_sub(2));
    // On a narrow screen the AGE column goes, and STATE and IN STATE narrow.
    let narrow = inner.saturating_sub(1 + 7 + 16 + 9 + 9 + 7) < 2 * longest + 6;
    let (state_width, in_state_width) = if narrow { (12, 8) } else { (16, 9) };
    let fixed = 1 + 7 + state_width + in_state_width + if narrow { 6 } else { 9 + 7 };
    let room = inner.saturating_sub(fixed);
    let comm_width = room.saturating_sub(2 * longest).clamp(6, 15);
    let ep_width = (room.saturating_sub(comm_width) / 2).max(1);
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, c)| {
            let (mark, style) = row_look(c, now);
            let (pid, comm) = owner_cells(c.owner);
            let at_least = |yes: bool| if yes { "≥" } else { "" };
            let state = if c.is_closed() {
                match c.reason {
                    Some(r) => fit(r.name(), state_width).trim_end().to_string(),
                    None => "CLOSE".into(),
                }
            } else {
                c.state.name().to_string()
            };
            let state_cell = if c.is_closed() || c.highlighted(now) {
                Cell::from(state)
            } else {
                Cell::from(state).style(state_style(c.state))
            };
            let mut cells = vec![
                Cell::from(mark),
                Cell::from(pid),
                Cell::from(fit(&comm, comm_width).trim_end().to_string()),
                Cell::from(fit(&endpoint(c.ends.saddr, c.ends.sport), ep_width).trim_end().to_string()),
                Cell::from(fit(&endpoint(c.ends.daddr, c.ends.dport), ep_width).trim_end().to_string()),
                state_cell,
                Cell::from(format!("{}{}", at_least(c.entered_at_least), CompactDuration(c.in_state_ns(now)))),
            ];
            if !narrow {
                cells.push(Cell::from(format!("{}{}", at_least(c.born_at_least), CompactDuration(c.age_ns(now)))));
            }
            let row = Row::new(cells).style(style);
            if Some(i) == selected && top.overlay == Overlay::None {
                row.style(style.add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let names = ["", "PID", "PROCESS", "LOCAL", "REMOTE", "STATE", "IN STATE", "AGE"];
    let header = Row::new(if narrow { &names[..7] } else { &names[..] }.iter().copied())
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Length(comm_width as u16),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(state_width as u16),
        Constraint::Length(in_state_width as u16),
    ];
    if !narrow {
        widths.push(Constraint::Length(9));
    }
    let order = if top.reverse { "reversed" } else { "" };
    let mut title = format!(" Sockets {} of {}  sort: {} {order}", rows.len(), table.len(), top.sort.name());
    if !top.filter.is_empty() {
        title.push_str(&format!("  filter: {}", top.filter));
    }
    title.push(' ');
    let widget = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::new().borders(Borders::ALL).title(title.trim_end().to_string() + " "));
    frame.render_widget(widget, area);
}

fn recent(frame: &mut Frame, top: &Top, area: Rect, clock: &mut LocalTime) {
    let table = top.shown();
    let visible = usize::from(area.height.saturating_sub(2));
    let list = table.recent();
    let skip = list.len().saturating_sub(visible);
    // Time, pid, command, the edge and the old state's duration take 76 columns; the two
    // endpoints share the rest. On a narrow screen pid and command go first.
    let longest = list
        .iter()
        .skip(skip)
        .map(|t| endpoint(t.ends.saddr, t.ends.sport).chars().count().max(endpoint(t.ends.daddr, t.ends.dport).chars().count()))
        .max()
        .unwrap_or(0);
    let inner = usize::from(area.width.saturating_sub(2));
    let owners = inner >= 76 + 2 * longest;
    let fixed = if owners { 76 } else { 52 };
    let width = (inner.saturating_sub(fixed) / 2).clamp(9, 47);
    let lines: Vec<Line> =
        list.iter().skip(skip).map(|t| transition_line(t, clock, Some((width, owners)))).collect();
    let title = format!(" Recent transitions ({} in all) ", table.transitions());
    frame.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)), area);
}

/// `text` in `width` columns: cut with `…` when longer, padded when shorter.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return format!("{text:<width$}");
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One transition as a line: time, (given an endpoint width) endpoints and (if asked)
/// the owner, the edge, how long the old state lasted, why it ended.
fn transition_line(t: &Transition, clock: &mut LocalTime, endpoints: Option<(usize, bool)>) -> Line<'static> {
    let time = clock.time_of_day(t.time.unix_ns);
    let (pid, comm) = owner_cells(t.owner);
    let mut spans = vec![Span::raw(format!(" {} ", &time.as_str()[..12]))];
    let with_endpoints = endpoints.is_some();
    if let Some((w, owners)) = endpoints {
        if owners {
            spans.push(Span::raw(format!("{pid:>7} {} ", fit(&comm, 15))));
        }
        spans.push(Span::raw(format!(
            "{} {} ",
            fit(&endpoint(t.ends.saddr, t.ends.sport), w),
            fit(&endpoint(t.ends.daddr, t.ends.dport), w)
        )));
    }
    spans.push(Span::styled(format!("{:>11}", t.oldstate.name()), state_style(t.oldstate)));
    spans.push(Span::raw(" -> "));
    spans.push(Span::styled(format!("{:<11}", t.newstate.name()), state_style(t.newstate)));
    let was = match t.prev_state_ns {
        Some(ns) => format!(" {}{}", if t.prev_state_at_least { "≥" } else { "" }, CompactDuration(ns)),
        None => " -".into(),
    };
    spans.push(Span::raw(format!("{was:<10}")));
    if let Some(r) = t.reason {
        spans.push(Span::raw(format!(" {}", r.name())));
    }
    if let Some(e) = t.error {
        spans.push(Span::raw(format!(" {}", errno::tcp_text(e))));
    }
    if !with_endpoints && t.owner.is_some_and(|o| o.pid != t.pid) {
        spans.push(Span::styled(
            format!("  (on the CPU: {} {})", t.pid, crate::escape::comm(&t.comm)),
            Style::new().fg(Color::DarkGray),
        ));
    }
    Line::from(spans)
}

fn status(top: &Top) -> Paragraph<'static> {
    if top.editing_filter {
        return Paragraph::new(Line::from(vec![
            Span::styled(" Filter: ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(top.filter.clone()),
            Span::styled("_", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled("   Enter keeps it, Esc clears it", Style::new().fg(Color::DarkGray)),
        ]));
    }
    let keys = if top.overlay != Overlay::None {
        " Esc close  Up/Down/PgUp/PgDn scroll  q quit"
    } else if top.cursor.is_some() {
        " q quit  ? help  Space play  Left/Right step  [ ] 10 s  / filter  s sort  Enter timeline"
    } else {
        " q quit  ? help  / filter  s sort  p pause  Enter timeline  Up/Down move"
    };
    let mut spans = vec![Span::styled(keys, Style::new().fg(Color::DarkGray))];
    if let Some(m) = &top.message {
        spans.push(Span::styled(format!("   {m}"), Style::new().fg(Color::Red)));
    }
    Paragraph::new(Line::from(spans))
}

/// A rectangle of `width` x `height` in the middle of `area`, within it.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

fn help(frame: &mut Frame, top: &Top, area: Rect) {
    let browsing = top.cursor.is_some();
    let mut lines = vec![Line::from("")];
    for (keys, what, browse_only) in HELP {
        // Browsing, Space plays the recording instead of pausing the display.
        let shown = if browsing { *browse_only || !what.starts_with("pause") } else { !*browse_only };
        if shown {
            lines.push(Line::from(vec![
                Span::styled(format!("  {keys:<30}"), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(what.to_string()),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from("  Marks: + new socket, * changed state, x closed (shown 3 s more)."));
    lines.push(Line::from("  IN STATE and AGE with ≥: the socket was older than the trace."));
    lines.push(Line::from("  lost: transitions the kernel could not deliver (see portrace --help)."));
    let height = lines.len() as u16 + 2;
    let rect = centered(area, 100, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Help (Esc closes) ")),
        rect,
    );
}

fn timeline(frame: &mut Frame, top: &Top, area: Rect, scroll: usize, clock: &mut LocalTime) {
    // Everything between the title bar and the key line.
    let rect = Rect { y: area.y + 1, height: area.height.saturating_sub(2), ..area };
    frame.render_widget(Clear, rect);
    let Some(c) = top.timeline_socket() else {
        frame.render_widget(
            Paragraph::new(" This socket is no longer known.")
                .block(Block::new().borders(Borders::ALL).title(" Timeline (Esc closes) ")),
            rect,
        );
        return;
    };
    let now = top.shown().now().mono_ns;
    let (pid, comm) = owner_cells(c.owner);
    let source = c.owner.map_or("", |o| o.source.name());
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                format!(" {} -> {}", endpoint(c.ends.saddr, c.ends.sport), endpoint(c.ends.daddr, c.ends.dport)),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("   {}   netns {}   socket {}", c.family.name(), c.ends.netns, c.id)),
        ]),
        Line::from(format!(" owner: {pid} {comm} ({source})")),
    ];
    if let Some(id) = c.owner.map(|o| o.cgroup).filter(|&id| id != 0) {
        // The cgroup the kernel read in the owner's own system call.
        let line = match top.shown().cgroup_name(id) {
            Some(name) => {
                let path = name.path.as_deref().map_or_else(|| format!("id {id}, removed"), |p| escape::text(p).into_owned());
                match &name.label {
                    Some(label) => format!(" cgroup: {}   {path}", escape::text(label)),
                    None => format!(" cgroup: {path}"),
                }
            }
            None => format!(" cgroup: id {id}"),
        };
        lines.push(Line::from(line));
    }
    let at_least = |yes: bool| if yes { "≥" } else { "" };
    let mut now_line = if c.is_closed() {
        format!(" closed {} ago", CompactDuration(c.in_state_ns(now)))
    } else {
        format!(" now {} for {}{}", c.state.name(), at_least(c.entered_at_least), CompactDuration(c.in_state_ns(now)))
    };
    now_line.push_str(&format!(", age {}{}", at_least(c.born_at_least), CompactDuration(c.age_ns(now))));
    if let Some(r) = c.reason {
        now_line.push_str(&format!(", ended: {}", r.describe()));
    }
    lines.push(Line::from(now_line));
    lines.push(Line::from(""));
    if c.history_dropped > 0 {
        lines.push(Line::from(format!(" ({} earlier transitions not kept)", c.history_dropped)));
    }
    if c.history.is_empty() {
        lines.push(Line::from(" No transition seen yet: listed by the inventory at start."));
    }
    let header = lines.len();
    let body: Vec<Line> = c.history.iter().map(|t| transition_line(t, clock, None)).collect();
    let room = usize::from(rect.height.saturating_sub(2)).saturating_sub(header);
    let scroll = scroll.min(body.len().saturating_sub(room));
    lines.extend(body.into_iter().skip(scroll));
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Timeline (Esc closes) ")),
        rect,
    );
}

