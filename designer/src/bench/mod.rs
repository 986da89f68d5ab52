//! `mixnn bench`: benchmarks that measure side by side in one run, print tables, and write
//! JSON reports and plots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

pub(crate) mod chaos;
pub(crate) mod deep;
pub(crate) mod floor;
pub(crate) mod load;
pub(crate) mod paper;
pub(crate) mod plot;
pub(crate) mod scale;

/// The machine a report comes from.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    cpu: String,
    cores: usize,
    os: String,
}

impl Machine {
    pub(crate) fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// The median (NaN for none).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The `q` quantile of `sorted`, interpolated (NaN for none).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => {
            let at = q.clamp(0.0, 1.0) * (n - 1) as f64;
            // Whole, and within 0..n: the casts are exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
            let (a, b) = (sorted[lo], sorted[hi]);
            a + (b - a) * (at - at.floor())
        }
    }
}

/// Resident memory of process `pid`, in MB.
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Writes `report` as `out/report.json` (creating `out`); returns the file's path.
pub(crate) fn write_report(out: &Path, report: &impl Serialize) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
