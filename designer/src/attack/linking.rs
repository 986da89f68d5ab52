//! Linking by timing: what colluding hosts learn from when frames pass, not from what they carry.
//!
//! Frames have one length and nothing that repeats across links, so all a host has of a session
//! is its two neighbours and the times of its frames. A coalition records, per host and session,
//! a [`Timeline`] (audits, packet captures, a simulation: any will do) and asks:
//!
//! - [`link`]: which session on host A is which on host B, when A and B are not adjacent and
//!   each serves several sessions at once. A batch's forward frame leaves the host nearer the
//!   designer and reaches the other after the links and layers between them, a delay that
//!   changes little from batch to batch; so does its gradient's on the way back. Between two
//!   different cascades the delays wander: their periods differ, and even when they do not, each
//!   batch's jitter adds to the last. The [`score`] of a pair is the share of its frames that
//!   arrive at one steady delay, less what chance puts there; pairs are taken greedily, best
//!   first, down to [`MIN_LINK_SCORE`].
//! - [`position`]: where a host sits and how long its cascade is, from its own timeline.
//!
//! Cover traffic as built stops neither. A cover frame goes from the designer through every
//! hop, so it reaches the farther host at a steady delay and links like a batch (the tests show
//! it); and each hop opens every frame and reads its op, so a host can drop cover from its
//! timeline anyway. Hiding timing would take hops that hold and reorder frames (a mix's pool),
//! or cover that each link adds and removes itself; mixnn has neither.

use serde::{Deserialize, Serialize};

/// The least [`score`] at which [`link`] pairs two sessions. Over 30 draws of the tests'
/// synthetic sessions (8 through both hosts and 2 through each alone, 150 batches each), one
/// session's two timelines scored at least 0.73 without cover and 0.55 with it (batches and
/// cover then arrive at two delays); two sessions at most 0.22, or 0.48 when every cascade had
/// the same mean timings and only jitter set them apart (0.25 over 600 batches).
pub const MIN_LINK_SCORE: f64 = 0.5;

/// One session's delays must agree within the longest delay looked at (the round trip beyond
/// the nearer host) over this: wide enough for a few links' jitter, narrow enough that chance
/// and a slow drift put few of another session's frames in it.
const DELAY_BINS: u64 = 16;

/// Which neighbour a frame comes from or goes to (the host's own `Toward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Toward {
    /// The previous hop (or the designer, for the first hop).
    Prev,
    /// The next hop (or the designer, for the last hop).
    Next,
}

/// One frame that passed a host in one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, in microseconds on a clock the coalition shares (unix time, say: the two hosts'
    /// clocks must agree closely against the delays between them).
    pub at_us: u64,
    /// The link it came in or went out on.
    pub link: Toward,
    /// Whether it arrived (rather than left).
    pub inbound: bool,
}

/// What one host recorded of one session: its frames, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The frames.
    pub events: Vec<Event>,
}

impl Timeline {
    /// The sorted times of the frames on `link` that arrived (`inbound`) or left.
    fn times(&self, link: Toward, inbound: bool) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .events
            .iter()
            .filter(|e| e.link == link && e.inbound == inbound)
            .map(|e| e.at_us)
            .collect();
        times.sort_unstable();
        times
    }
}

/// How [`link`] did against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linking {
    /// For each of A's sessions, the B session it was linked to.
    pub guess: Vec<Option<usize>>,
    /// The share of A's sessions guessed right ([`success_rate`]).
    pub success_rate: f64,
    /// What a blind guess gets ([`chance`]).
    pub chance: f64,
}

/// What one host's timeline says of where it sits ([`position`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    /// The steady time from a forward frame leaving to its gradient coming back: 0 on the last hop.
    pub after_us: u64,
    /// The median time between two gradients: a batch's whole round trip.
    pub period_us: u64,
    /// `after_us / period_us`: the estimated share of the cascade's links after this host.
    pub after_share: f64,
}

/// Links A's sessions to B's: for each of `a`, the index in `b` of the same session, or `None`.
/// Greedy, best pair first: one session's pair scores far above anything else in its row and
/// column, so an optimal assignment (the Hungarian method) would only reorder the noise.
pub fn link(a: &[Timeline], b: &[Timeline]) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f64, usize, usize)> = a
        .iter()
        .enumerate()
        .flat_map(|(i, x)| b.iter().enumerate().map(move |(j, y)| (score(x, y), i, j)))
        .filter(|&(s, _, _)| s >= MIN_LINK_SCORE)
        .collect();
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0));
    let (mut guess, mut taken) = (vec![None; a.len()], vec![false; b.len()]);
    for (_, i, j) in pairs {
        if let (Some(g @ None), Some(t @ false)) = (guess.get_mut(i), taken.get_mut(j)) {
            (*g, *t) = (Some(j), true);
        }
    }
    guess
}

/// How surely `a` and `b` are one session, 0 to 1: the better of the two orders, as neither
/// host knows which of them is nearer the designer.
pub fn score(a: &Timeline, b: &Timeline) -> f64 {
    oriented_score(a, b).max(oriented_score(b, a))
}

/// The score of `up` and `down` as one session with `up` nearer the designer: forward frames
/// go out of `up` to its next hop and into `down` from its previous one, gradients the other
/// way, each within `up`'s round trip beyond it (the window looked at).
fn oriented_score(up: &Timeline, down: &Timeline) -> f64 {
    let up_sent = up.times(Toward::Next, false);
    let after = round_trip(up).map(|(after, _)| after);
    let Some(window) = after.or_else(|| median(gaps(&up_sent))).filter(|&w| w > 0) else {
        return 0.0;
    };
    let (fwd, fwd_frames) = steady(&up_sent, &down.times(Toward::Prev, true), window);
    let back_sent = down.times(Toward::Prev, false);
    let (back, back_frames) = steady(&back_sent, &up.times(Toward::Next, true), window);
    match fwd_frames + back_frames {
        0 => 0.0,
        frames => ((fwd + back) / frames as f64).min(1.0),
    }
}

/// Of the frames `sent` by one host, how many `received` shows at one delay (within a bin of
/// the window over [`DELAY_BINS`]) beyond what chance puts in a bin; and how many frames the
/// flow has (the more of the two, so a busier or shorter session scores less).
fn steady(sent: &[u64], received: &[u64], window: u64) -> (f64, usize) {
    let bin = (window / DELAY_BINS).max(1);
    let mut delays = Vec::new();
    for &s in sent {
        let later = received
            .get(received.partition_point(|&r| r <= s)..)
            .unwrap_or_default();
        let within = later.iter().take_while(|&&r| r <= s.saturating_add(window));
        delays.extend(within.map(|&r| r - s));
    }
    delays.sort_unstable();
    let peak = densest(&delays, bin).len().min(sent.len());
    let chance = delays.len() as f64 * bin as f64 / window as f64;
    let frames = sent.len().max(received.len());
    ((peak as f64 - chance).max(0.0), frames)
}

/// The longest run of the sorted `xs` that fits within `bin` of its first.
fn densest(xs: &[u64], bin: u64) -> &[u64] {
    let (mut best, mut lo) = (0..0, 0);
    for (hi, &x) in xs.iter().enumerate() {
        while xs.get(lo).is_some_and(|&l| l.saturating_add(bin) < x) {
            lo += 1;
        }
        if hi + 1 - lo > best.len() {
            best = lo..hi + 1;
        }
    }
    xs.get(best).unwrap_or_default()
}

/// The steady time from a frame leaving for the next hop to a gradient coming back from it,
/// and the period between gradients. Each frame that leaves is timed to the first gradient
/// after it: a batch's forward frame gives the same span every time, while cover, tests and
/// exports (which do not come back) spread over the period, so the densest bin is the batches'.
/// The last hop gets no gradient: its span is 0, its period that of the gradients it sends.
fn round_trip(t: &Timeline) -> Option<(u64, u64)> {
    let back = t.times(Toward::Next, true);
    if back.is_empty() {
        return Some((0, median(gaps(&t.times(Toward::Prev, false)))?));
    }
    let period = median(gaps(&back))?;
    let mut spans: Vec<u64> = t
        .times(Toward::Next, false)
        .into_iter()
        .filter_map(|s| back.get(back.partition_point(|&b| b <= s)).map(|&b| b - s))
        .collect();
    spans.sort_unstable();
    let steady = densest(&spans, (period / DELAY_BINS).max(1));
    Some((median(steady.to_vec())?, period))
}

fn gaps(times: &[u64]) -> Vec<u64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn median(mut xs: Vec<u64>) -> Option<u64> {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied()
}

/// Where a host sits, from its own timeline; `None` with fewer than two training batches.
///
/// The model: a batch goes forward over the cascade's `n` links from the designer to the last
/// hop and its gradient back over them, each link taking about `L` and each hop `c` a way. A
/// host at position `i` of `n` (1-based) waits, from sending a batch on to getting its
/// gradient, for the `n - i` links and hops after it both ways, `2(n - i)(L + c)`, and a batch
/// takes `2n(L + c) + D`, `D` the designer's own time. So `after_share` estimates `(n - i) / n`:
/// a little low by `D`, and unevenly when links and layers are not alike. The last hop gets no
/// gradient from a next hop: 0. A host that knows `L` and `c` (its own links' round trips, its
/// own layers' times) also reads the length off the period, `n ≈ period / 2(L + c)`: the padded
/// op=0 hides the length, the timing does not.
pub fn position(t: &Timeline) -> Option<Position> {
    let (after_us, period_us) = round_trip(t).filter(|&(_, p)| p > 0)?;
    let after_share = (after_us as f64 / period_us as f64).min(1.0);
    Some(Position {
        after_us,
        period_us,
        after_share,
    })
}

/// The estimated share of the cascade's links that lie after this host, 0 to 1 ([`position`]).
pub fn position_estimate(t: &Timeline) -> Option<f64> {
    position(t).map(|p| p.after_share)
}

/// The share of A's sessions whose guess is the truth (`None` for a session that passes only
/// A); 0 when there is nothing to judge. A missing guess is wrong.
pub fn success_rate(guess: &[Option<usize>], truth: &[Option<usize>]) -> f64 {
    let right = truth
        .iter()
        .enumerate()
        .filter(|&(i, t)| guess.get(i) == Some(t));
    match truth.len() {
        0 => 0.0,
        n => right.count() as f64 / n as f64,
    }
}

/// What a guess drawn at random among B's `b_sessions` gets right: `1 / b_sessions`; 0 with none.
pub fn chance(b_sessions: usize) -> f64 {
    match b_sessions {
        0 => 0.0,
        n => 1.0 / n as f64,
    }
}

/// [`link`], judged against the truth (`truth[i]`: the index in `b` of `a[i]`'s session).
pub fn evaluate(a: &[Timeline], b: &[Timeline], truth: &[Option<usize>]) -> Linking {
    let guess = link(a, b);
    Linking {
        success_rate: success_rate(&guess, truth),
        chance: chance(b.len()),
        guess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{Rng, SeedableRng};

    fn uniform(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
        lo + rng.next_u64() % (hi - lo + 1)
    }

    fn index(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> usize {
        usize::try_from(uniform(rng, lo as u64, hi as u64)).unwrap()
    }

    /// A synthetic cascade of its own links and layers (each session is a different designer's,
    /// through other hosts) or, `Alike`, of one timing for all (a data centre, one model), with
    /// ±10% jitter on every link and layer; `seen` holds what each watched position records.
    struct Cascade {
        link_us: Vec<u64>, // link h leads into hop h
        fwd_us: Vec<u64>,
        bwd_us: Vec<u64>,
        seen: Vec<(usize, Timeline)>,
        rng: ChaCha8Rng,
    }

    impl Cascade {
        fn new(hops: usize, watch: &[usize], tr: Traffic, seed: u64) -> Self {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let alike = matches!(tr, Traffic::Alike);
            let mut draw = |lo, hi| uniform(&mut rng, if alike { hi } else { lo }, hi);
            let link_us = (0..=hops).map(|_| draw(200, 2_000)).collect();
            let fwd_us: Vec<u64> = (0..hops).map(|_| draw(100, 1_500)).collect();
            let bwd_us = fwd_us.iter().map(|&f| f + draw(0, f)).collect();
            let seen = watch.iter().map(|&w| (w, Timeline::default())).collect();
            Cascade {
                link_us,
                fwd_us,
                bwd_us,
                seen,
                rng,
            }
        }
        fn jitter(&mut self, mean: u64) -> u64 {
            uniform(&mut self.rng, mean - mean / 10, mean + mean / 10)
        }
        fn record(&mut self, hop: usize, link: Toward, inbound: bool, at_us: u64) {
            for (_, seen) in self.seen.iter_mut().filter(|(w, _)| *w == hop) {
                seen.events.push(Event {
                    at_us,
                    link,
                    inbound,
                });
            }
        }
        /// A frame from the designer at `t` through every hop, running layers or (cover,
        /// exports) only passed on; the last hop sends it to the designer if `to_designer`.
        fn forward(&mut self, mut t: u64, layers: bool, to_designer: bool) -> u64 {
            let hops = self.fwd_us.len();
            for h in 0..hops {
                t += self.jitter(self.link_us[h]);
                self.record(h, Toward::Prev, true, t);
                t += self.jitter(if layers { self.fwd_us[h] } else { 30 });
                if h + 1 < hops || to_designer {
                    self.record(h, Toward::Next, false, t);
                }
            }
            t
        }
        /// A training batch: the designer's 0.5 ms, forward, loss at the last hop, gradient back.
        fn batch(&mut self, t: u64) -> u64 {
            let t0 = t + self.jitter(500);
            let mut t = self.forward(t0, true, false);
            let last = self.fwd_us.len() - 1;
            self.record(last, Toward::Prev, false, t);
            for h in (0..last).rev() {
                t += self.jitter(self.link_us[h + 1]);
                self.record(h, Toward::Next, true, t);
                t += self.jitter(self.bwd_us[h]);
                self.record(h, Toward::Prev, false, t);
            }
            t + self.jitter(self.link_us[0])
        }
    }

    /// Sessions' timings drawn each its own, or all alike; with cover every so many µs.
    #[derive(Debug, Clone, Copy)]
    enum Traffic {
        Plain,
        Alike,
        Cover(u64),
    }

    /// 150 batches back to back from `start_us`, a test pass (4 frames) and a checkpoint (an
    /// export frame per hop) every 50, and cover at random times if `tr` says so.
    fn simulate(
        hops: usize,
        watch: &[usize],
        start_us: u64,
        tr: Traffic,
        seed: u64,
    ) -> Vec<Timeline> {
        let mut c = Cascade::new(hops, watch, tr, seed);
        let mut t = start_us;
        for k in 1..=150 {
            t = c.batch(t);
            for i in 0..if k % 50 == 0 { 4 + hops } else { 0 } {
                t = c.forward(t, i < 4, true);
            }
        }
        let mut at = start_us;
        while let Traffic::Cover(gap) = tr
            && at < t
        {
            at += uniform(&mut c.rng, 1, 2 * gap);
            c.forward(at, false, true);
        }
        c.seen.into_iter().map(|(_, seen)| seen).collect()
    }

    type Scenario = (Vec<Timeline>, Vec<Timeline>, Vec<Option<usize>>);

    /// `linked` sessions through A and B (4-8 hops, A and B not adjacent, either first), `alone`
    /// through A only and as many through B only, starting within 50 ms; B's in a random order.
    fn scenario(linked: usize, alone: usize, tr: Traffic, seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for s in 0..linked + 2 * alone {
            let hops = index(&mut rng, 4, 8);
            let first = index(&mut rng, 0, hops - 3);
            let mut watch = [first, index(&mut rng, first + 2, hops - 1)];
            if rng.next_u32() % 2 == 0 {
                watch.reverse();
            }
            let start = uniform(&mut rng, 0, 50_000);
            let mut seen = simulate(hops, &watch, start, tr, seed * 1000 + s as u64);
            let (on_b, on_a) = (seen.pop(), seen.pop());
            let tag = (s < linked).then_some(a.len());
            if s < linked + alone {
                a.push(on_a.unwrap_or_default());
            }
            if s < linked || s >= linked + alone {
                b.push((tag, on_b.unwrap_or_default()));
            }
        }
        for i in (1..b.len()).rev() {
            b.swap(i, index(&mut rng, 0, i));
        }
        let mut truth = vec![None; a.len()];
        for (j, &(tag, _)) in b.iter().enumerate() {
            if let Some(i) = tag {
                truth[i] = Some(j);
            }
        }
        (a, b.into_iter().map(|(_, t)| t).collect(), truth)
    }

    /// The mean success over `seeds` scenarios, the least score of one session's two timelines
    /// and the most of two sessions'.
    fn run(linked: usize, alone: usize, tr: Traffic, seeds: u64) -> (f64, f64, f64) {
        let (mut rate, mut same, mut other) = (0.0, 1.0f64, 0.0f64);
        for seed in 0..seeds {
            let (a, b, truth) = scenario(linked, alone, tr, 100 * linked as u64 + seed);
            let r = evaluate(&a, &b, &truth);
            assert_eq!(r.chance, 1.0 / b.len() as f64);
            rate += r.success_rate / seeds as f64;
            for (i, j) in (0..a.len()).flat_map(|i| (0..b.len()).map(move |j| (i, j))) {
                let s = score(&a[i], &b[j]);
                let linked = truth[i] == Some(j);
                same = same.min(if linked { s } else { 1.0 });
                other = other.max(if linked { 0.0 } else { s });
            }
        }
        let chance = chance(linked + alone);
        println!(
            "{tr:?}, {linked} linked + {alone}+{alone} alone: success {rate:.3}, chance {chance:.3}, one session's scores >= {same:.3}, two sessions' <= {other:.3}"
        );
        (rate, same, other)
    }

    #[test]
    fn concurrent_sessions_link_far_above_chance() {
        for sessions in 2..=8 {
            let (rate, same, other) = run(sessions, 0, Traffic::Plain, 3);
            assert!(rate >= 0.9 && same > MIN_LINK_SCORE && other < MIN_LINK_SCORE);
        }
        // Sessions through one host only stay unlinked; alike cascades drift apart by jitter.
        for tr in [Traffic::Plain, Traffic::Alike] {
            let (rate, same, other) = run(6, 2, tr, 3);
            assert!(rate >= 0.9 && same > MIN_LINK_SCORE && other < MIN_LINK_SCORE);
        }
    }

    #[test]
    fn cover_across_the_cascade_links_too() {
        // About one and three cover frames a batch (a batch takes 15-40 ms).
        for gap in [20_000, 8_000] {
            let (rate, same, _) = run(6, 1, Traffic::Cover(gap), 2);
            assert!(rate >= 0.9 && same > MIN_LINK_SCORE);
        }
    }

    #[test]
    fn position_falls_along_a_seven_host_cascade() {
        for tr in [Traffic::Plain, Traffic::Cover(20_000)] {
            for seed in 0..3 {
                let seen = simulate(7, &[0, 1, 2, 3, 4, 5, 6], 0, tr, seed);
                let est: Vec<f64> = seen.iter().filter_map(position_estimate).collect();
                println!("{tr:?}, seed {seed}: {est:.3?}");
                assert_eq!(est.len(), 7);
                assert!(est.windows(2).all(|w| w[0] > w[1]) && est[6] == 0.0);
                for (i, e) in est.iter().enumerate() {
                    assert!((e - (6 - i) as f64 / 7.0).abs() < 0.2, "{est:?}");
                }
            }
        }
    }

    #[test]
    fn degenerate_inputs_say_nothing() {
        let none = Timeline::default();
        let one = Timeline {
            events: vec![Event {
                at_us: 5,
                link: Toward::Next,
                inbound: true,
            }],
        };
        let both = [none.clone(), one.clone()];
        assert!(link(&[], &[]).is_empty() && link(&[], &both).is_empty());
        assert_eq!(link(&both[..1], &[]), vec![None]);
        assert_eq!(link(&both[1..], &both), vec![None]);
        assert_eq!(
            (score(&none, &none), position(&none), position(&one)),
            (0.0, None, None)
        );
        assert_eq!(
            (success_rate(&[], &[]), success_rate(&[], &[Some(0)])),
            (0.0, 0.0)
        );
        assert_eq!(chance(0), 0.0);
        // One session on each side; and more sessions on A than on B.
        let (a, b, truth) = scenario(1, 0, Traffic::Plain, 3);
        assert_eq!(link(&a, &b), truth);
        let (a, b, truth) = scenario(3, 1, Traffic::Plain, 4);
        let guess = link(&a, &b[..1]);
        assert!(guess.iter().flatten().all(|&j| j == 0));
        let linked_to_first = |g: &[Option<usize>]| g.iter().position(|g| *g == Some(0));
        assert_eq!(linked_to_first(&guess), linked_to_first(&truth));
    }
}
