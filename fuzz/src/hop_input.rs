//! The `hop` target's input: a [`Scenario`], one hop of a fixed session and the frames its
//! neighbours send it. Plain data, read with [`Input`] and written with [`Output`] (see
//! [`crate::input`] for why not `arbitrary`); what each part means when it runs is in
//! [`crate::hop_checks`].
//!
//! Layout: `role u8 || tweaks u8 || seed u32 || action*`, at most [`MAX_ACTIONS`] actions.

use crate::input::{Input, Output};

/// Roles a scenario can give the hop (see `hop_checks::ROLES`).
pub const ROLES: usize = 7;
/// Most actions of one scenario: enough for a few training steps and an export, few enough
/// to keep an execution short.
pub const MAX_ACTIONS: usize = 32;

/// `tweaks` bits: what is changed in the hop's setup before it starts.
pub mod tweak {
    /// Show the hop's decryptions to an observer ([`mixnn_host::hop::Hop::observe`]).
    pub const OBSERVE: u8 = 1;
    /// Do not give the hop its onion key (sessions with per-message routes need it).
    pub const NO_ROUTE_KEY: u8 = 2;
    /// Toggle `HopSetup::LOSS`.
    pub const LOSS: u8 = 4;
    /// Toggle `HopSetup::TEST_END`.
    pub const TEST_END: u8 = 8;
    /// Toggle `HopSetup::DROP_INPUT_GRAD`.
    pub const DROP_INPUT_GRAD: u8 = 16;
    /// Toggle `HopSetup::PER_MESSAGE_RSA`.
    pub const PER_MESSAGE_RSA: u8 = 32;
    /// Give the first layer a config that does not parse (its `init` fails).
    pub const BAD_CONFIG: u8 = 64;
    /// Give the first layer a state that is not its own (its `import-state` fails).
    pub const BAD_STATE: u8 = 128;
}

/// A neighbour of the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The previous hop (the designer, for a first hop): its frames come `Toward::Prev`.
    Prev,
    /// The next hop (the designer, for a last hop).
    Next,
}

impl Side {
    fn decode(input: &mut Input<'_>) -> Self {
        if input.bool() { Side::Next } else { Side::Prev }
    }

    fn encode(self, out: &mut Output) {
        out.u8(u8::from(self == Side::Next));
    }
}

/// A whole input.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Which hop of which session (mod [`ROLES`]).
    pub role: u8,
    /// Changes to its setup ([`tweak`]).
    pub tweaks: u8,
    /// Seeds the hop's and the designer's entropy.
    pub seed: u32,
    /// What happens, in order.
    pub actions: Vec<Action>,
}

/// One thing that happens to the hop.
#[derive(Debug, Clone)]
pub enum Action {
    /// A neighbour sends a well-sealed frame (skipped if the body does not fit a frame).
    Send(Send),
    /// Bytes that are no frame of the link.
    Garbage {
        /// From whom.
        from: Side,
        /// 0: the frame length; 1: one short; 2: one long; 3: `size` mod 4096; 4: empty.
        size_code: u8,
        /// See `size_code`.
        size: u16,
        /// Start with the link's circuit id.
        circuit: bool,
        /// Seeds the bytes.
        fill: u8,
    },
    /// The last frame from this side, again.
    Replay {
        /// From whom.
        from: Side,
    },
    /// The last frame from this side, cut or zero-extended to `len` mod (2 frames + 1).
    Cut {
        /// From whom.
        from: Side,
        /// The length.
        len: u16,
    },
    /// A fresh frame with one bit flipped; the sender's counter is rewound after, as if it
    /// had not been sent.
    Tamper {
        /// From whom.
        from: Side,
        /// Which byte (mod the frame length).
        at: u16,
        /// Which bit (mod 8).
        bit: u8,
    },
    /// A frame sealed and lost: the sender's counter moves on, the hop's does not.
    Drop {
        /// From whom.
        from: Side,
    },
    /// The daemon gives up on the session ([`mixnn_host::hop::Hop::fail_with`]).
    FailWith {
        /// Towards whom the report goes.
        to: Side,
    },
}

/// A well-sealed frame from a neighbour.
#[derive(Debug, Clone)]
pub struct Send {
    /// From whom.
    pub from: Side,
    /// Its operation code ([`op_of`]).
    pub op: u8,
    /// Its tensor.
    pub tensor: TensorSpec,
    /// Its blob.
    pub blob: BlobSpec,
    /// Its route.
    pub route: RouteSpec,
}

/// Operation codes as [`op_of`] maps them (the byte mod 12): the protocol's, weighted
/// towards training, then unknown ones.
pub mod op {
    /// `Op::READY`.
    pub const READY: u8 = 0;
    /// `Op::FORWARD`.
    pub const FORWARD: u8 = 1;
    /// `Op::BACKWARD`.
    pub const BACKWARD: u8 = 2;
    /// `Op::TEST`.
    pub const TEST: u8 = 3;
    /// `Op::COVER`.
    pub const COVER: u8 = 4;
    /// `Op::REPORT`.
    pub const REPORT: u8 = 5;
    /// `Op::EXPORT`.
    pub const EXPORT: u8 = 6;
    /// An unknown operation (7 + byte / 12).
    pub const UNKNOWN: u8 = 7;
}

/// The operation of a frame from its code.
pub fn op_of(code: u8) -> mixnn_wire::frame::Op {
    use mixnn_wire::frame::Op;
    match code % 12 {
        0 => Op::READY,
        1 | 8 => Op::FORWARD,
        2 | 9 => Op::BACKWARD,
        3 => Op::TEST,
        4 => Op::COVER,
        5 => Op::REPORT,
        6 | 10 => Op::EXPORT,
        7 => Op(7 + code / 12),
        _ => Op(code),
    }
}

/// The values of a tensor: a kind, and a seed for the generator.
#[derive(Debug, Clone, Copy)]
pub struct Values {
    /// 0 pixels (k / 255: they travel as bytes), 1 small, 2 any bits, 3 NaN, 4 special
    /// (infinities, NaN, -0, extremes), 5 zeros, 6 huge, 7 small integers (class indices).
    pub kind: u8,
    /// Seeds the generator.
    pub seed: u8,
}

impl Values {
    fn decode(input: &mut Input<'_>) -> Self {
        Values {
            kind: input.u8() % 8,
            seed: input.u8(),
        }
    }

    fn encode(self, out: &mut Output) {
        out.u8(self.kind).u8(self.seed);
    }
}

/// A frame's tensor.
#[derive(Debug, Clone)]
pub enum TensorSpec {
    /// None.
    None,
    /// `[batch, features]`, with the features the hop expects from this side.
    Fit {
        /// Rows, 1..=4 (the byte mod 4, plus one).
        batch: u8,
        /// The values.
        values: Values,
    },
    /// Any shape: each dim byte below 200 is a dim of 0..=8, others one of a few huge dims;
    /// if the values would not fit a frame, the last dim becomes 0.
    Shape {
        /// Rank 0..=4 (the count byte mod 5).
        dims: Vec<u8>,
        /// The values.
        values: Values,
    },
}

impl TensorSpec {
    fn decode(input: &mut Input<'_>) -> Self {
        match input.u8() % 4 {
            0 => TensorSpec::None,
            1 | 3 => TensorSpec::Fit {
                batch: input.u8(),
                values: Values::decode(input),
            },
            _ => {
                let rank = usize::from(input.u8() % 5);
                let dims = input.bytes(rank).to_vec();
                TensorSpec::Shape {
                    dims,
                    values: Values::decode(input),
                }
            }
        }
    }

    fn encode(&self, out: &mut Output) {
        match self {
            TensorSpec::None => {
                out.u8(0);
            }
            TensorSpec::Fit { batch, values } => {
                out.u8(1).u8(*batch);
                values.encode(out);
            }
            TensorSpec::Shape { dims, values } => {
                out.u8(2)
                    .u8(u8::try_from(dims.len()).unwrap_or(0))
                    .bytes(dims);
                values.encode(out);
            }
        }
    }
}

/// Labels for the loss hop.
#[derive(Debug, Clone)]
pub enum LabelSpec {
    /// `[batch]` class indices the loss layer takes.
    Fit {
        /// Rows, 1..=4.
        batch: u8,
        /// Seeds the classes.
        seed: u8,
    },
    /// Any tensor.
    Tensor(TensorSpec),
}

/// A frame's blob.
#[derive(Debug, Clone)]
pub enum BlobSpec {
    /// Random bytes of the session's blob length.
    Random,
    /// Random bytes of this length (mod the longest blob a frame carries, plus one).
    RandomLen(u16),
    /// Labels sealed for the loss hop ([`mixnn_wire::circuit::DesignerCircuit::label_blob`]),
    /// under the layers of the hops before this one.
    Labels(LabelSpec),
    /// One of the EXPORT blobs of [`mixnn_wire::circuit::DesignerCircuit::export_blobs`]
    /// that asks hop `target` (0: this hop; others: the others) for `count` parts.
    Export {
        /// Whose slots (0 is this hop).
        target: u8,
        /// How many (1..=4).
        count: u8,
        /// Which of the blobs (slots and decoys, shuffled).
        pick: u8,
    },
    /// No blob at all.
    Empty,
    /// Any payload sealed for this hop, as labels and slots are.
    Sealed(Vec<u8>),
}

/// A frame's per-message route.
#[derive(Debug, Clone, Copy)]
pub enum RouteSpec {
    /// None (what sessions without routes send).
    Empty,
    /// A fresh route for every hop of the session ([`mixnn_wire::route::build`]), for the
    /// frame's operation or, with `other_op`, another.
    Built {
        /// For another operation than the frame's.
        other_op: bool,
    },
    /// Random bytes of this length (mod 700).
    Random(u16),
}

impl Action {
    fn decode(input: &mut Input<'_>) -> Self {
        match input.u8() % 16 {
            0..=6 => Action::Send(Send::decode(Side::Prev, input)),
            7..=10 => Action::Send(Send::decode(Side::Next, input)),
            11 => Action::Garbage {
                from: Side::decode(input),
                size_code: input.u8() % 5,
                size: input.u16(),
                circuit: input.bool(),
                fill: input.u8(),
            },
            12 => Action::Replay {
                from: Side::decode(input),
            },
            13 => Action::Cut {
                from: Side::decode(input),
                len: input.u16(),
            },
            14 => Action::Tamper {
                from: Side::decode(input),
                at: input.u16(),
                bit: input.u8(),
            },
            _ => {
                let drop = !input.bool();
                let side = Side::decode(input);
                if drop {
                    Action::Drop { from: side }
                } else {
                    Action::FailWith { to: side }
                }
            }
        }
    }

    fn encode(&self, out: &mut Output) {
        match self {
            Action::Send(send) => {
                out.u8(if send.from == Side::Prev { 0 } else { 7 });
                send.encode(out);
            }
            Action::Garbage {
                from,
                size_code,
                size,
                circuit,
                fill,
            } => {
                out.u8(11);
                from.encode(out);
                out.u8(*size_code)
                    .u16(*size)
                    .u8(u8::from(*circuit))
                    .u8(*fill);
            }
            Action::Replay { from } => {
                out.u8(12);
                from.encode(out);
            }
            Action::Cut { from, len } => {
                out.u8(13);
                from.encode(out);
                out.u16(*len);
            }
            Action::Tamper { from, at, bit } => {
                out.u8(14);
                from.encode(out);
                out.u16(*at).u8(*bit);
            }
            Action::Drop { from } => {
                out.u8(15).u8(0);
                from.encode(out);
            }
            Action::FailWith { to } => {
                out.u8(15).u8(1);
                to.encode(out);
            }
        }
    }
}

impl Send {
    fn decode(from: Side, input: &mut Input<'_>) -> Self {
        let op = input.u8();
        let tensor = TensorSpec::decode(input);
        let blob = match input.u8() % 8 {
            0 | 6 => BlobSpec::Random,
            1 => BlobSpec::RandomLen(input.u16()),
            2 | 7 => BlobSpec::Labels(if input.bool() {
                LabelSpec::Tensor(TensorSpec::decode(input))
            } else {
                LabelSpec::Fit {
                    batch: input.u8(),
                    seed: input.u8(),
                }
            }),
            3 => BlobSpec::Export {
                target: input.u8(),
                count: input.u8(),
                pick: input.u8(),
            },
            4 => BlobSpec::Empty,
            _ => {
                let len = usize::from(input.u8());
                BlobSpec::Sealed(input.bytes(len).to_vec())
            }
        };
        let route = match input.u8() % 3 {
            0 => RouteSpec::Empty,
            1 => RouteSpec::Built {
                other_op: input.bool(),
            },
            _ => RouteSpec::Random(input.u16()),
        };
        Send {
            from,
            op,
            tensor,
            blob,
            route,
        }
    }

    fn encode(&self, out: &mut Output) {
        out.u8(self.op);
        self.tensor.encode(out);
        match &self.blob {
            BlobSpec::Random => {
                out.u8(0);
            }
            BlobSpec::RandomLen(len) => {
                out.u8(1).u16(*len);
            }
            BlobSpec::Labels(LabelSpec::Tensor(t)) => {
                out.u8(2).u8(1);
                t.encode(out);
            }
            BlobSpec::Labels(LabelSpec::Fit { batch, seed }) => {
                out.u8(2).u8(0).u8(*batch).u8(*seed);
            }
            BlobSpec::Export {
                target,
                count,
                pick,
            } => {
                out.u8(3).u8(*target).u8(*count).u8(*pick);
            }
            BlobSpec::Empty => {
                out.u8(4);
            }
            BlobSpec::Sealed(payload) => {
                let n = payload.len().min(255);
                out.u8(5)
                    .u8(u8::try_from(n).unwrap_or(0))
                    .bytes(&payload[..n]);
            }
        }
        match self.route {
            RouteSpec::Empty => {
                out.u8(0);
            }
            RouteSpec::Built { other_op } => {
                out.u8(1).u8(u8::from(other_op));
            }
            RouteSpec::Random(len) => {
                out.u8(2).u16(len);
            }
        }
    }
}

impl Scenario {
    /// Reads a scenario; never fails.
    pub fn decode(data: &[u8]) -> Self {
        let mut input = Input::new(data);
        let role = input.u8();
        let tweaks = input.u8();
        let seed = input.u32();
        let mut actions = Vec::new();
        while !input.is_empty() && actions.len() < MAX_ACTIONS {
            actions.push(Action::decode(&mut input));
        }
        Scenario {
            role,
            tweaks,
            seed,
            actions,
        }
    }

    /// Writes what [`Scenario::decode`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Output::default();
        out.u8(self.role).u8(self.tweaks).u32(self.seed);
        for action in &self.actions {
            action.encode(&mut out);
        }
        out.finish()
    }
}

/// The roles, in the order of `hop_checks::ROLES`.
pub mod role {
    /// The first hop of a three-hop session (its prev is the designer).
    pub const FIRST: u8 = 0;
    /// Its middle hop, a dummy (identity).
    pub const MIDDLE: u8 = 1;
    /// Its last hop, with the loss and the test end.
    pub const LOSS: u8 = 2;
    /// The only hop of a one-hop session: first, last and loss.
    pub const SOLO: u8 = 3;
    /// The first hop of a two-hop session with per-message routes.
    pub const ROUTED_FIRST: u8 = 4;
    /// Its last hop.
    pub const ROUTED_LAST: u8 = 5;
    /// The last hop of a two-hop session, with the loss, that turns batches around.
    pub const TURNS: u8 = 6;
}

fn send(from: Side, op: u8, tensor: TensorSpec, blob: BlobSpec, route: RouteSpec) -> Action {
    Action::Send(Send {
        from,
        op,
        tensor,
        blob,
        route,
    })
}

fn fit(batch: u8, kind: u8) -> TensorSpec {
    TensorSpec::Fit {
        batch,
        values: Values { kind, seed: batch },
    }
}

/// Seed scenarios for every role: a session that trains, tests and exports as the designer
/// would; the same with frames that must be refused among them; and starts that fail.
pub fn seeds() -> Vec<Vec<u8>> {
    use Side::{Next, Prev};
    let mut out = Vec::new();
    for role in 0..u8::try_from(ROLES).unwrap_or(0) {
        let routed = matches!(role, role::ROUTED_FIRST | role::ROUTED_LAST);
        let turns = role == role::TURNS;
        let loss = matches!(role, role::LOSS | role::SOLO | role::TURNS);
        let first = matches!(role, role::FIRST | role::SOLO | role::ROUTED_FIRST);
        let route = if routed {
            RouteSpec::Built { other_op: false }
        } else {
            RouteSpec::Empty
        };
        let mut train = Vec::new();
        if !first {
            train.push(send(
                Prev,
                op::READY,
                TensorSpec::None,
                BlobSpec::Random,
                RouteSpec::Empty,
            ));
        }
        for step in 0..2u8 {
            train.push(send(
                Prev,
                op::FORWARD,
                fit(step, if step == 0 { 1 } else { 0 }),
                BlobSpec::Labels(LabelSpec::Fit {
                    batch: step,
                    seed: step,
                }),
                route,
            ));
            // A hop that turns batches around takes no backward frame.
            if !turns {
                train.push(send(
                    Next,
                    op::BACKWARD,
                    if loss { TensorSpec::None } else { fit(step, 1) },
                    BlobSpec::Random,
                    route,
                ));
            }
        }
        train.push(send(
            Prev,
            op::TEST,
            fit(2, 0),
            BlobSpec::Random,
            RouteSpec::Empty,
        ));
        for pick in 0..2 {
            train.push(send(
                Prev,
                op::EXPORT,
                TensorSpec::None,
                BlobSpec::Export {
                    target: 0,
                    count: 1,
                    pick,
                },
                RouteSpec::Empty,
            ));
        }
        for (from, op) in [(Prev, op::COVER), (Next, op::REPORT), (Prev, op::REPORT)] {
            train.push(send(
                from,
                op,
                TensorSpec::None,
                BlobSpec::Random,
                RouteSpec::Empty,
            ));
        }
        let scenario = |tweaks: u8, actions: Vec<Action>| {
            Scenario {
                role,
                tweaks,
                seed: u32::from(role),
                actions,
            }
            .encode()
        };
        out.push(scenario(0, train.clone()));
        out.push(scenario(tweak::OBSERVE, train.clone()));

        let mut abuse = train.clone();
        let hostile = [
            Action::Tamper {
                from: Prev,
                at: 100,
                bit: 3,
            },
            Action::Replay { from: Prev },
            Action::Garbage {
                from: Next,
                size_code: 0,
                size: 0,
                circuit: true,
                fill: 9,
            },
            Action::Cut {
                from: Prev,
                len: 100,
            },
            send(
                Prev,
                op::FORWARD,
                TensorSpec::Shape {
                    dims: vec![2, 7],
                    values: Values { kind: 4, seed: 1 },
                },
                BlobSpec::Labels(LabelSpec::Tensor(TensorSpec::Shape {
                    dims: vec![250],
                    values: Values { kind: 3, seed: 0 },
                })),
                route,
            ),
            send(
                Prev,
                op::UNKNOWN,
                TensorSpec::None,
                BlobSpec::Empty,
                RouteSpec::Random(300),
            ),
            Action::Drop { from: Next },
            send(
                Next,
                op::BACKWARD,
                fit(1, 2),
                BlobSpec::Sealed(vec![1, 2, 3]),
                route,
            ),
            Action::FailWith { to: Next },
            send(
                Prev,
                op::COVER,
                TensorSpec::None,
                BlobSpec::Random,
                RouteSpec::Empty,
            ),
        ];
        abuse.splice(1..1, hostile.iter().take(4).cloned());
        abuse.truncate(MAX_ACTIONS.saturating_sub(6));
        abuse.extend(hostile.iter().skip(4).cloned());
        out.push(scenario(0, abuse));
        out.push(scenario(tweak::BAD_CONFIG, train[..3].to_vec()));
        out.push(scenario(
            tweak::BAD_STATE | tweak::LOSS,
            train[..3].to_vec(),
        ));
        if routed {
            out.push(scenario(tweak::NO_ROUTE_KEY, train[..3].to_vec()));
        }
    }
    out
}
