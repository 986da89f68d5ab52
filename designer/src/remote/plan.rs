//! The planner, pure: which layers each hop runs, where the dummies go, the sizes of frames,
//! blobs and exported states, and which hosts of the pool take which positions. Nothing here
//! touches the network; the sizes come from running the model once on zeros in the sandbox.

use mixnn_layer_sdk::{InitConfig, SgdConfig, Tensor};
use mixnn_sandbox::{Sandbox, SandboxError};
use mixnn_transport::Fingerprint;
use mixnn_wire::{
    blob::SEAL_OVERHEAD,
    export,
    frame::{BODY_OVERHEAD, MIN_FRAME_LEN, byte_tensor_len},
    report::MAX_MESSAGE_LEN,
    route,
    setup::{CIRCUIT_ID_LEN, HopLayer, HopSetup},
};

use super::{PlanError, RemoteError, RemoteOptions};
use crate::{
    backend::Backend,
    cascade::{Cascade, CascadeError, LoadError, component_bytes},
    pool::{self, Candidate},
    spec::ModelSpec,
};

/// What the designer knows of each hop, for reports and for the states.
#[derive(Debug, Clone)]
pub(super) struct HopInfo {
    /// The spec's layer indices it runs (empty for a dummy).
    pub(super) layers: Vec<usize>,
    /// EXPORT frames its state takes.
    pub(super) export_parts: usize,
    pub(super) description: String,
    /// The host that runs it (set once the pool is picked).
    pub(super) host: Option<HostRef>,
}

/// A host of the pool, as the designer names it in errors and excludes it after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostRef {
    /// The address it published.
    pub address: String,
    /// Its certificate's fingerprint (what identifies it).
    pub fingerprint: Fingerprint,
}

impl From<&Candidate> for HostRef {
    fn from(c: &Candidate) -> Self {
        HostRef {
            address: c.descriptor.address.clone(),
            fingerprint: c.descriptor.fingerprint,
        }
    }
}

impl std::fmt::Display for HostRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

/// The identity layer's config for dummies (any optimizer: it has no parameters).
pub(super) fn dummy_config() -> Vec<u8> {
    InitConfig {
        seed: 0,
        optimizer: SgdConfig {
            lr: 0.0,
            momentum: 0.0,
        },
        layer: serde_json::Value::Object(serde_json::Map::new()),
    }
    .to_bytes()
}

/// The length of a dummy's state.
fn identity_state_len(sandbox: &Sandbox) -> Result<usize, CascadeError> {
    let failed = |e: SandboxError| CascadeError::Load {
        index: 0,
        component: "identity (dummy)".into(),
        source: LoadError::Sandbox(e),
    };
    let module = sandbox.load(mixnn_components::IDENTITY).map_err(failed)?;
    let mut layer = sandbox.start(&module).map_err(failed)?;
    layer.init(&dummy_config()).map_err(failed)?;
    Ok(layer.export_state().map_err(failed)?.len())
}

/// How many groups of layers (hosts' worth) the designer keeps at the end with `keep_last`:
/// from the group that holds the last layer with parameters to the loss. A host after that
/// layer would receive a gradient that spells the labels out (the gradient of the logits is
/// softmax minus one-hot, with one negative entry, at the label; that of log-probabilities is
/// one-hot), so keeping the loss alone keeps nothing private. Hosts before it receive the
/// gradient through the last weight layer, whose leak the attack harness measures.
pub fn kept_tail(groups: &[Vec<usize>], param_counts: &[u64]) -> usize {
    let last_weights = param_counts.iter().rposition(|&p| p > 0);
    let from = last_weights
        .and_then(|layer| groups.iter().position(|g| g.contains(&layer)))
        .unwrap_or(groups.len().saturating_sub(1));
    groups.len() - from
}

/// The layers a test pass can end at (`RemoteOptions::test_end`), in the spec's order, for a
/// designer that keeps the first group of layers (`keep_first`) and the last `tail_groups`
/// groups; `loss` is the loss layer's index. A hop reports the output of its whole group
/// (its layers run as one step), so a test pass over hosts ends where a group ends: at its
/// last layer before the loss. The designer runs the layers it keeps at the end one by one,
/// so any of them before the loss will do. Not the layers it keeps first: their features
/// would never need the cascade.
pub fn test_ends(
    groups: &[Vec<usize>],
    keep_first: bool,
    tail_groups: usize,
    loss: usize,
) -> Vec<usize> {
    let tail_from = groups.len().saturating_sub(tail_groups);
    let mut ends = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let before_loss = group.iter().copied().filter(|&i| i < loss);
        if g == 0 && keep_first {
            continue;
        } else if g >= tail_from {
            ends.extend(before_loss);
        } else {
            ends.extend(before_loss.max());
        }
    }
    ends
}

fn encoded_len(shape: &[usize]) -> usize {
    1 + 4 * shape.len() + 4 * shape.iter().product::<usize>()
}

/// A session's layout, decided before any host is picked: which layers each hop runs (and
/// where the dummies go), their roles, and the sizes of frames, blobs and exported states.
/// A session that replaces failed hosts keeps it, so the new hosts take the old positions.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) hops: Vec<HopInfo>,
    pub(super) flags: Vec<u8>,
    pub(super) frame_len: usize,
    pub(super) blob_len: usize,
    pub(super) keep_first: bool,
    /// Groups of layers the designer keeps at the end ([`kept_tail`]; 0 without `keep_last`).
    pub(super) tail_groups: usize,
    /// The layer whose output a test pass gives.
    pub(super) test_end: usize,
    /// Whether a hop runs it (flagged [`HopSetup::TEST_END`]: it reports its output sealed
    /// for the designer); else the designer does, in its kept tail.
    pub(super) remote_test_end: bool,
}

impl Plan {
    /// Lays out a session for `spec` with `options` (dummies in random gaps, kept layers),
    /// for batches of inputs of `input_shape` (it sizes the frames: the model runs once on a
    /// batch of zeros in `sandbox`).
    pub fn new(
        spec: &ModelSpec,
        sandbox: &Sandbox,
        options: &RemoteOptions,
        input_shape: &[usize],
    ) -> Result<Self, RemoteError> {
        let groups = spec.hosts();
        // Sizes: run a fresh copy of the model once on a batch of zeros.
        let mut probe = Cascade::build(spec, Backend::Wasm, Some(sandbox))?;
        let params: Vec<u64> = probe.infos().iter().map(|i| i.param_count).collect();
        let keep_first = usize::from(options.keep_first);
        let tail_groups = if options.keep_last {
            kept_tail(&groups, &params)
        } else {
            0
        };
        if groups.len() < keep_first + tail_groups + 1 {
            return Err(PlanError::NoLayerLeft.into());
        }
        let remote_groups = &groups[keep_first..groups.len() - tail_groups];
        let layer_count = spec.layers.len();
        let zeros = Tensor::zeros(input_shape.to_vec());
        let outputs = probe.shapes(zeros.clone())?;
        let input_of = |layer: usize| -> Vec<usize> {
            if layer == 0 {
                input_shape.to_vec()
            } else {
                outputs[layer - 1].clone()
            }
        };
        let batch = input_shape.first().copied().unwrap_or(1);
        // By default the test pass ends at the model's output, the layer before the loss.
        let test_end = match options.test_end {
            None => layer_count.saturating_sub(2),
            Some(layer) => {
                let possible = test_ends(
                    &groups,
                    options.keep_first,
                    tail_groups,
                    layer_count.saturating_sub(1),
                );
                if !possible.contains(&layer) {
                    // Named as the whole model numbers its layers (a frozen front cut off).
                    let first = spec.first_layer;
                    return Err(PlanError::TestEnd {
                        layer: first + layer,
                        possible: possible.iter().map(|&i| first + i).collect(),
                    }
                    .into());
                }
                layer
            }
        };
        let remote_test_end = remote_groups.iter().any(|g| g.contains(&test_end));
        // Tensors on the links: the input of every remote group, and of the kept tail.
        // The first hop's input may travel as bytes; unless the designer keeps layers before
        // it, the first hop returns no gradient of it (`DROP_INPUT_GRAD`).
        let byte_input = options.byte_inputs && !options.keep_first;
        let max_tensor = remote_groups
            .iter()
            .chain(
                groups
                    .get(groups.len() - tail_groups)
                    .filter(|_| tail_groups > 0),
            )
            .map(|g| match g[0] {
                0 if byte_input => byte_tensor_len(input_shape),
                first => encoded_len(&input_of(first)),
            })
            .max()
            .unwrap_or(0);
        let mut payload = (1 + MAX_MESSAGE_LEN + 8).max(encoded_len(&[batch]));
        // The test end's output travels sealed in the blob (a report), within the frame
        // length every message of the session has.
        if remote_test_end {
            payload = payload.max(1 + encoded_len(&outputs[test_end]));
        }
        let blob_len = SEAL_OVERHEAD + payload;
        // The paper's per-message onion travels beside the tensor: one layer per hop.
        let route_len = if options.per_message_rsa {
            route::len(remote_groups.len() + options.dummies)
        } else {
            0
        };
        let frame_len = (CIRCUIT_ID_LEN + 16 + BODY_OVERHEAD + max_tensor + blob_len + route_len)
            .max(MIN_FRAME_LEN);
        // The states' sizes once training has begun (optimizers allocate on the first step),
        // which size the export ([`export`]).
        let batch_labels = Tensor::zeros(vec![batch]);
        probe.train_step(zeros, batch_labels)?;
        let state_lens: Vec<usize> = probe.export_states()?.iter().map(|s| 4 + s.len()).collect();
        let dummy_state_len = 4 + identity_state_len(sandbox)?;

        // The cascade: actual hops in order, dummies in random gaps between them.
        let actual = remote_groups.len();
        let route_flag = if options.per_message_rsa {
            HopSetup::PER_MESSAGE_RSA
        } else {
            0
        };
        if options.dummies > 0 && actual < 2 {
            return Err(PlanError::DummiesNeedTwoHosts.into());
        }
        let mut rng = pool::system_rng();
        let mut after: Vec<usize> = vec![0; actual];
        for _ in 0..options.dummies {
            after[pool::below(&mut rng, actual - 1)] += 1;
        }
        let mut hops = Vec::new();
        let mut flags = Vec::new();
        for (g, group) in remote_groups.iter().enumerate() {
            let names: Vec<&str> = group
                .iter()
                .map(|&i| spec.layers[i].component.as_str())
                .collect();
            hops.push(HopInfo {
                export_parts: export::slots_for(
                    group.iter().map(|&i| state_lens[i]).sum(),
                    frame_len,
                ),
                layers: group.clone(),
                description: format!(
                    "layers {}: {}",
                    group
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    names.join(" + ")
                ),
                host: None,
            });
            let loss = !options.keep_last && g + 1 == actual;
            flags.push(
                if loss { HopSetup::LOSS } else { 0 }
                    | if loss && options.loss_turns && !options.per_message_rsa {
                        HopSetup::LOSS_TURNS
                    } else {
                        0
                    }
                    | if g == 0 && !options.keep_first {
                        HopSetup::DROP_INPUT_GRAD
                    } else {
                        0
                    }
                    | route_flag
                    | if remote_test_end && group.contains(&test_end) {
                        HopSetup::TEST_END
                    } else {
                        0
                    },
            );
            for _ in 0..after[g] {
                hops.push(HopInfo {
                    export_parts: export::slots_for(dummy_state_len, frame_len),
                    layers: Vec::new(),
                    description: "dummy".into(),
                    host: None,
                });
                flags.push(route_flag);
            }
        }
        Ok(Plan {
            hops,
            flags,
            frame_len,
            blob_len,
            keep_first: options.keep_first,
            tail_groups,
            test_end,
            remote_test_end,
        })
    }

    /// The layer whose output a test pass gives (by default the one before the loss).
    pub fn test_end(&self) -> usize {
        self.test_end
    }

    /// Whether the designer keeps the last layers (and the loss).
    pub fn keeps_last(&self) -> bool {
        self.tail_groups > 0
    }

    /// The layers the designer keeps at the end, in order (empty without `keep_last`).
    pub fn kept_tail(&self, groups: &[Vec<usize>]) -> Vec<usize> {
        groups[groups.len().saturating_sub(self.tail_groups)..]
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    /// Hops in the cascade (actual and dummies).
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the plan has no hop (never: a plan has at least one).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The hops, first to last: each one's layers, or `dummy`.
    pub fn describe(&self) -> Vec<String> {
        self.hops.iter().map(|h| h.description.clone()).collect()
    }

    /// The hop that runs layer `layer` of the spec, if a host runs it.
    pub fn hop_of(&self, layer: usize) -> Option<usize> {
        self.hops.iter().position(|h| h.layers.contains(&layer))
    }

    /// Bytes of every frame of the session, on every link.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// What each hop's op=0 layer carries: its layers' components, configs and `states`
    /// (by layer; a missing or empty one: the layer's own init), or the identity for a dummy.
    pub fn hop_layers(
        &self,
        spec: &ModelSpec,
        states: &[Vec<u8>],
    ) -> Result<Vec<Vec<HopLayer>>, CascadeError> {
        self.hops
            .iter()
            .map(|hop| {
                if hop.layers.is_empty() {
                    return Ok(vec![HopLayer {
                        component: mixnn_components::IDENTITY.to_vec(),
                        config: dummy_config(),
                        state: Vec::new(),
                    }]);
                }
                hop.layers
                    .iter()
                    .map(|&i| {
                        Ok(HopLayer {
                            component: component_bytes(spec, i)?,
                            config: spec.init_config(i)?.to_bytes(),
                            state: states.get(i).cloned().unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Which hosts a session may use: at each position, a host it must take if the pool still
/// has it (the survivors of a failed session), and hosts it must never take (those that
/// failed).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// By position: the host to keep there, or none for a fresh pick.
    pub keep: Vec<Option<Fingerprint>>,
    /// Hosts never picked.
    pub exclude: std::collections::HashSet<Fingerprint>,
}

impl Placement {
    /// The hosts of `pool` for every position of a cascade of `n` hops: kept ones where the
    /// pool has them, the rest picked at random among hosts neither kept nor excluded.
    pub fn choose(&self, pool: Vec<Candidate>, n: usize) -> Result<Vec<Candidate>, PlanError> {
        let mut kept: Vec<Option<Candidate>> = (0..n).map(|_| None).collect();
        let mut rest = Vec::new();
        for c in pool {
            let fp = c.descriptor.fingerprint;
            if self.exclude.contains(&fp) {
                continue;
            }
            match self.keep.iter().position(|k| *k == Some(fp)) {
                Some(at) if at < n && kept[at].is_none() => kept[at] = Some(c),
                _ => rest.push(c),
            }
        }
        let needed = kept.iter().filter(|k| k.is_none()).count();
        let available = rest.len();
        let mut fresh = pool::pick(rest, needed)
            .ok_or(PlanError::PoolTooSmall {
                needed: n,
                available: available + n - needed,
            })?
            .into_iter();
        Ok(kept
            .into_iter()
            .filter_map(|k| k.or_else(|| fresh.next()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use mixnn_wire::crypto::OnionPrivateKey;

    use super::*;
    use mixnn_wire::crypto::OnionPublicKey;

    /// A pool of `n` candidates, fingerprints `[i; 32]` (one onion key for all: the pick does
    /// not look at it).
    fn pool(n: u8) -> Vec<Candidate> {
        let der = OnionPrivateKey::generate()
            .unwrap()
            .public_key()
            .unwrap()
            .der()
            .to_vec();
        (0..n)
            .map(|i| Candidate {
                descriptor: mixnn_wire::descriptor::Descriptor {
                    identity: [i; 32],
                    address: format!("127.0.0.1:{}", 7000 + u16::from(i)),
                    onion_key: Vec::new(),
                    fingerprint: [i; 32],
                    published_at: 0,
                    metadata: Default::default(),
                },
                onion_key: OnionPublicKey::from_der(&der).unwrap(),
            })
            .collect()
    }

    fn fingerprints(chosen: &[Candidate]) -> Vec<u8> {
        chosen.iter().map(|c| c.descriptor.fingerprint[0]).collect()
    }

    /// Where a test pass can end: at a hop's last layer before the loss, or anywhere in the
    /// kept tail; never in the kept first group nor at the loss.
    #[test]
    fn a_test_pass_ends_where_a_group_ends_or_in_the_kept_tail() {
        // The paper's MLP, one layer per group; the designer keeps 2, 3 and the loss 4.
        let paper: Vec<Vec<usize>> = (0..5).map(|i| vec![i]).collect();
        assert_eq!(test_ends(&paper, false, 3, 4), [0, 1, 2, 3]);
        assert_eq!(test_ends(&paper, true, 3, 4), [1, 2, 3]);
        assert_eq!(test_ends(&paper, false, 0, 4), [0, 1, 2, 3]);
        // Hosts share layers: {0, 1}, {2, 3}, {4, 5 (loss)}.
        let grouped = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        assert_eq!(test_ends(&grouped, false, 0, 5), [1, 3, 4]);
        // The designer keeps {2, 3} and {4, 5}: any layer of them before the loss.
        assert_eq!(test_ends(&grouped, false, 2, 5), [1, 2, 3, 4]);
        assert_eq!(test_ends(&grouped, true, 2, 5), [2, 3, 4]);
    }

    #[test]
    fn a_placement_keeps_survivors_in_place_and_never_picks_the_excluded() {
        // Survivors at positions 0, 1, 3; position 2 failed (host 2, excluded); host 9, at
        // position 4, has left the pool.
        let placement = Placement {
            keep: vec![
                Some([0; 32]),
                Some([1; 32]),
                None,
                Some([3; 32]),
                Some([9; 32]),
            ],
            exclude: [[2; 32]].into_iter().collect(),
        };
        for _ in 0..20 {
            let chosen = fingerprints(&placement.choose(pool(6), 5).unwrap());
            assert_eq!(chosen[0..2], [0, 1]);
            assert_eq!(chosen[3], 3);
            // Positions 2 and 4 from the rest: hosts 4 and 5.
            let mut fresh = [chosen[2], chosen[4]];
            fresh.sort_unstable();
            assert_eq!(fresh, [4, 5], "{chosen:?}");
        }
        // Not enough hosts once the excluded are out.
        let err = placement.choose(pool(4), 5).unwrap_err();
        assert!(
            matches!(err, PlanError::PoolTooSmall { needed: 5, .. }),
            "{err}"
        );
        // No placement: distinct hosts at random.
        let chosen = fingerprints(&Placement::default().choose(pool(8), 8).unwrap());
        let mut sorted = chosen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<u8>>());
    }
}
