//! The JSON document, written as it goes: see the module documentation for its members.

use std::io::{self, BufWriter, Write};

use super::*;
use crate::format::errno;
use crate::format::json::Writer;

/// The report's own members, written with the shared writer.
trait Members {
    fn owner(&mut self, owner: Option<&Owner>) -> io::Result<()>;
    fn endpoints(&mut self, c: &Conn) -> io::Result<()>;
    fn sample(&mut self, name: &str, sample: Option<Sample>) -> io::Result<()>;
    fn stats(&mut self, key: &str, stats: &[Stats]) -> io::Result<()>;
}

impl<W: Write> Members for Writer<W> {
    fn owner(&mut self, owner: Option<&Owner>) -> io::Result<()> {
        match owner {
            Some(o) => {
                self.u64("owner_pid", u64::from(o.pid))?;
                self.bytes("owner_comm", o.comm.as_bytes())
            }
            None => {
                self.null("owner_pid")?;
                self.null("owner_comm")
            }
        }
    }

    fn endpoints(&mut self, c: &Conn) -> io::Result<()> {
        self.addr("saddr", c.ends.saddr)?;
        self.u64("sport", u64::from(c.ends.sport))?;
        self.addr("daddr", c.ends.daddr)?;
        self.u64("dport", u64::from(c.ends.dport))
    }

    fn sample(&mut self, name: &str, sample: Option<Sample>) -> io::Result<()> {
        match sample {
            Some(s) => {
                self.u64(&format!("{name}_ns"), s.ns)?;
                self.bool(&format!("{name}_at_least"), s.at_least)
            }
            None => {
                self.null(&format!("{name}_ns"))?;
                self.null(&format!("{name}_at_least"))
            }
        }
    }

    fn stats(&mut self, key: &str, stats: &[Stats]) -> io::Result<()> {
        self.key(key)?;
        self.open(b'[')?;
        for s in stats {
            self.open(b'{')?;
            self.str("state", s.state.name())?;
            self.u64("count", s.count)?;
            self.u64("lower_bounds", s.lower_bounds)?;
            self.u64("unknown", s.unknown)?;
            self.u64("at_end", s.at_end)?;
            self.sample("p50", s.p50)?;
            self.sample("p90", s.p90)?;
            self.sample("p99", s.p99)?;
            self.sample("max", s.max)?;
            if s.approximate {
                self.bool("approximate", true)?;
            }
            self.close(b'}')?;
        }
        self.close(b']')
    }
}

impl Report {
    /// The report as one JSON document; see the module documentation.
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        let a = self.analysis();
        let mut j = Writer::new(BufWriter::new(w));
        let start = self.start(a.end);
        j.open(b'{')?;
        j.str("type", "report")?;
        j.u64("schema", u64::from(JSON_SCHEMA))?;
        j.str("portrace", env!("CARGO_PKG_VERSION"))?;
        j.time("start", start)?;
        j.time("end", a.end)?;
        j.u64("span_ns", a.end.mono_ns.saturating_sub(start.mono_ns))?;
        j.bool("complete", self.lost_total() == 0)?;

        j.key("options")?;
        j.open(b'{')?;
        j.bool("by_port", self.options.by_port)?;
        j.bool("by_process", self.options.by_process)?;
        j.u64("top", self.options.top as u64)?;
        j.close(b'}')?;

        j.key("totals")?;
        j.open(b'{')?;
        j.u64("transitions", self.transitions)?;
        j.u64("connections", self.conns.len() as u64)?;
        j.u64("listeners", a.listeners)?;
        j.u64("clients", a.clients)?;
        j.u64("servers", a.servers)?;
        j.u64("from_inventory", self.conns.iter().filter(|c| c.inventory).count() as u64)?;
        j.u64("open_at_end", a.open_at_end)?;
        j.u64("unknown_durations", a.unknown_durations)?;
        j.u64("children_without_listener", self.unmatched_children)?;
        j.u64("lost", self.lost_total())?;
        j.key("lost_by_cause")?;
        j.open(b'{')?;
        for cause in CAUSES {
            j.u64(cause.name(), self.lost[cause_slot(cause)])?;
        }
        j.close(b'}')?;
        j.close(b'}')?;
        let cut = &self.cut;
        if cut.transitions > 0 || cut.sockets > 0 || cut.stays > 0 {
            j.key("not_kept")?;
            j.open(b'{')?;
            j.u64("rows_max", ROWS_MAX as u64)?;
            j.u64("stays_kept", STAYS_KEPT as u64)?;
            j.u64("transitions", cut.transitions)?;
            j.u64("begun", cut.births)?;
            j.u64("sockets", cut.sockets)?;
            j.u64("stays", cut.stays)?;
            j.close(b'}')?;
        }

        j.key("connections")?;
        j.open(b'[')?;
        for &row in &a.order {
            self.json_connection(&mut j, row, &a)?;
        }
        j.close(b']')?;

        j.key("transitions")?;
        j.open(b'[')?;
        for old in LIFE_ORDER {
            for new in LIFE_ORDER {
                let n = self.matrix[slot(old)][slot(new)];
                if n > 0 {
                    j.open(b'{')?;
                    j.str("from", old.name())?;
                    j.str("to", new.name())?;
                    j.u64("count", n)?;
                    j.close(b'}')?;
                }
            }
        }
        j.close(b']')?;

        j.stats("time_in_state", &a.time_in_state)?;
        match &a.by_port {
            Some(groups) => {
                j.key("by_port")?;
                j.open(b'[')?;
                for (port, stats) in groups {
                    j.open(b'{')?;
                    j.u64("port", u64::from(*port))?;
                    j.stats("time_in_state", stats)?;
                    j.close(b'}')?;
                }
                j.close(b']')?;
            }
            None => j.null("by_port")?,
        }
        match &a.by_process {
            Some(groups) => {
                j.key("by_process")?;
                j.open(b'[')?;
                for (comm, stats) in groups {
                    j.open(b'{')?;
                    match comm {
                        Some(comm) => j.bytes("comm", comm.as_bytes())?,
                        None => j.null("comm")?,
                    }
                    j.stats("time_in_state", stats)?;
                    j.close(b'}')?;
                }
                j.close(b']')?;
            }
            None => j.null("by_process")?,
        }
        self.json_picks(&mut j, "slowest_client_handshakes", &a.client_handshakes)?;
        self.json_picks(&mut j, "slowest_server_handshakes", &a.server_handshakes)?;
        self.json_picks(&mut j, "longest_close_waits", &a.close_waits)?;

        j.key("time_wait_by_peer")?;
        j.open(b'[')?;
        for p in &a.peers {
            j.open(b'{')?;
            j.addr("peer", p.addr)?;
            j.u64("count", p.count)?;
            j.u64("at_end", p.at_end)?;
            j.close(b'}')?;
        }
        j.close(b']')?;
        if let Some(alerts) = &self.alerts {
            j.raw("alerts", &alerts.json_alerts())?;
            j.raw("alert_subjects", &alerts.json_subjects())?;
        }
        j.close(b'}')?;
        let mut w = j.into_inner();
        w.write_all(b"\n")?;
        w.flush()
    }

    fn json_connection<W: Write>(
        &self,
        j: &mut Writer<W>,
        row: usize,
        a: &Analysis,
    ) -> io::Result<()> {
        let c = &self.conns[row];
        let role = a.roles[row];
        let (lifetime, lifetime_at_least) = Self::lifetime(c, a.end);
        j.open(b'{')?;
        j.u64("socket", c.socket)?;
        j.str("role", role.name())?;
        j.str("family", c.family.name())?;
        j.endpoints(c)?;
        j.u64("netns", u64::from(c.ends.netns))?;
        j.u64("service_port", u64::from(service_port(c, role)))?;
        j.owner(c.owner.as_ref())?;
        j.str("owner_source", c.owner.map_or("unknown", |o| o.source.name()))?;
        j.time("first", c.since)?;
        j.bool("first_at_least", c.since_at_least)?;
        j.time("last", if c.now.is_some() { a.end } else { c.last })?;
        j.u64("lifetime_ns", lifetime)?;
        j.bool("lifetime_at_least", lifetime_at_least)?;
        j.bool("open", c.now.is_some())?;
        let ending = c.ending.filter(|_| c.now.is_none());
        j.opt_str("reason", ending.and_then(|e| e.reason).map(EndReason::name))?;
        match ending.and_then(|e| e.error) {
            Some(errno) => j.str("error", &errno::tcp_text(errno))?,
            None => j.null("error")?,
        }
        j.u64("retransmits", ending.map_or(0, |e| u64::from(e.retransmits)))?;
        j.opt_u64("children", (role == Role::Listener).then_some(c.children))?;
        if c.stays_cut > 0 {
            j.u64("stays_not_kept", c.stays_cut)?;
        }
        j.key("states")?;
        j.open(b'[')?;
        for stay in &c.stays {
            j.open(b'{')?;
            j.str("state", stay.state.name())?;
            j.opt_u64("ns", stay.ns)?;
            j.bool("at_least", stay.at_least)?;
            j.bool("ongoing", false)?;
            j.bool("gap_before", stay.gap_before)?;
            j.str("then", stay.then.name())?;
            j.close(b'}')?;
        }
        if let Some((state, ns)) = Self::ongoing(c, a.end) {
            j.open(b'{')?;
            j.str("state", state.name())?;
            j.u64("ns", ns)?;
            j.bool("at_least", true)?;
            j.bool("ongoing", true)?;
            j.bool("gap_before", false)?;
            j.null("then")?;
            j.close(b'}')?;
        }
        j.close(b']')?;
        j.close(b'}')
    }

    fn json_picks<W: Write>(&self, j: &mut Writer<W>, key: &str, picks: &[Pick]) -> io::Result<()> {
        j.key(key)?;
        j.open(b'[')?;
        for pick in picks {
            let c = &self.conns[pick.row];
            j.open(b'{')?;
            j.u64("socket", c.socket)?;
            j.owner(c.owner.as_ref())?;
            j.endpoints(c)?;
            j.u64("ns", pick.ns)?;
            j.bool("at_least", pick.at_least)?;
            j.bool("ongoing", pick.then.is_none())?;
            j.opt_str("then", pick.then.map(TcpState::name))?;
            let reason = match pick.then {
                Some(TcpState::Close) => c.ending.and_then(|e| e.reason).map(EndReason::name),
                _ => None,
            };
            j.opt_str("reason", reason)?;
            j.close(b'}')?;
        }
        j.close(b']')
    }
}
