//! The plots of BENCHMARKS.md, as PNG: objects reconciled over time, the latency CDF and RSS
//! over time, one line per contender, from the first round at the largest object count.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::run::Measured;

/// Where a TrueType font for the labels may be; `KUBERATOR_BENCH_FONT` comes first.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const COLORS: [RGBColor; 4] =
    [RGBColor(200, 60, 20), RGBColor(30, 100, 200), RGBColor(20, 150, 70), RGBColor(120, 120, 120)];

fn register_font() -> anyhow::Result<()> {
    let candidates: Vec<PathBuf> = std::env::var_os("KUBERATOR_BENCH_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONTS.iter().map(PathBuf::from))
        .collect();
    let path = candidates.iter().find(|p| p.exists()).with_context(|| {
        format!("no TrueType font for the plots' labels: install DejaVu (fonts-dejavu-core) or set KUBERATOR_BENCH_FONT; looked at {candidates:?}")
    })?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{} is not a font plotters can read", path.display()))?;
    Ok(())
}

/// One line per contender.
struct Series<'a> {
    contender: &'a str,
    points: Vec<(f64, f64)>,
}

fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    contenders: &[String],
) -> anyhow::Result<()> {
    let x_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max).max(1e-3) * 1.05;
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-3) * 1.05;
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw()?;
        for line in series {
            let index = contenders.iter().position(|c| c == line.contender).unwrap_or(0);
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?
                .label(line.contender)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|error| anyhow::anyhow!("drawing {}: {error}", path.display()))
}

/// Writes `cold-start.png`, `fresh-change.png`, `latency-cdf.png` and `rss.png` into `dir`.
pub(crate) fn all(results: &[Measured], contenders: &[String], dir: &Path) -> anyhow::Result<()> {
    register_font()?;
    let Some(objects) = results.iter().map(|m| m.objects).max() else { return Ok(()) };
    let first = |contender: &str| {
        results.iter().find(|m| m.contender == contender && m.objects == objects && m.round == 0)
    };
    let progress: Vec<Series<'_>> = contenders
        .iter()
        .filter_map(|c| first(c))
        .map(|m| Series {
            contender: &m.contender,
            points: m.cold_progress.iter().map(|&(t, n)| (t, n as f64)).collect(),
        })
        .collect();
    chart(
        &dir.join("cold-start.png"),
        &format!("Cold start: objects reconciled since the process started (N = {objects})"),
        "seconds since start",
        "objects reconciled",
        &progress,
        contenders,
    )?;
    let fresh: Vec<Series<'_>> = contenders
        .iter()
        .filter_map(|c| {
            let mut counts: Vec<usize> = results
                .iter()
                .filter(|m| m.contender == *c && m.fresh_ms.is_some())
                .map(|m| m.objects)
                .collect();
            counts.sort_unstable();
            counts.dedup();
            let points: Vec<(f64, f64)> = counts
                .into_iter()
                .filter_map(|n| {
                    let mut all: Vec<f64> = results
                        .iter()
                        .filter(|m| m.contender == *c && m.objects == n)
                        .filter_map(|m| m.fresh_ms)
                        .collect();
                    all.sort_by(f64::total_cmp);
                    Some((n as f64, *all.get(all.len().checked_sub(1)? / 2)?))
                })
                .collect();
            (!points.is_empty()).then_some(Series { contender: c, points })
        })
        .collect();
    chart(
        &dir.join("fresh-change.png"),
        "A fresh change 2 s into the cold start: create to status, median of the rounds",
        "objects waiting at start (N)",
        "milliseconds",
        &fresh,
        contenders,
    )?;
    let timed =
        results.iter().filter(|m| !m.latencies_ms.is_empty()).map(|m| m.objects).max().unwrap_or(objects);
    let latency: Vec<Series<'_>> = contenders
        .iter()
        .filter_map(|c| {
            let mut all: Vec<f64> = results
                .iter()
                .filter(|m| m.contender == *c && m.objects == timed)
                .flat_map(|m| m.latencies_ms.iter().copied())
                .collect();
            if all.is_empty() {
                return None;
            }
            all.sort_by(f64::total_cmp);
            let count = all.len() as f64;
            let points = all.iter().enumerate().map(|(i, &ms)| (ms, (i + 1) as f64 / count)).collect();
            Some(Series { contender: c, points })
        })
        .collect();
    chart(
        &dir.join("latency-cdf.png"),
        &format!("Latency from create to status, all rounds (N = {timed} besides)"),
        "milliseconds",
        "fraction of objects",
        &latency,
        contenders,
    )?;
    let rss: Vec<Series<'_>> = contenders
        .iter()
        .filter_map(|c| first(c))
        .map(|m| Series {
            contender: &m.contender,
            points: m.samples.iter().map(|s| (s.at, s.rss_mib)).collect(),
        })
        .collect();
    chart(
        &dir.join("rss.png"),
        &format!("RSS over a run, first round (N = {objects})"),
        "seconds since start",
        "RSS (MiB)",
        &rss,
        contenders,
    )?;
    Ok(())
}

/// `sharding.png`: objects reconciled per second over the replica count, median of the rounds,
/// server-side and client-side filtering, and the ideal (the single replica's, times the count).
pub(crate) fn sharding(runs: &[crate::multi::ShardingRun], dir: &Path) -> anyhow::Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    register_font()?;
    let median = |replicas: usize, filter: &str| -> Option<f64> {
        crate::multi::middle(
            runs.iter()
                .filter(|r| r.replicas == replicas && r.filter == filter)
                .map(crate::multi::ShardingRun::throughput)
                .collect(),
        )
    };
    let names = ["server-side filter", "client-side filter", "ideal (linear)"].map(str::to_owned).to_vec();
    let line = |filter: &str| -> Vec<(f64, f64)> {
        (1..=3).filter_map(|replicas| Some((replicas as f64, median(replicas, filter)?))).collect()
    };
    let single = median(1, "server").unwrap_or(f64::NAN);
    let mut client = line("client");
    if let Some(single) = median(1, "server") {
        client.insert(0, (1.0, single));
    }
    let series = [
        Series { contender: &names[0], points: line("server") },
        Series { contender: &names[1], points: client },
        Series { contender: &names[2], points: (1..=3).map(|r| (r as f64, single * r as f64)).collect() },
    ];
    chart(
        &dir.join("sharding.png"),
        "Sharding: throughput over replicas",
        "replicas",
        "objects reconciled per second",
        &series,
        &names,
    )
}
