//! Results: a JSON file and a self-contained HTML report with SVG plots (plotters): latency CDF,
//! server CPU and RSS over time, loss per track.

use crate::scenario::{RunReport, StepReport};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plot: {0}")]
    Plot(String),
}

fn plot_err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError::Plot(format!("{e:?}"))
}

/// Write `report.json` and `report.html` into `dir`.
pub fn write(report: &RunReport, dir: &Path) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?).map_err(io(&json))?;
    let html = dir.join("report.html");
    std::fs::write(&html, render_html(report)?).map_err(io(&html))?;
    Ok(())
}

fn latency_cdf_svg(step: &StepReport) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let pts: Vec<(f64, f64)> = step
            .latency_cdf
            .iter()
            .map(|&(us, f)| ((us.max(1) as f64) / 1000.0, f))
            .collect();
        let lo = pts.first().map_or(0.001, |p| p.0).max(0.001);
        let hi = pts.last().map_or(1.0, |p| p.0).max(lo * 10.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Forwarding latency CDF ({} consultations)",
                    step.consultations
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of packets")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(pts, &BLUE))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn time_series_svg(
    title: &str,
    y_desc: &str,
    pts: &[(f64, f64)],
    colour: &RGBColor,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let x_max = pts.iter().map(|p| p.0).fold(1.0, f64::max);
        let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn loss_svg(step: &StepReport) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let n = step.tracks.len().max(1) as f64;
        let y_max = step
            .tracks
            .iter()
            .map(|t| t.loss_ratio * 100.0)
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption("Loss per received track", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n, 0f64..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("track (subscriber × publisher × kind)")
            .y_desc("loss (%)")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(step.tracks.iter().enumerate().map(|(i, t)| {
                Rectangle::new(
                    [
                        (i as f64 + 0.1, 0.0),
                        (i as f64 + 0.9, t.loss_ratio * 100.0),
                    ],
                    RED.filled(),
                )
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

/// The HTML report (plots inline, no external resources).
pub fn render_html(r: &RunReport) -> Result<String, ReportError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Teleconsult load test</title>\
         <style>body{{font-family:sans-serif;max-width:980px;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style>\
         </head><body><h1>Load test: {}</h1><p>target <b>{}</b>, video {:?}, window {:.0} s per step; \
         machine: {} CPUs, {}</p>",
        esc(&format!("{:?}", r.options.scenario)),
        esc(&r.target),
        r.options.video,
        r.options.duration.as_secs_f64(),
        r.machine.nproc,
        esc(&r.machine.cpu_model),
    );
    if let Some(n) = r.last_held_consultations {
        let _ = write!(
            h,
            "<p><b>Last step within the limits: {n} consultations.</b></p>"
        );
    } else if r.options.ramp.is_some() {
        h.push_str("<p><b>No step held the limits.</b></p>");
    }
    h.push_str(
        "<h2>Steps</h2><table><tr><th>consultations</th><th>participants</th><th>worst loss %</th>\
         <th>mean loss %</th><th>p50 ms</th><th>p99 ms</th><th>worst track p99 ms</th><th>worst jitter ms</th>\
         <th>server CPU %</th><th>RSS MiB</th><th>CPU µs/fwd pkt</th><th>server p99 ms</th><th>held</th></tr>",
    );
    for s in &r.steps {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
             <td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.consultations,
            s.participants,
            s.worst_loss * 100.0,
            s.mean_loss * 100.0,
            s.latency_p50_ms,
            s.latency_p99_ms,
            s.worst_track_p99_ms,
            s.worst_jitter_ms,
            opt(s.server.cpu_percent, 1),
            opt(s.server.rss_bytes.map(|b| b as f64 / 1048576.0), 1),
            opt(s.server.cpu_us_per_forwarded_packet, 2),
            opt(s.server.server_latency_p99_ms, 2),
            if s.held { "yes" } else { "no" },
        );
    }
    h.push_str("</table>");
    // The last step that held (or the last one) is the one plotted in detail.
    let detail = r.steps.iter().rev().find(|s| s.held).or(r.steps.last());
    if let Some(step) = detail {
        h.push_str("<h2>Latency</h2>");
        h.push_str(&latency_cdf_svg(step)?);
        h.push_str("<h2>Loss</h2>");
        h.push_str(&loss_svg(step)?);
    }
    let cpu: Vec<(f64, f64)> = r
        .samples
        .windows(2)
        .filter_map(|w| match (w[0].cpu_seconds, w[1].cpu_seconds) {
            (Some(a), Some(b)) if w[1].t > w[0].t => {
                Some((w[1].t, (b - a) / (w[1].t - w[0].t) * 100.0))
            }
            _ => None,
        })
        .collect();
    let rss: Vec<(f64, f64)> = r
        .samples
        .iter()
        .filter_map(|s| s.rss_bytes.map(|b| (s.t, b as f64 / 1048576.0)))
        .collect();
    h.push_str("<h2>Server</h2>");
    if cpu.is_empty() {
        h.push_str("<p>No server process given (<code>--server-pid</code>): no CPU or RSS.</p>");
    } else {
        h.push_str(&time_series_svg(
            "Server CPU",
            "CPU (% of one core)",
            &cpu,
            &GREEN,
        )?);
        h.push_str(&time_series_svg("Server RSS", "RSS (MiB)", &rss, &MAGENTA)?);
    }
    if !r.errors.is_empty() {
        h.push_str("<h2>Errors</h2><ul>");
        for e in &r.errors {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
