//! `mixnn bench floor` end to end with small numbers: real relay processes (UDP and QUIC) and a
//! short session over host processes; the JSON line and report.json carry every figure, each
//! positive, and no relay outlives the bench.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn mnist() -> PathBuf {
    std::env::var_os("MIXNN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist")
        })
}

#[test]
fn floor_bench_reports_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_mixnn"))
        .args([
            "bench",
            "floor",
            "--relays",
            "3",
            "--laps",
            "50",
            "--warmup-laps",
            "10",
        ])
        .args(["--rounds", "2", "--frame-bytes", "1024"])
        .args([
            "--hosts",
            "5",
            "--dummies",
            "0",
            "--batches",
            "3",
            "--warmup-batches",
            "1",
        ])
        .args(["--train-limit", "256", "--test-limit", "10", "--data"])
        .arg(mnist())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for kind in ["udp ", "quic ", "cascade "] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(kind) && l.contains("us per link")),
            "no {kind}line in:\n{stdout}"
        );
    }
    let last = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json, report, "the JSON line and report.json differ");
    for field in [
        "udp_us_per_link",
        "quic_us_per_link",
        "cascade_us_per_link",
        "frame_bytes",
        "processes",
        "rounds",
    ] {
        let v = json[field].as_f64();
        assert!(v.is_some_and(|v| v > 0.0), "{field}: {:?}", json[field]);
    }
    assert_eq!(json["frame_bytes"], 1024);
    assert_eq!(json["processes"], 4);
    assert_eq!(
        json["cascade"]["links_per_batch"], 10,
        "5 hops, the loss hop turning: 5 links each way"
    );
    // The relays stopped with the bench (they exit when their stdin closes).
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let left = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(env!("CARGO_BIN_EXE_mixnn")) && l.contains("floor-relay"))
        .count();
    assert_eq!(left, 0, "relay processes left behind");
}
