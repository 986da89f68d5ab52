//! The host's counters and gauges in Prometheus' text exposition format (version 0.0.4),
//! written to a file (`metrics_file`) that node_exporter's textfile collector, or any
//! scraper that reads files, picks up. A file rather than a port: nothing more for strangers
//! to reach, and the operator's exporter already has its own.

use std::fmt::Write as _;

use super::guard::DaemonStats;

/// What the host holds now (the counters only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Sessions open.
    pub sessions_open: usize,
    /// The frame lengths of the open sessions, summed.
    pub frame_bytes_held: usize,
    /// QUIC connections open.
    pub connections_open: usize,
    /// Whether the host is shutting down (draining its sessions).
    pub draining: bool,
}

/// Every metric's name starts so.
const PREFIX: &str = "mixnn_host_";

/// The counters and gauges, one `# HELP`, `# TYPE` and sample each.
pub fn prometheus(stats: &DaemonStats, gauges: &Gauges) -> String {
    let mut out = String::new();
    for (name, doc, value) in stats.fields() {
        sample(&mut out, &format!("{name}_total"), doc, "counter", value);
    }
    let gauges = [
        (
            "sessions_open",
            "Sessions open.",
            gauges.sessions_open as u64,
        ),
        (
            "frame_bytes_held",
            "The frame lengths of the open sessions, summed.",
            gauges.frame_bytes_held as u64,
        ),
        (
            "connections_open",
            "QUIC connections open.",
            gauges.connections_open as u64,
        ),
        (
            "draining",
            "1 while the host is shutting down, draining its sessions.",
            u64::from(gauges.draining),
        ),
    ];
    for (name, doc, value) in gauges {
        sample(&mut out, name, doc, "gauge", value);
    }
    out
}

fn sample(out: &mut String, name: &str, doc: &str, kind: &str, value: u64) {
    let help = help_text(doc);
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
    let _ = writeln!(out, "{PREFIX}{name} {value}");
}

/// A doc comment as one line of help: rustdoc's link marks dropped, and what the format
/// escapes (a backslash, a newline) escaped.
fn help_text(doc: &str) -> String {
    let words: Vec<&str> = doc.split_whitespace().collect();
    words
        .join(" ")
        .replace(['`', '[', ']'], "")
        .replace('\\', "\\\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_and_gauge_is_one_well_formed_sample() {
        let stats = DaemonStats {
            setups_accepted: 3,
            frame_us: 12_345,
            ..DaemonStats::default()
        };
        let gauges = Gauges {
            sessions_open: 2,
            frame_bytes_held: 104_000,
            connections_open: 5,
            draining: true,
        };
        let text = prometheus(&stats, &gauges);
        let lines: Vec<&str> = text.lines().collect();
        let metrics = stats.fields().len() + 4;
        assert_eq!(lines.len(), 3 * metrics);
        for triple in lines.chunks(3) {
            let name = triple[2].split(' ').next().unwrap();
            assert!(name.starts_with(PREFIX), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(
                triple[0].starts_with(&format!("# HELP {name} ")),
                "{triple:?}"
            );
            assert!(triple[0].len() > format!("# HELP {name} ").len() + 3);
            assert!(!triple[0].contains('`'));
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert_eq!(triple[1], format!("# TYPE {name} {kind}"));
            triple[2].split(' ').nth(1).unwrap().parse::<u64>().unwrap();
        }
        assert!(lines.contains(&"mixnn_host_setups_accepted_total 3"));
        assert!(lines.contains(&"mixnn_host_frame_us_total 12345"));
        assert!(lines.contains(&"mixnn_host_frame_bytes_held 104000"));
        assert!(lines.contains(&"mixnn_host_draining 1"));
        assert!(text.contains("# HELP mixnn_host_setups_accepted_total Sessions set up.\n"));
    }
}
