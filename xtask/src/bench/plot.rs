//! The benchmark report's plots, drawn by `plotters` into SVG strings.
//!
//! `margin_chart`: one horizontal bar per comparison, on a log axis centred on 1×: how many
//! times better than its reference (or than its goal) a figure is, so that bars to the right
//! are better and bars to the left worse, whatever the unit and whether lower or higher is
//! better. `trial_scatter`: per-trial times of one or more measures, one column each.

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// What a margin bar compares: a side-by-side reference, or a goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarginKind {
    Reference,
    Goal,
}

/// One bar: `times_better` is > 1 when ours is better than the reference (or within the goal).
#[derive(Clone, Debug)]
pub struct MarginBar {
    pub label: String,
    pub times_better: f64,
    pub kind: MarginKind,
}

const WIDTH: u32 = 760;
const ROW_HEIGHT: u32 = 34;

fn draw_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("draw the plot: {error}")
}

/// A horizontal bar chart of `bars` on a log axis around 1×; `None` when no bar has a finite value.
pub fn margin_chart(title: &str, bars: &[MarginBar]) -> Result<Option<String>> {
    let bars: Vec<&MarginBar> =
        bars.iter().filter(|bar| bar.times_better.is_finite() && bar.times_better > 0.0).collect();
    if bars.is_empty() {
        return Ok(None);
    }
    let smallest = bars.iter().map(|bar| bar.times_better).fold(f64::INFINITY, f64::min);
    let largest = bars.iter().map(|bar| bar.times_better).fold(0.0, f64::max);
    let x_min = (smallest / 2.0).min(0.25);
    let x_max = (largest * 2.0).max(4.0);
    let height = 90 + ROW_HEIGHT * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(8)
            .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..bars.len() as f64)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("times better: > 1 is better than the reference (blue) or within the goal (green)")
            .x_label_formatter(&|x| format!("{x}×"))
            .draw()
            .map_err(draw_error)?;
        let n_rows = bars.len() as f64;
        for (index, bar) in bars.iter().enumerate() {
            let top = n_rows - index as f64 - 0.25;
            let bottom = n_rows - index as f64 - 0.65;
            let good = bar.times_better >= 1.0;
            let color = match (bar.kind, good) {
                (MarginKind::Reference, true) => RGBColor(0x1f, 0x77, 0xb4),
                (MarginKind::Reference, false) => RGBColor(0xff, 0x7f, 0x0e),
                (MarginKind::Goal, true) => RGBColor(0x2c, 0xa0, 0x2c),
                (MarginKind::Goal, false) => RGBColor(0xd6, 0x27, 0x28),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(1.0, bottom), (bar.times_better, top)],
                    color.mix(0.8).filled(),
                )))
                .map_err(draw_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}: {}", bar.label, times(bar.times_better)),
                    (x_min * 1.05, n_rows - index as f64 - 0.05),
                    ("sans-serif", 12).into_font().color(&BLACK),
                )))
                .map_err(draw_error)?;
        }
        chart.draw_series(LineSeries::new([(1.0, 0.0), (1.0, n_rows)], BLACK.stroke_width(1))).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(Some(svg))
}

/// `2.5×`, `0.31×`, `1200×`: three significant digits at most.
pub fn times(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}×")
    } else if value >= 10.0 {
        format!("{value:.1}×")
    } else {
        format!("{value:.2}×")
    }
}

/// Per-trial values as a scatter: one column per `(label, values)`, with the column's median
/// drawn as a short bar. `y_desc` names the unit.
pub fn trial_scatter(title: &str, y_desc: &str, columns: &[(String, Vec<f64>)]) -> Result<String> {
    let largest =
        columns.iter().flat_map(|(_, values)| values.iter().copied()).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let n_columns = columns.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let labels: Vec<String> = columns.iter().map(|(label, _)| label.clone()).collect();
        let mut chart: ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
            ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..n_columns as f64, 0.0..largest * 1.1)
                .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n_columns * 2 + 1)
            .x_label_formatter(&|x| {
                let index = x.floor() as usize;
                if (x - index as f64 - 0.5).abs() < 0.01 {
                    labels.get(index).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(draw_error)?;
        for (index, (_, values)) in columns.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let centre = index as f64 + 0.5;
            let n = values.len().max(1) as f64;
            chart
                .draw_series(values.iter().enumerate().map(|(trial, value)| {
                    let jitter = (trial as f64 / n - 0.5) * 0.4;
                    Circle::new((centre + jitter, *value), 3, color.mix(0.7).filled())
                }))
                .map_err(draw_error)?;
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            if let Some(median) = sorted.get(sorted.len() / 2) {
                chart
                    .draw_series(LineSeries::new(
                        [(centre - 0.3, *median), (centre + 0.3, *median)],
                        BLACK.stroke_width(2),
                    ))
                    .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_chart_is_an_svg_with_every_label() {
        let bars = vec![
            MarginBar { label: "spawn vs may".to_string(), times_better: 5.1, kind: MarginKind::Reference },
            MarginBar { label: "yield vs generator".to_string(), times_better: 0.5, kind: MarginKind::Reference },
            MarginBar { label: "SyncPoint p50 goal".to_string(), times_better: 24.0, kind: MarginKind::Goal },
        ];
        let svg = margin_chart("runtime", &bars).expect("draw").expect("a plot");
        assert!(svg.starts_with("<svg"), "{svg}");
        for label in ["spawn vs may: 5.10×", "yield vs generator: 0.50×", "SyncPoint p50 goal: 24.0×"] {
            assert!(svg.contains(label), "no {label:?} in\n{svg}");
        }
        assert_eq!(margin_chart("empty", &[]).expect("nothing to draw"), None);
    }

    #[test]
    fn trial_scatter_draws_a_point_per_trial() {
        let columns = vec![("a".to_string(), vec![1.0, 2.0, 3.0]), ("b".to_string(), vec![10.0, 12.0])];
        let svg = trial_scatter("trials", "ms", &columns).expect("draw");
        assert_eq!(svg.matches("<circle").count(), 5, "{svg}");
    }
}
