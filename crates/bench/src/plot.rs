//! The latency plot: a hand-written SVG of each system's latency by
//! percentile, HdrHistogram style (the x axis stretches the tail: 90%,
//! 99%, 99.9% … are evenly spaced), both axes logarithmic so echo's
//! microseconds and a database's milliseconds fit on one chart.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The plot reaches the 99.99th percentile: four nines.
const NINES: f64 = 4.0;
const COLOURS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// Renders one curve per `(name, histogram)` (microsecond values).
pub fn svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (*name, points(h)))
        .collect();
    let (low, high) = decades(&curves);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |nines: f64| LEFT + plot_w * (nines / NINES);
    let y_of = |ms: f64| TOP + plot_h * (1.0 - (ms.log10() - low) / (high - low));

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Horizontal grid: one line per decade of milliseconds.
    let mut decade = low;
    while decade <= high + 1e-9 {
        let y = y_of(10f64.powf(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            format_ms(10f64.powf(decade))
        );
        decade += 1.0;
    }
    // Vertical grid: 0%, 90%, 99%, 99.9%, 99.99%.
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        let x = x_of(nines);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms, log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    for (i, (name, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(nines, ms)| format!("{:.1},{:.1}", x_of(*nines), y_of(*ms)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = LEFT + plot_w + 14.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 20.0,
            x + 26.0,
            y + 4.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// (nines, milliseconds) along the histogram's quantiles, where nines is
/// -log10(1 - q): 1 at p90, 2 at p99.
fn points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for step in histogram.iter_quantiles(5) {
        let q = step.quantile_iterated_to();
        let nines = if q >= 1.0 {
            NINES
        } else {
            (-(1.0 - q).log10()).min(NINES)
        };
        let ms =
            (histogram.highest_equivalent(step.value_iterated_to()) as f64 / 1_000.0).max(0.001);
        points.push((nines, ms));
        if nines >= NINES {
            break;
        }
    }
    points
}

/// The decades (log10 of ms) the y axis spans.
fn decades(curves: &[(&str, Vec<(f64, f64)>)]) -> (f64, f64) {
    let values = curves.iter().flat_map(|(_, p)| p.iter().map(|(_, ms)| *ms));
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if min > max {
        return (-1.0, 1.0);
    }
    let low = min.log10().floor();
    let high = max.log10().ceil().max(low + 1.0);
    (low, high)
}

fn format_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_one_curve_per_system() {
        let mut fast = crate::load::new_histogram();
        let mut slow = crate::load::new_histogram();
        for v in 1..1_000u64 {
            fast.record(50 + v).unwrap();
            slow.record(2_000 + 10 * v).unwrap();
        }
        let svg = svg("hot <sqlite>", &[("echo", &fast), ("tally", &slow)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("hot &lt;sqlite&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
