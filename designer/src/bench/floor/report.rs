//! What `mixnn bench floor` reports: medians and quartiles over the rounds, one line per kind
//! of measurement, and the JSON of it all.

use serde::Serialize;

use crate::bench::{Machine, median, quantile};

/// The median and quartiles of one figure over the rounds.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Stat {
    pub(super) median: f64,
    pub(super) q1: f64,
    pub(super) q3: f64,
    /// Each round's figure, in order.
    pub(super) rounds: Vec<f64>,
}

impl Stat {
    pub(super) fn of(rounds: Vec<f64>) -> Self {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        Stat {
            median: median(sorted.clone()),
            q1: quantile(&sorted, 0.25),
            q3: quantile(&sorted, 0.75),
            rounds,
        }
    }
}

/// What the cascade's rounds showed.
#[derive(Debug, Serialize)]
pub(super) struct CascadeReport {
    /// (median batch over the cascade - median batch in process) / links a batch, by round.
    pub(super) us_per_link: Stat,
    /// Median time of a batch over the cascade, by round.
    pub(super) batch_us: Stat,
    /// Median time of the same batch in this process (the sandbox), by round.
    pub(super) inproc_batch_us: Stat,
    pub(super) links_per_batch: usize,
    /// The loss hop turned batches around (else it waited for the designer's frame).
    pub(super) loss_turns: bool,
    pub(super) hops: Vec<String>,
    pub(super) setup_s: f64,
    /// From the hosts' counters over the timed batches: time inside the layers a batch.
    pub(super) host_layer_us_per_batch: Option<f64>,
    /// The hops' own work on frames a batch (opening, parsing, sealing; not the layers).
    pub(super) hop_work_us_per_batch: Option<f64>,
    /// Frames waiting between the hosts' network tasks and their hops, both ways, a batch
    /// (the thread hand-offs).
    pub(super) host_handoff_us_per_batch: Option<f64>,
    /// The share of the frames the hosts ran where they arrived (not on a session's worker).
    pub(super) frames_inline_share: Option<f64>,
    /// (median batch over the cascade - the hosts' layer time a batch) / links a batch.
    pub(super) us_per_link_from_counters: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) bench: &'static str,
    pub(super) udp_us_per_link: Option<f64>,
    pub(super) quic_us_per_link: Option<f64>,
    pub(super) cascade_us_per_link: Option<f64>,
    /// The cascade's cost per link over the QUIC ring's.
    pub(super) cascade_over_quic: Option<f64>,
    pub(super) frame_bytes: usize,
    /// `session` (the model's session frame length) or `--frame-bytes`.
    pub(super) frame_bytes_from: String,
    /// Processes in each ring: the relays and this one.
    pub(super) processes: usize,
    pub(super) relays: usize,
    pub(super) links_per_lap: usize,
    pub(super) udp_datagrams_per_message: usize,
    /// UDP messages lost and sent again (their laps untimed).
    pub(super) udp_lost: usize,
    pub(super) rounds: usize,
    pub(super) laps: usize,
    pub(super) batches: usize,
    pub(super) model: String,
    pub(super) udp: Option<Stat>,
    pub(super) quic: Option<Stat>,
    pub(super) cascade: Option<CascadeReport>,
    pub(super) machine: Machine,
}

/// One line per kind of measurement.
pub(super) fn print_lines(r: &Report) {
    let q = |s: &Stat| format!("quartiles {:.1}-{:.1}", s.q1, s.q3);
    let ring = format!(
        "a ring of {} relay processes and this one ({} links a lap), {} rounds of {} laps, the \
         median lap of each",
        r.relays, r.links_per_lap, r.rounds, r.laps
    );
    if let Some(s) = &r.udp {
        println!(
            "udp      {:>7.1} us per link ({}): {ring}; {}-byte messages as {} datagram{}, \
             every byte XOR-copied at each process{}",
            s.median,
            q(s),
            r.frame_bytes,
            r.udp_datagrams_per_message,
            if r.udp_datagrams_per_message == 1 {
                ""
            } else {
                "s"
            },
            if r.udp_lost > 0 {
                format!("; {} messages lost and sent again", r.udp_lost)
            } else {
                String::new()
            }
        );
    }
    if let Some(s) = &r.quic {
        println!(
            "quic     {:>7.1} us per link ({}): the same ring over mixnn_transport::Endpoint \
             (its transport config), one stream per link, whole messages read, touched and \
             written, a current_thread runtime per process",
            s.median,
            q(s)
        );
    }
    if let Some(c) = &r.cascade {
        let ms = |us: f64| us / 1e3;
        let counters = match (
            c.host_layer_us_per_batch,
            c.hop_work_us_per_batch,
            c.host_handoff_us_per_batch,
        ) {
            (Some(layers), Some(work), Some(handoffs)) => format!(
                "; the hosts' counters: layers {:.2} ms a batch, the hops' own work (open, \
                 seal) {:.2} ms a batch, frames waiting between the network and the hops \
                 {:.2} ms a batch, {:.0}% of the frames run where they arrived, so {:.1} us \
                 per link with the hosts' layer time",
                ms(layers),
                ms(work),
                ms(handoffs),
                100.0 * c.frames_inline_share.unwrap_or(f64::NAN),
                c.us_per_link_from_counters.unwrap_or(f64::NAN)
            ),
            _ => String::new(),
        };
        println!(
            "cascade  {:>7.1} us per link ({}): (median batch {:.2} ms over the cascade - {:.2} \
             ms for the same batch in this process) / {} links a batch ({} hops, forward and \
             back; the loss hop {}), {} rounds of {} batches{counters}",
            c.us_per_link.median,
            q(&c.us_per_link),
            ms(c.batch_us.median),
            ms(c.inproc_batch_us.median),
            c.links_per_batch,
            c.hops.len(),
            if c.loss_turns {
                "turns each batch around"
            } else {
                "waits for the designer's backward frame"
            },
            r.rounds,
            r.batches
        );
    }
    if let Some(x) = r.cascade_over_quic {
        println!("the cascade pays {x:.1}x the QUIC ring per link");
    }
}
