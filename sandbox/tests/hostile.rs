//! Hostile components, each in its own test, while a well-behaved session of the same runtime
//! keeps working: every one gets a typed error, ends only its own session, and the process
//! survives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mixnn_components::{HOSTILE, IDENTITY, LINEAR, READS_FILE};
use mixnn_sandbox::{
    CallBudget, OverBudget, Sandbox, SandboxConfig, SandboxError,
    wit::{Mode, Tensor},
};

fn config() -> SandboxConfig {
    let mut c = SandboxConfig::default();
    // Short, for the infinite loop's test; long enough that on a loaded machine the memory
    // bomb still reaches its limit first (300 ms did not, once, on CI).
    c.call_timeout = Duration::from_millis(1500);
    c.max_memory_bytes = 64 << 20;
    c.max_tensor_values = 100_000;
    c
}

fn hostile_config(behavior: &str, huge_output: usize) -> Vec<u8> {
    format!(r#"{{"layer": {{"behavior": "{behavior}", "huge_output": {huge_output}}}}}"#)
        .into_bytes()
}

fn tensor(data: Vec<f32>) -> Tensor {
    Tensor {
        shape: vec![data.len() as u32],
        data,
    }
}

/// Runs `attack` on a worker thread while another worker drives a well-behaved session of the
/// same component in a loop; checks the bystander's every answer, and that it made progress
/// while the attack ran.
fn with_bystander(attack: impl FnOnce(&Sandbox) + Send + 'static) {
    let sandbox = Arc::new(Sandbox::new(config()).unwrap());
    let module = sandbox.load(HOSTILE).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    session.init(&hostile_config("well-behaved", 0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let bystander = {
        let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
        sandbox
            .spawn_worker("bystander", move || {
                let mut i = 0.0f32;
                while !stop.load(Ordering::Relaxed) {
                    let out = session
                        .forward(&tensor(vec![i, 1.0, -2.0]), Mode::Test)
                        .unwrap();
                    assert_eq!(out.data, vec![2.0 * i, 2.0, -4.0]);
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1.0;
                }
            })
            .unwrap()
    };
    let attacker = {
        let sandbox = Arc::clone(&sandbox);
        sandbox
            .clone()
            .spawn_worker("attacker", move || attack(&sandbox))
            .unwrap()
    };
    let before = calls.load(Ordering::Relaxed);
    attacker.join().unwrap();
    // Let the bystander run a little after the attack too.
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    bystander.join().unwrap();
    assert!(
        calls.load(Ordering::Relaxed) > before,
        "the bystander session made no progress"
    );
}

/// Starts a hostile session with `behavior` and returns the error of its first forward, after
/// checking that the session is dead afterwards.
fn attack(sandbox: &Sandbox, behavior: &str, huge_output: usize) -> SandboxError {
    let module = sandbox.load(HOSTILE).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    session
        .init(&hostile_config(behavior, huge_output))
        .unwrap();
    let err = session
        .forward(&tensor(vec![1.0; 4]), Mode::Train)
        .unwrap_err();
    assert!(err.ends_session(), "{err}");
    assert!(session.is_dead());
    assert!(matches!(
        session.forward(&tensor(vec![1.0]), Mode::Test),
        Err(SandboxError::SessionDead)
    ));
    // A new session of the same component is unaffected.
    let mut fresh = sandbox.start(&module).unwrap();
    fresh.init(&hostile_config("well-behaved", 0)).unwrap();
    assert_eq!(
        fresh.forward(&tensor(vec![3.0]), Mode::Test).unwrap().data,
        vec![6.0]
    );
    err
}

#[test]
fn infinite_loop_hits_the_deadline() {
    with_bystander(|sandbox| {
        let started = std::time::Instant::now();
        let err = attack(sandbox, "infinite-loop", 0);
        assert!(matches!(err, SandboxError::Deadline(_)), "{err}");
        assert_eq!(sandbox.stats().deadlines, 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    });
}

/// A budget far below the call timeout (1.5 s here), as a host gives calls it runs inline.
fn budget() -> CallBudget {
    CallBudget::from_now(Duration::from_millis(50), 1 << 20)
}

#[test]
fn a_budgeted_infinite_loop_stops_at_its_cpu_budget_long_before_the_deadline() {
    with_bystander(|sandbox| {
        let module = sandbox.load(HOSTILE).unwrap();
        let mut session = sandbox.start(&module).unwrap();
        session.init(&hostile_config("infinite-loop", 0)).unwrap();
        session.set_budget(Some(budget()));
        let started = std::time::Instant::now();
        let err = session
            .forward(&tensor(vec![1.0; 4]), Mode::Train)
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::OverBudget(OverBudget::Cpu)),
            "{err}"
        );
        assert!(err.ends_session() && session.is_dead());
        // 50 ms of CPU time and a 10 ms tick; the call timeout (1.5 s) did not stop it.
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "took {:?}",
            started.elapsed()
        );
        let stats = sandbox.stats();
        assert_eq!((stats.over_budget, stats.deadlines), (1, 0), "{stats:?}");
    });
}

#[test]
fn a_budgeted_kernel_over_its_size_ends_the_session_and_under_it_changes_nothing() {
    let sandbox = Sandbox::new(config()).unwrap();
    // Kernel abuse is an error value without a budget, and the end of the session with one.
    let module = sandbox.load(HOSTILE).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    session.init(&hostile_config("kernel-abuse", 0)).unwrap();
    session.set_budget(Some(budget()));
    let err = session
        .forward(&tensor(vec![1.0]), Mode::Train)
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::OverBudget(OverBudget::Kernel(_))),
        "{err}"
    );
    assert!(session.is_dead());

    // The paper's first layer at batch 8 (0.8 M multiply-adds a gemm) within the budget
    // computes exactly what it computes without one.
    let linear = sandbox.load(LINEAR).unwrap();
    let config = br#"{"layer": {"in_features": 784, "out_features": 128}, "seed": 3}"#;
    let input = Tensor {
        shape: vec![8, 784],
        data: (0..8 * 784).map(|i| (i % 255) as f32 / 255.0).collect(),
    };
    let outputs: Vec<Tensor> = [None, Some(budget())]
        .into_iter()
        .map(|budget| {
            let mut layer = sandbox.start(&linear).unwrap();
            layer.init(config).unwrap();
            layer.set_budget(budget);
            layer.forward(&input, Mode::Train).unwrap()
        })
        .collect();
    assert_eq!(outputs[0].shape, vec![8, 128]);
    assert!(
        outputs[0]
            .data
            .iter()
            .zip(&outputs[1].data)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    assert_eq!(sandbox.stats().over_budget, 1);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    with_bystander(|sandbox| {
        let err = attack(sandbox, "memory-bomb", 0);
        assert!(
            matches!(err, SandboxError::MemoryLimit(n) if n == 64 << 20),
            "{err}"
        );
        assert_eq!(sandbox.stats().memory_limits, 1);
    });
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    with_bystander(|sandbox| {
        let err = attack(sandbox, "recursion", 0);
        assert!(matches!(err, SandboxError::StackOverflow), "{err}");
        assert_eq!(sandbox.stats().stack_overflows, 1);
    });
}

#[test]
fn unreachable_traps_with_the_panic_message() {
    with_bystander(|sandbox| {
        let err = attack(sandbox, "unreachable", 0);
        let SandboxError::Trap { .. } = &err else {
            panic!("{err}")
        };
        let message = err.to_string();
        assert!(
            message.contains("hostile layer reached unreachable code"),
            "{message}"
        );
        assert_eq!(sandbox.stats().traps, 1);
    });
}

#[test]
fn oversized_output_is_refused() {
    with_bystander(|sandbox| {
        let err = attack(sandbox, "huge-output", 100_001);
        assert!(matches!(err, SandboxError::BadOutput(_)), "{err}");
        assert_eq!(sandbox.stats().bad_outputs, 1);
    });
}

#[test]
fn wasi_capabilities_are_refused_at_load() {
    with_bystander(|sandbox| {
        let err = sandbox.load(READS_FILE).unwrap_err();
        let SandboxError::ForbiddenImport(name) = &err else {
            panic!("{err}")
        };
        assert!(
            name.starts_with("wasi:filesystem/") || name.starts_with("wasi:clocks/"),
            "{name}"
        );
        assert_eq!(sandbox.stats().refused_components, 1);
    });
}

#[test]
fn unknown_imports_are_refused_at_load() {
    with_bystander(|sandbox| {
        let component = wat::parse_str(
            r#"(component (import "evil:spy/exfiltrate@1.0.0" (instance (export "send" (func)))))"#,
        )
        .unwrap();
        let err = sandbox.load(&component).unwrap_err();
        assert!(
            matches!(&err, SandboxError::ForbiddenImport(n) if n == "evil:spy/exfiltrate@1.0.0"),
            "{err}"
        );
    });
}

#[test]
fn garbage_and_non_components_are_refused() {
    with_bystander(|sandbox| {
        for bytes in [&b""[..], b"garbage instead of a component"] {
            assert!(
                matches!(sandbox.load(bytes), Err(SandboxError::NotAComponent)),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            sandbox.load(b"\0asm\x0d\0\x01\0garbage"),
            Err(SandboxError::Invalid(_))
        ));
        // A core module is not a component.
        let core = wat::parse_str("(module)").unwrap();
        assert!(matches!(
            sandbox.load(&core),
            Err(SandboxError::NotAComponent)
        ));
        // A component that exports nothing does not implement the layer world.
        let empty = wat::parse_str("(component)").unwrap();
        assert!(matches!(
            sandbox.load(&empty),
            Err(SandboxError::Invalid(_))
        ));
        // Truncated real component.
        assert!(matches!(
            sandbox.load(&IDENTITY[..IDENTITY.len() / 2]),
            Err(SandboxError::Invalid(_))
        ));
        let big = vec![0u8; sandbox.config().max_component_bytes + 1];
        assert!(matches!(
            sandbox.load(&big),
            Err(SandboxError::TooLarge { .. })
        ));
    });
}

#[test]
fn layer_errors_are_values_and_keep_the_session() {
    let sandbox = Sandbox::new(config()).unwrap();
    let module = sandbox.load(LINEAR).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    // Out of order, bad config, bad shape: errors, but the session lives on.
    assert!(matches!(
        session.forward(&tensor(vec![1.0]), Mode::Test),
        Err(SandboxError::Layer(_))
    ));
    assert!(matches!(
        session.init(b"{not json"),
        Err(SandboxError::Layer(_))
    ));
    let info = session
        .init(br#"{"seed": 3, "layer": {"in_features": 3, "out_features": 2}}"#)
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.param_count, info.is_loss),
        ("linear", 8, false)
    );
    let bad = Tensor {
        shape: vec![2, 2],
        data: vec![0.0; 4],
    };
    assert!(matches!(
        session.forward(&bad, Mode::Train),
        Err(SandboxError::Layer(_))
    ));
    let inconsistent = Tensor {
        shape: vec![5, 3],
        data: vec![0.0; 3],
    };
    assert!(matches!(
        session.forward(&inconsistent, Mode::Train),
        Err(SandboxError::Layer(_))
    ));
    let ok = Tensor {
        shape: vec![1, 3],
        data: vec![1.0, 2.0, 3.0],
    };
    let out = session.forward(&ok, Mode::Train).unwrap();
    assert_eq!(out.shape, vec![1, 2]);
    assert!(!session.is_dead());
}

#[test]
fn compiled_components_are_cached_by_content() {
    let sandbox = Sandbox::new(config()).unwrap();
    let t = std::time::Instant::now();
    let first = sandbox.load(LINEAR).unwrap();
    let compile = t.elapsed();
    let t = std::time::Instant::now();
    let second = sandbox.load(LINEAR).unwrap();
    let cached = t.elapsed();
    assert_eq!(first.hash(), second.hash());
    assert!(
        cached < compile,
        "cached load {cached:?} vs compile {compile:?}"
    );
}

#[test]
fn kernel_abuse_is_refused_as_an_error_value() {
    with_bystander(|sandbox| {
        let module = sandbox.load(HOSTILE).unwrap();
        let mut session = sandbox.start(&module).unwrap();
        session.init(&hostile_config("kernel-abuse", 0)).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let err = session
                .forward(&tensor(vec![1.0]), Mode::Train)
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("multiply-adds") && message.contains("cannot fit"),
                "{message}"
            );
            assert!(!err.ends_session(), "{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            started.elapsed()
        );
        assert!(!session.is_dead());
        assert_eq!(sandbox.stats().kernel_refusals, 4);
    });
}

#[test]
fn convolution_abuse_is_refused_as_an_error_value() {
    with_bystander(|sandbox| {
        let module = sandbox.load(HOSTILE).unwrap();
        let mut session = sandbox.start(&module).unwrap();
        session.init(&hostile_config("conv-abuse", 0)).unwrap();
        let started = std::time::Instant::now();
        let err = session
            .forward(&tensor(vec![1.0]), Mode::Train)
            .unwrap_err();
        let message = err.to_string();
        for part in ["multiply-adds", "cannot fit", "elements"] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(!err.ends_session(), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            started.elapsed()
        );
        assert!(!session.is_dead());
        assert_eq!(sandbox.stats().kernel_refusals, 3);
    });
}

/// `component` with a custom section named `tag` at its end: as valid, but another hash.
fn variant(component: &[u8], tag: u8) -> Vec<u8> {
    let mut bytes = component.to_vec();
    // Section 0 (custom), 2 bytes long: a name of length 1.
    bytes.extend([0, 2, 1, tag]);
    bytes
}

#[test]
fn compiled_components_are_cached_within_a_byte_budget() {
    // A stranger chooses the components: a host keeps only so much compiled code.
    let probe = Sandbox::new(config()).unwrap();
    probe.load(IDENTITY).unwrap();
    let mut c = config();
    // Room for two compiled copies of the identity layer, not three.
    c.max_cached_code_bytes = 2 * probe.cached_code_bytes() + probe.cached_code_bytes() / 2;
    let sandbox = Sandbox::new(c).unwrap();
    for tag in 0..3 {
        sandbox.load(&variant(IDENTITY, tag)).unwrap();
        assert!(sandbox.cached_code_bytes() <= sandbox.config().max_cached_code_bytes);
    }
    assert_eq!(sandbox.stats().loads, 3);
    // The third pushed the first two out; it stays.
    sandbox.load(&variant(IDENTITY, 2)).unwrap();
    assert_eq!(sandbox.stats().loads, 3);
    sandbox.load(&variant(IDENTITY, 0)).unwrap();
    assert_eq!(sandbox.stats().loads, 4);
    // A valid session from a variant.
    let module = sandbox.load(&variant(IDENTITY, 0)).unwrap();
    let mut session = sandbox.start(&module).unwrap();
    session
        .init(br#"{"seed":0,"optimizer":{"lr":0,"momentum":0},"layer":{}}"#)
        .unwrap();
}
