//! Line charts as SVG: the paper's Figure 3 for a `bench paper` run, and the growth curves
//! of `bench scale`.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::paper::{Mode, Row};

const SIZE: (u32, u32) = (720, 440);

fn colour(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(127, 127, 127),
    ][i % 5]
}

/// One line of a chart: its name and its points.
pub(crate) type Series = (String, Vec<(f64, f64)>);

/// The range of `values` with a margin, from 0 if `from_zero`.
fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-6);
    let lo = if from_zero { 0.0 } else { (lo - pad).max(0.0) };
    lo..hi + pad
}

/// Draws `series` as lines with points into an SVG file at `path`.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    y_from_zero: bool,
) -> Result<()> {
    let draw_error = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    // Whole numbers on the x axis (epochs, hops) get whole-number ticks.
    let mut xs: Vec<f64> = points().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let whole = xs.iter().all(|x| x.fract() == 0.0) && xs.len() <= 12;
    let x = match (whole, xs.first(), xs.last()) {
        (true, Some(&lo), Some(&hi)) => lo - 0.5..hi + 0.5,
        _ => range(xs.iter().copied(), false),
    };
    let ticks = if whole { xs.len() + 1 } else { 10 };
    let y = range(points().map(|p| p.1), y_from_zero);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(ticks)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let style = colour(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| draw_error(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, colour(i).filled())),
            )
            .map_err(|e| draw_error(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}

/// PyTorch's figures for the same run, where known: its test accuracy after each epoch, and
/// its seconds per epoch.
pub(crate) struct Reference<'a> {
    pub(crate) accuracy: &'a [f64],
    pub(crate) seconds: f64,
}

/// Writes the paper's Figure 3: (a) test accuracy per epoch to `accuracy`, (b) training time
/// per epoch to `time`, one line per mode, and PyTorch's if known.
pub(crate) fn figure3(
    rows: &[Row],
    modes: &[Mode],
    reference: Option<Reference<'_>>,
    accuracy: &Path,
    time: &Path,
) -> Result<()> {
    let per_mode = |value: fn(&Row) -> f64| -> Vec<Series> {
        modes
            .iter()
            .map(|&m| {
                let points = rows
                    .iter()
                    .filter(|r| r.mode == m)
                    .map(|r| (r.epoch as f64, value(r)))
                    .collect();
                (m.name().to_owned(), points)
            })
            .collect()
    };
    let epochs = rows.iter().map(|r| r.epoch).max().unwrap_or(0);
    let mut acc = per_mode(|r| r.test_acc);
    let mut secs = per_mode(|r| r.train_s);
    if let Some(reference) = reference {
        let name = "pytorch (reference)".to_owned();
        let points = (1..=epochs)
            .zip(reference.accuracy)
            .map(|(e, &a)| (e as f64, a))
            .collect();
        acc.push((name.clone(), points));
        let points = (1..=epochs)
            .map(|e| (e as f64, reference.seconds))
            .collect();
        secs.push((name, points));
    }
    lines(
        accuracy,
        "(a) test accuracy per epoch",
        ("epoch", "test accuracy"),
        &acc,
        false,
    )?;
    lines(
        time,
        "(b) training time per epoch",
        ("epoch", "seconds"),
        &secs,
        true,
    )
}
