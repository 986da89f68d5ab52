//! `mixnn attack` end to end on a small session over host processes: the controls hold (a
//! coalition of no host does what training from scratch does; one of every host gets the
//! designer's model back exactly, from its members' audits alone), the labels' exact leak is
//! where the gradients spell them and nowhere once the designer keeps the last layers, and
//! every kind of measurement is in the report.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

mod common;

use std::process::Command;

use common::mnist_dir;

#[test]
fn attacks_on_a_small_session_hold_their_controls() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args([
            "attack",
            "--settings",
            "default,keep-last",
            "--labels",
            "10",
        ])
        .args(["--coalitions", "1", "--epochs", "1", "--concurrent", "2"])
        .args([
            "--train-limit",
            "640",
            "--test-limit",
            "64",
            "--eval",
            "200",
        ])
        .arg("--data")
        .arg(mnist_dir())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the attack failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let report: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        report,
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(out.path().join("report.json")).unwrap()
        )
        .unwrap()
    );
    assert_eq!(report["summary"], true);
    assert_eq!(report["controls"]["k0_matches_baseline"], true);
    assert_eq!(report["controls"]["all_hosts_fidelity"], 1.0);
    let rows = report["rows"].as_array().unwrap();
    let of = |setting: &str, attack: &str| -> Vec<&serde_json::Value> {
        rows.iter()
            .filter(|r| r["setting"] == setting && r["attack"] == attack)
            .collect()
    };
    // Without keep-last, the hosts of the last Linear and of LogSoftmax (layers 2 and 3)
    // read every label off their gradients; with it, no host reads any exactly.
    let exact = |r: &serde_json::Value| r["leak"]["exact"].as_f64();
    for r in of("default", "labels") {
        let role = r["role"].as_str().unwrap();
        if role == "layers 2" || role == "layers 3" {
            assert_eq!(exact(r), Some(1.0), "{r}");
        }
    }
    let kept = of("keep-last", "labels");
    assert!(!kept.is_empty());
    for r in kept {
        assert_eq!(exact(r), Some(0.0), "{r}");
    }
    // Every kind of measurement, with its figures.
    for (setting, attack, field) in [
        ("default", "completion", "fidelity"),
        ("default", "scratch", "accuracy"),
        ("default", "position", "truth"),
        ("keep-last", "completion", "fidelity"),
        ("default", "linking", "success"),
        ("cover", "linking", "success"),
    ] {
        let found = of(setting, attack);
        assert!(!found.is_empty(), "no {attack} rows for {setting}");
        assert!(
            found.iter().all(|r| r[field].is_number()),
            "{attack}: {field}"
        );
    }
    for plot in ["fidelity.svg", "leak.svg"] {
        assert!(out.path().join(plot).is_file(), "{plot}");
    }
}
