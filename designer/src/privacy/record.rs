//! One recorded session for `mixnn attack`: the designer trains over host processes with
//! audits on; the hosts' audits, put in cascade order, are all the attacks may use. The
//! designer's own side (its final states, its data order) is kept apart, for scoring only.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    attack::{
        completion::{Knowledge, Observed},
        linking::{Event, Timeline, Toward},
        views::{self, HostView},
    },
    data::Splits,
    local_cluster::LocalCluster,
    order::DataOrder,
    remote::{RemoteCascade, RemoteOptions},
    spec::ModelSpec,
    train::{self, TrainOptions},
};
use mixnn_host::daemon::audit::Record;
use mixnn_layer_sdk::Tensor;
use mixnn_wire::frame::{Op, WireTensor};

use crate::run_in_sandbox_worker;

/// How the session ran: what the designer keeps and what it adds.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Setting {
    pub(crate) name: String,
    pub(crate) dummies: usize,
    pub(crate) keep_first: bool,
    pub(crate) keep_last: bool,
    pub(crate) cover_rate: f64,
}

impl Setting {
    /// A setting by its name on the command line.
    pub(crate) fn named(name: &str) -> Result<Self> {
        let base = Setting {
            name: name.to_owned(),
            dummies: 2,
            keep_first: false,
            keep_last: false,
            cover_rate: 0.0,
        };
        Ok(match name {
            "default" => base,
            "no-dummies" => Setting { dummies: 0, ..base },
            "keep-first" => Setting {
                keep_first: true,
                ..base
            },
            "keep-last" => Setting {
                keep_last: true,
                // Two actual hosts are left: room for one dummy.
                dummies: 1,
                ..base
            },
            "cover" => Setting {
                cover_rate: 50.0,
                ..base
            },
            other => {
                return Err(anyhow!(
                    "unknown setting {other:?} (default, no-dummies, keep-first, keep-last, cover)"
                ));
            }
        })
    }
}

/// A session as its hosts recorded it, with the designer's side beside it.
pub(crate) struct Recorded {
    pub(crate) setting: Setting,
    /// The hosts' audits, first to last.
    pub(crate) views: Vec<HostView>,
    /// For each view, the group of layers (`spec.hosts()`) it ran; None for a dummy.
    pub(crate) group_of: Vec<Option<usize>>,
    pub(crate) groups: Vec<Vec<usize>>,
    /// The designer's final states, by layer (scoring only).
    pub(crate) states: Vec<Vec<u8>>,
    /// The label of every training row, in the order the batches went (scoring only).
    pub(crate) row_labels: Vec<usize>,
    /// Test batches in one test pass.
    pub(crate) test_batches: usize,
}

/// Trains `spec` over `cluster` as `setting` says and reads back the hosts' audits.
pub(crate) fn record(
    cluster: &LocalCluster,
    spec: &ModelSpec,
    splits: &Splits,
    setting: &Setting,
    options: &TrainOptions,
) -> Result<Recorded> {
    let remote = RemoteOptions {
        dummies: setting.dummies,
        keep_first: setting.keep_first,
        keep_last: setting.keep_last,
        cover_rate: setting.cover_rate,
        ..cluster.remote_options()
    };
    let (states, plan_groups) = {
        let (spec, splits, options) = (spec.clone(), splits.clone(), options.clone());
        run_in_sandbox_worker(move |sandbox| {
            let sandbox = sandbox.context("a sandbox")?;
            let input = spec.batch_shape(options.batch_size, splits.train.pixels)?;
            let mut cascade = RemoteCascade::connect(&spec, sandbox, &remote, &input)?;
            let hops = cascade.describe();
            train::train(&mut cascade, &splits, &options, |_| {})?;
            let states = cascade.export_states()?;
            cascade.close();
            Ok((states, hops))
        })?
    };
    let views = views::collect(cluster)?;
    let groups = spec.hosts();
    // "layers 1,2: ..." or "dummy", as the plan describes each hop.
    let group_of = plan_groups
        .iter()
        .map(|d| {
            let first: usize = d
                .strip_prefix("layers ")?
                .split([',', ':'])
                .next()?
                .parse()
                .ok()?;
            groups.iter().position(|g| g.first() == Some(&first))
        })
        .collect::<Vec<_>>();
    if group_of.len() != views.len() {
        return Err(anyhow!(
            "{} hops planned, {} audited",
            group_of.len(),
            views.len()
        ));
    }
    let n = splits.train.len();
    let row_labels = (0..options.epochs)
        .flat_map(|e| DataOrder::Shuffled.epoch(options.seed, e + 1, n))
        .map(|i| usize::from(splits.train.labels[i]))
        .collect();
    Ok(Recorded {
        setting: setting.clone(),
        views,
        group_of,
        groups,
        states,
        row_labels,
        test_batches: splits.test.len().div_ceil(options.test_batch_size.max(1)),
    })
}

/// Trains `count` designers at once over `cluster` (each with its own cascade drawn at
/// random from the same hosts, as `setting` says) and reads back every host's audits: each
/// session's views in cascade order.
pub(crate) fn record_concurrent(
    cluster: &LocalCluster,
    spec: &ModelSpec,
    splits: &Splits,
    setting: &Setting,
    options: &TrainOptions,
    count: usize,
) -> Result<Vec<Vec<HostView>>> {
    std::thread::scope(|scope| {
        let designers: Vec<_> = (0..count)
            .map(|i| {
                let remote = RemoteOptions {
                    dummies: setting.dummies,
                    cover_rate: setting.cover_rate,
                    ..cluster.remote_options()
                };
                let (spec, splits) = (spec.clone(), splits.clone());
                let options = TrainOptions {
                    seed: options.seed + i as u64,
                    ..options.clone()
                };
                scope.spawn(move || {
                    run_in_sandbox_worker(move |sandbox| {
                        let sandbox = sandbox.context("a sandbox")?;
                        let input = spec.batch_shape(options.batch_size, splits.train.pixels)?;
                        let mut cascade = RemoteCascade::connect(&spec, sandbox, &remote, &input)?;
                        train::train(&mut cascade, &splits, &options, |_| {})?;
                        cascade.close();
                        Ok(())
                    })
                })
            })
            .collect();
        for designer in designers {
            designer
                .join()
                .map_err(|_| anyhow!("a designer's thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(views::collect_all(cluster)?)
}

/// When a host's frames came and went: its audit's times, as the timing attacks take them.
pub(crate) fn timeline(view: &HostView) -> Timeline {
    let events = view
        .entries
        .iter()
        .filter_map(|e| {
            let (toward_prev, inbound) = match e.record {
                Record::Frame { from_prev, .. } => (from_prev, true),
                Record::Sent { to_prev, .. } => (to_prev, false),
                _ => return None,
            };
            Some(Event {
                at_us: e.at_us,
                link: if toward_prev {
                    Toward::Prev
                } else {
                    Toward::Next
                },
                inbound,
            })
        })
        .collect();
    Timeline { events }
}

/// Rows of `tensors` stacked into one `[rows, width]` tensor.
pub(crate) fn stack(tensors: &[&WireTensor]) -> Option<Tensor> {
    let width = *tensors.first()?.shape.last()? as usize;
    let data: Vec<f32> = tensors
        .iter()
        .flat_map(|t| t.data.iter().copied())
        .collect();
    Tensor::new(vec![data.len() / width.max(1), width], data).ok()
}

impl Recorded {
    /// The backward rows view `k` received, in order (one per training example).
    pub(crate) fn gradient_rows(&self, k: usize) -> Vec<Vec<f32>> {
        self.views[k]
            .received(Op::BACKWARD, false)
            .into_iter()
            .flat_map(|t| {
                let width = t.shape.last().copied().unwrap_or(1).max(1) as usize;
                t.data
                    .chunks(width)
                    .map(<[f32]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// What view `k` runs, for reports.
    pub(crate) fn role(&self, k: usize) -> String {
        match self.group_of[k] {
            None => "dummy".into(),
            Some(g) => format!(
                "layers {}",
                self.groups[g]
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// The test inputs view `k` received in the last test pass (one row per test example),
    /// and the layers before it: every layer before the next actual host's, at or after it
    /// (what turned the raw inputs into what it sees).
    pub(crate) fn features(&self, k: usize) -> Option<(Tensor, usize)> {
        let received = self.views[k].received(Op::TEST, true);
        let from = received.len().checked_sub(self.test_batches)?;
        let seen = stack(&received[from..])?;
        let before = (k..self.views.len())
            .find_map(|i| self.group_of[i])
            .map_or(self.groups.iter().map(Vec::len).sum::<usize>() - 1, |g| {
                self.groups[g][0]
            });
        Some((seen, before))
    }

    /// The test tensors of the last test pass on link `j` (into view `j`; `j == n`: out of
    /// the last), if a member of `coalition` touches the link and it carries tensors.
    fn link(&self, j: usize, coalition: &[bool]) -> Option<Tensor> {
        let n = self.views.len();
        let last_pass = |ts: Vec<&WireTensor>| -> Option<Tensor> {
            let from = ts.len().checked_sub(self.test_batches)?;
            stack(&ts[from..])
        };
        let received = (j < n && coalition[j])
            .then(|| last_pass(self.views[j].received(Op::TEST, true)))
            .flatten();
        received.or_else(|| {
            (j > 0 && coalition[j - 1])
                .then(|| last_pass(self.views[j - 1].sent(Op::TEST, false)))
                .flatten()
        })
    }

    /// What `coalition` (by view) knows: its members' final states and, for each run of
    /// layers it lacks (as [`mixnn_designer::attack::completion`] splits them), the pairs
    /// it saw around the run in the last test pass.
    pub(crate) fn knowledge(&self, coalition: &[bool]) -> Knowledge {
        let mut held = BTreeMap::new();
        for (k, view) in self.views.iter().enumerate() {
            let (true, Some(g)) = (coalition[k], self.group_of[k]) else {
                continue;
            };
            for (layer, state) in self.groups[g]
                .iter()
                .zip(view.last_state().unwrap_or_default())
            {
                held.insert(*layer, state);
            }
        }
        let layers: usize = self.groups.iter().map(Vec::len).sum();
        let mut observed = BTreeMap::new();
        for (first, last) in mixnn_designer::attack::completion::missing_runs(layers, &held) {
            let view_of = |layer: usize| {
                self.group_of
                    .iter()
                    .position(|g| g.is_some_and(|g| self.groups[g].contains(&layer)))
            };
            // Dummies pass tensors on unchanged: every link between two actual hosts carries
            // the same one.
            let (Some(v), Some(w)) = (view_of(first), view_of(last)) else {
                continue;
            };
            let before = (0..v).rev().find(|&i| self.group_of[i].is_some());
            let after = (w + 1..self.views.len())
                .find(|&i| self.group_of[i].is_some())
                .unwrap_or(self.views.len());
            let input = (before.map_or(0, |b| b + 1)..=v).find_map(|j| self.link(j, coalition));
            let output = (w + 1..=after).find_map(|j| self.link(j, coalition));
            if let (Some(inputs), Some(outputs)) = (input, output) {
                observed.insert(first, Observed { inputs, outputs });
            }
        }
        Knowledge { held, observed }
    }
}
