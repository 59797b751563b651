//! `--output FILE.svg`: the latency distribution as a person reads it, latency by
//! percentile with the tail stretched out (the x axis is `-log10(1 - q)`, so 90 %,
//! 99 %, 99.9 % are equally far apart), as HdrHistogram's plots draw it.

use std::path::Path;

use plotters::prelude::*;
use sssonector_actors::Error;

use super::report::Report;

/// Points per halving of the distance to 100 %: enough for a smooth line.
const TICKS_PER_HALF: u32 = 8;

/// The x coordinate of quantile `q`, capped at `x_max` (q = 1 would be infinite).
fn x_of(q: f64, x_max: f64) -> f64 {
    if q >= 1.0 {
        x_max
    } else {
        (-(1.0 - q).log10()).min(x_max)
    }
}

/// The percentile label of x: 0 %, 90 %, 99 %, 99.9 %, …
fn label(x: f64) -> String {
    let decimals = usize::try_from(x.round() as i64)
        .unwrap_or(0)
        .saturating_sub(2);
    format!("{:.*} %", decimals, 100.0 * (1.0 - 10f64.powf(-x)))
}

/// Draws `report`'s latencies to `path`.
///
/// # Errors
/// `E_IO` when the file cannot be written.
pub fn latency(path: &Path, report: &Report) -> Result<(), Error> {
    draw(path, report).map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
}

fn draw(path: &Path, report: &Report) -> Result<(), Box<dyn std::error::Error>> {
    let h = &report.tally.latency;
    let ms = |us: u64| us as f64 / 1000.0;
    // With n messages the last quantile that means anything is 1 - 1/n.
    let x_max = (h.len().max(10) as f64).log10().ceil();
    let points: Vec<(f64, f64)> = h
        .iter_quantiles(TICKS_PER_HALF)
        .map(|v| {
            (
                x_of(v.quantile_iterated_to(), x_max),
                ms(h.highest_equivalent(v.value_iterated_to())),
            )
        })
        .collect();
    let y_max = (ms(h.max()) * 1.1).max(0.01);

    let s = &report.setup;
    let title = format!(
        "sssonector bench {}: {} connections, {} B, {} messages; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        s.mode,
        s.connections,
        s.payload,
        report.tally.messages,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, ms")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| label(*x))
        .draw()?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::report::{Setup, Tally};
    use super::*;

    #[test]
    fn the_tail_is_stretched_and_labelled_by_nines() {
        assert!((x_of(0.9, 5.0) - 1.0).abs() < 1e-9);
        assert!((x_of(0.999, 5.0) - 3.0).abs() < 1e-9);
        assert_eq!(x_of(1.0, 4.0), 4.0);
        assert_eq!(label(0.0), "0 %");
        assert_eq!(label(2.0), "99 %");
        assert_eq!(label(3.0), "99.9 %");
        assert_eq!(label(4.0), "99.99 %");
    }

    #[test]
    fn a_report_draws_an_svg_with_its_figures() {
        let mut tally = Tally::default();
        for i in 1..=5_000u64 {
            tally.message(64, Duration::from_micros(100 + i % 900));
        }
        let report = Report {
            setup: Setup {
                mode: "echo",
                target: "127.0.0.1:1".into(),
                connections: 3,
                payload: 64,
                interval: Duration::ZERO,
                warmup: Duration::ZERO,
            },
            elapsed: Duration::from_secs(1),
            tally,
            daemons: Vec::new(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.svg");
        latency(&path, &report).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("5000 messages"));
        assert!(svg.contains("99.9 %"));
        assert!(svg.contains("<polyline"));
    }
}
