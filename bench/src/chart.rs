//! `chart`: draws a fan-out sweep (p99 latency against deliveries per second, one line per server)
//! from the JSON lines `fanout --json` appended, as an SVG file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, ensure};
use plotters::prelude::*;

/// One point of a sweep.
struct Point {
    deliveries: f64,
    p99_ms: f64,
}

pub fn draw(input: &Path, output: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if v["scenario"] != "fanout" {
            continue;
        }
        let label = v["label"].as_str().unwrap_or("server").to_owned();
        let (Some(deliveries), Some(p99_ms)) =
            (v["deliveries_per_s"].as_f64(), v["p99_ms"].as_f64())
        else {
            continue;
        };
        series
            .entry(label)
            .or_default()
            .push(Point { deliveries, p99_ms });
    }
    ensure!(
        !series.is_empty(),
        "no fanout results in {}",
        input.display()
    );
    for points in series.values_mut() {
        points.sort_by(|a, b| a.deliveries.total_cmp(&b.deliveries));
    }
    let max_x = series
        .values()
        .flatten()
        .map(|p| p.deliveries)
        .fold(1.0, f64::max)
        * 1.05;
    let max_y = series
        .values()
        .flatten()
        .map(|p| p.p99_ms)
        .fold(100.0, f64::max)
        * 1.2;

    let root = SVGBackend::new(output, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fan-out: p99 delivery latency vs deliveries/s",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_x, (0.5f64..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("deliveries per second")
        .y_desc("p99 latency (ms, log scale)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 50.0), (max_x, 50.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("p99 = 50 ms")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.4)));
    // In label order: ioplex, ioplex+plugins, node, node+plugins.
    let colours = [
        RGBColor(214, 69, 65),
        RGBColor(245, 121, 0),
        RGBColor(52, 101, 164),
        RGBColor(6, 152, 154),
        RGBColor(78, 154, 6),
    ];
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.deliveries, p.p99_ms.max(0.5)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
