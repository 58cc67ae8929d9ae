//! PNG charts from the figures (plotters, text drawn with DejaVu Sans from Debian's
//! fonts-dejavu-core): deliveries/s against connections, and commit-to-client latency
//! percentiles against the write rate, one line per system (and percentile).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::systems::System;
use crate::Row;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn color(system: System) -> RGBColor {
    match system {
        System::Feedgate => RGBColor(0x1f, 0x77, 0xb4),
        System::FeedgateNoIndex => RGBColor(0x9e, 0xc6, 0xe3),
        System::Nats => RGBColor(0x2c, 0xa0, 0x2c),
        System::Python => RGBColor(0xd6, 0x27, 0x28),
    }
}

/// One line of a chart: a label, a color, a dash, and its points.
struct Line {
    label: String,
    color: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

/// Draws the charts the rows allow; returns the files written.
pub fn render(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>> {
    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .with_context(|| format!("{FONT} (apt-get install fonts-dejavu-core)"))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let mut written = Vec::new();

    let mut fanout = Vec::new();
    for system in [System::Feedgate, System::Nats, System::Python] {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.chart == Some("fanout"))
            .filter_map(|r| Some((r.x?, crate::value_of(r, system)?)))
            .collect();
        if !points.is_empty() {
            fanout.push(Line {
                label: system.name().into(),
                color: color(system),
                width: 3,
                points,
            });
        }
    }
    if !fanout.is_empty() {
        let path = dir.join("fanout.png");
        draw(
            &path,
            "Fan-out: deliveries per second",
            "connections",
            "deliveries/s",
            &fanout,
            false,
        )?;
        written.push(path);
    }

    let mut latency = Vec::new();
    for system in [System::Feedgate, System::Python] {
        for (figure, width) in [("p50", 1), ("p99", 3), ("p99.9", 2)] {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| {
                    r.chart == Some("commit") && r.figure.starts_with(&format!("{figure} "))
                })
                .filter_map(|r| Some((r.x?, crate::value_of(r, system)?)))
                .collect();
            if !points.is_empty() {
                latency.push(Line {
                    label: format!("{} {figure}", system.name()),
                    color: color(system),
                    width,
                    points,
                });
            }
        }
    }
    if !latency.is_empty() {
        let path = dir.join("commit-latency.png");
        let title = "Commit to client: latency, 100 subscribers (log scale)";
        draw(&path, title, "target rows/s", "ms", &latency, true)?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    log_y: bool,
) -> Result<()> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let ys = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let y_max = ys().fold(0.0f64, f64::max);
    let y_min = ys().fold(f64::MAX, f64::min);
    let pad = ((x_max - x_min) * 0.1).max(x_max * 0.1).max(1.0);
    let x_range = (x_min - pad).max(0.0)..x_max + pad;
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(90);
    if log_y {
        let y_range = (y_min / 2.0).max(1e-3)..y_max * 2.0;
        let chart = builder
            .build_cartesian_2d(x_range, y_range.log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        plot(chart, x_label, y_label, lines)?;
    } else {
        let chart = builder
            .build_cartesian_2d(x_range, 0.0..y_max * 1.15 + 1e-9)
            .map_err(|e| anyhow!("{e}"))?;
        plot(chart, x_label, y_label, lines)?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Mesh, lines, points and legend, on either kind of y axis.
fn plot<'a, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for line in lines {
        let style = line.color.stroke_width(line.width);
        let legend = line.color;
        chart
            .draw_series(LineSeries::new(line.points.clone(), style))
            .map_err(|e| anyhow!("{e}"))?
            .label(line.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], legend.stroke_width(3))
            });
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 5, line.color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
