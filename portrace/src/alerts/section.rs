//! The "Alerts" section of `portrace report` (and of `--summary`): every alert emitted, in
//! order, and per subject the latest evidence and how many times it fired; as text for
//! people and as the `alerts` and `alert_subjects` members of the report's JSON document.

use std::io::{self, Write};

use super::{Alert, AlertKind, Detectors, Logged, Subject};
use crate::clock::Rfc3339;
use crate::format::json::Writer;
use crate::output::{process_line, push_alert_json, push_printable};

/// What the detectors found over a whole trace.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSection {
    pub fired: u64,
    /// The alerts emitted, in order.
    pub alerts: Vec<Alert>,
    /// Per subject, in the order of its first alert.
    pub subjects: Vec<Logged>,
}

impl AlertSection {
    pub fn of(d: &Detectors) -> AlertSection {
        AlertSection { fired: d.fired(), alerts: d.history().to_vec(), subjects: d.logged().cloned().collect() }
    }

    /// The text section: a heading, then per subject its latest alert line, the process
    /// details when known, and how often and since when it fired.
    pub fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, "\nAlerts ({} fired about {} subjects)", self.fired, self.subjects.len())?;
        if self.subjects.is_empty() {
            return writeln!(w, "  none");
        }
        for l in &self.subjects {
            let a = &l.latest;
            let mut line = Vec::new();
            line.extend_from_slice(format!("  ALERT {} {} [", a.severity.label(), a.kind).as_bytes());
            push_printable(&mut line, &a.subject.to_string());
            line.extend_from_slice(b"] ");
            push_printable(&mut line, &a.summary);
            line.push(b'\n');
            if let Some(details) = a.process.as_ref().and_then(process_line) {
                line.extend_from_slice(b"      ");
                push_printable(&mut line, &details);
                line.push(b'\n');
            }
            line.extend_from_slice(
                format!(
                    "      first {}, {} {}{}\n",
                    Rfc3339::new(l.first.time.unix_ns).as_str(),
                    l.fired,
                    if l.fired == 1 { "alert" } else { "alerts" },
                    if l.latest.time != l.first.time {
                        format!(", evidence as of {}", Rfc3339::new(a.time.unix_ns).as_str())
                    } else {
                        String::new()
                    }
                )
                .as_bytes(),
            );
            w.write_all(&line)?;
        }
        Ok(())
    }

    /// `[alert, ...]`: the alerts emitted, as the JSON stream writes them.
    pub fn json_alerts(&self) -> Vec<u8> {
        let mut buf = b"[".to_vec();
        for (i, a) in self.alerts.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            push_alert_json(&mut buf, a);
        }
        buf.push(b']');
        buf
    }

    /// `[{"kind","subject","fired","first":{time},"latest":alert}, ...]`.
    pub fn json_subjects(&self) -> Vec<u8> {
        let mut j = Writer::new(Vec::new());
        self.write_subjects(&mut j).expect("writing to memory");
        j.into_inner()
    }

    fn write_subjects(&self, j: &mut Writer<Vec<u8>>) -> io::Result<()> {
        j.open(b'[')?;
        for l in &self.subjects {
            let (kind, subject): (AlertKind, Subject) = (l.latest.kind, l.latest.subject);
            let mut latest = Vec::new();
            push_alert_json(&mut latest, &l.latest);
            j.open(b'{')?;
            j.str("kind", kind.name())?;
            j.str("subject", &subject.to_string())?;
            j.u64("fired", u64::from(l.fired))?;
            j.time("first", l.first.time)?;
            j.raw("latest", &latest)?;
            j.close(b'}')?;
        }
        j.close(b']')
    }

    /// `report --alerts-only --format json`: one document with the two arrays.
    pub fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut j = Writer::new(w);
        j.open(b'{')?;
        j.str("type", "alerts")?;
        j.u64("fired", self.fired)?;
        j.raw("alerts", &self.json_alerts())?;
        j.raw("alert_subjects", &self.json_subjects())?;
        j.close(b'}')?;
        j.into_inner().write_all(b"\n")
    }
}
