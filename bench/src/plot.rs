//! The plot of BENCHMARKS.md: write units per stored message and append
//! latency against conversation length, convo beside the peer, as a PNG.
//! Text is drawn with DejaVu Sans from the system (Debian's
//! fonts-dejavu-core), so that the harness needs no font of its own.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::AtLength;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("DejaVu Sans not found: install fonts-dejavu-core")?;
    register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| "could not load DejaVu Sans".to_string())
}

fn series(rows: &[AtLength], value: impl Fn(&AtLength) -> f64) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.reached)
        .map(|r| (r.length as f64, value(r)))
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .collect()
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    convo: Vec<(f64, f64)>,
    peer: Vec<(f64, f64)>,
) -> Result<(), String> {
    let all: Vec<f64> = convo.iter().chain(&peer).map(|(_, y)| *y).collect();
    let max_x = convo.iter().chain(&peer).map(|(x, _)| *x).fold(10.0, f64::max);
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(*y), hi.max(*y)));
    // Whole decades, so that the log axis has labelled ticks.
    let (lo, hi) = if all.is_empty() {
        (0.1, 10.0)
    } else {
        (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()))
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((5.0..max_x * 2.0).log_scale(), (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("messages in the conversation")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| if *y >= 1.0 { format!("{y:.0}") } else { format!("{y}") })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, points, color) in [("convo", convo, BLUE), ("peer (LangChain)", peer, RED)] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())
}

/// Two panels: write units per message, and append latency (median).
pub fn cost_and_latency(path: &Path, convo: &[AtLength], peer: &[AtLength]) -> Result<(), String> {
    load_font()?;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    let writes = |r: &AtLength| r.write_units_per_message + r.index_write_units_per_message;
    panel(
        &left,
        "Write units per stored message",
        "write units / message",
        series(convo, writes),
        series(peer, writes),
    )?;
    panel(
        &right,
        "Append latency, median (moto)",
        "ms",
        series(convo, |r| r.append_ms_p50),
        series(peer, |r| r.append_ms_p50),
    )?;
    root.present().map_err(|e| e.to_string())
}
