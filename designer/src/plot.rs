//! The paper's Figure 3 for a bench run, as SVG: (a) test accuracy per epoch per mode, (b)
//! training time per epoch per mode.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::bench::{Mode, Row};

const SIZE: (u32, u32) = (720, 440);

fn colour(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
    ][i % 4]
}

/// Draws `value` of `rows` per epoch, one line per mode.
fn lines(
    path: &Path,
    title: &str,
    y_label: &str,
    rows: &[Row],
    modes: &[Mode],
    value: fn(&Row) -> f64,
) -> Result<()> {
    let draw_error = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let epochs = rows.iter().map(|r| r.epoch).max().unwrap_or(1);
    let values: Vec<f64> = rows.iter().map(value).filter(|v| v.is_finite()).collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let (lo, hi) = if lo.is_finite() {
        ((lo - pad).max(0.0), hi + pad)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..epochs as f64 + 0.5, lo..hi)
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels(epochs.min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (i, &mode) in modes.iter().enumerate() {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.mode == mode)
            .map(|r| (r.epoch as f64, value(r)))
            .collect();
        let style = colour(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| draw_error(&e))?
            .label(format!("{mode:?}").to_lowercase())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour(i).filled())),
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

/// Writes Figure 3 (a) to `accuracy` and (b) to `time`.
pub(crate) fn figure3(rows: &[Row], modes: &[Mode], accuracy: &Path, time: &Path) -> Result<()> {
    lines(
        accuracy,
        "(a) test accuracy per epoch",
        "test accuracy",
        rows,
        modes,
        |r| r.test_acc,
    )?;
    lines(
        time,
        "(b) training time per epoch",
        "seconds",
        rows,
        modes,
        |r| r.train_s,
    )
}
