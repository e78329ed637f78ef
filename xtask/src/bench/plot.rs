//! The benchmark report's plots, drawn by `plotters` into SVG strings.
//!
//! `margin_chart`: one horizontal bar per comparison, on a log axis centred on 1×: how many
//! times better than its reference (or than its goal) a figure is, so that bars to the right
//! are better and bars to the left worse, whatever the unit and whether lower or higher is
//! better. `grouped_scatter`: per-trial times on a log axis, in groups (a trial type) of columns (a
//! system), each system one colour throughout, with a legend.

use anyhow::{anyhow, Result};
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

/// One series' values in a group: `(series label, values)`.
pub type Column = (String, Vec<f64>);
/// A group of columns: `(group label, columns)`.
pub type Group = (String, Vec<Column>);

/// Per-trial values on a log axis, in `groups` of `(group label, columns)`, each column
/// `(series label, values)`; a series keeps its colour in every group and is named in the
/// legend; each column's median is a short black bar. Values ≤ 0 or not finite are left out.
pub fn grouped_scatter(title: &str, y_desc: &str, groups: &[Group]) -> Result<String> {
    let mut series: Vec<String> = Vec::new();
    for (_, columns) in groups {
        for (label, _) in columns {
            if !series.contains(label) {
                series.push(label.clone());
            }
        }
    }
    let values =
        || groups.iter().flat_map(|(_, columns)| columns.iter().flat_map(|(_, values)| values.iter().copied()));
    let shown = |value: &f64| value.is_finite() && *value > 0.0;
    let smallest = values().filter(shown).fold(f64::INFINITY, f64::min);
    let largest = values().filter(shown).fold(0.0, f64::max);
    let (y_min, y_max) = if smallest.is_finite() { (smallest / 2.0, largest * 2.0) } else { (1.0, 10.0) };
    let n_groups = groups.len().max(1);
    let width = (WIDTH).max(60 * series.len() as u32 * n_groups as u32 / 2 + 120);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let labels: Vec<String> = groups.iter().map(|(label, _)| label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n_groups as f64, (y_min..y_max).log_scale())
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n_groups * 2 + 1)
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
        let n_series = series.len().max(1) as f64;
        for (series_index, name) in series.iter().enumerate() {
            let color = Palette99::pick(series_index).to_rgba();
            let mut points = Vec::new();
            let mut medians = Vec::new();
            for (group_index, (_, columns)) in groups.iter().enumerate() {
                let Some((_, column)) = columns.iter().find(|(label, _)| label == name) else { continue };
                let slot = 0.9 / n_series;
                let centre = group_index as f64 + 0.05 + slot * (series_index as f64 + 0.5);
                let mut sorted: Vec<f64> = column.iter().copied().filter(shown).collect();
                let n = sorted.len().max(1) as f64;
                points.extend(
                    sorted
                        .iter()
                        .enumerate()
                        .map(|(trial, value)| (centre + (trial as f64 / n - 0.5) * slot * 0.6, *value)),
                );
                sorted.sort_by(f64::total_cmp);
                if let Some(median) = sorted.get(sorted.len() / 2) {
                    medians.push((centre - slot * 0.4, centre + slot * 0.4, *median));
                }
            }
            chart
                .draw_series(points.into_iter().map(|point| Circle::new(point, 3, color.mix(0.7).filled())))
                .map_err(draw_error)?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
            for (left, right, median) in medians {
                chart
                    .draw_series(LineSeries::new([(left, median), (right, median)], BLACK.stroke_width(2)))
                    .map_err(draw_error)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
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
    fn grouped_scatter_draws_every_positive_point_and_names_every_series() {
        let groups = vec![
            (
                "link_cut".to_string(),
                vec![("taskd".to_string(), vec![10.0, 12.0]), ("keepalived".to_string(), vec![600.0])],
            ),
            (
                "crash".to_string(),
                vec![("taskd".to_string(), vec![15.0, f64::NAN]), ("keepalived_tuned".to_string(), vec![170.0])],
            ),
        ];
        let svg = grouped_scatter("failover", "ms", &groups).expect("draw");
        // Five points, plus one legend mark per series.
        assert_eq!(svg.matches("<circle").count(), 5 + 3, "{svg}");
        for label in ["taskd", "keepalived_tuned", "link_cut", "crash"] {
            assert!(svg.contains(label), "no {label:?} in\n{svg}");
        }
    }
}
