//! The server's side of a run: CPU time and RSS from `/proc/<pid>/stat` and `/proc/<pid>/status`,
//! and counters scraped from its Prometheus `/metrics` page.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CPU time (user + system) and resident memory of a process.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Read `/proc/<pid>/stat` (utime, stime) and `/proc/<pid>/status` (VmRSS).
pub fn read_proc(pid: u32) -> std::io::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_proc(&stat, &status, clock_ticks())
        .ok_or_else(|| std::io::Error::other("unexpected /proc format"))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn parse_proc(stat: &str, status: &str, ticks: f64) -> Option<ProcStats> {
    // The command name (field 2) may contain spaces and parentheses: fields restart after the
    // last ')'. Then: state(3) ... utime(14) stime(15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcStats {
        cpu_seconds: (utime + stime) / ticks,
        rss_bytes: rss_kb * 1024,
    })
}

/// Fetch a page over plain HTTP/1.0 (the load generator only ever talks to loopback servers).
pub async fn http_get(url: &str) -> std::io::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(host).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                Ok(body.to_string())
            }
            _ => Err(std::io::Error::other("HTTP request failed")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| std::io::Error::other("HTTP request timed out"))?
}

/// Sum of every series of metric `name` in a Prometheus text page (0 if absent).
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Cumulative buckets `(le seconds, count)` of histogram `name` (summed over label sets).
pub fn histogram_buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for l in page.lines().filter(|l| l.starts_with(&prefix)) {
        let Some(le) = l
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(|s| {
                if s == "+Inf" {
                    f64::INFINITY
                } else {
                    s.parse().unwrap_or(f64::NAN)
                }
            })
        else {
            continue;
        };
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match out.iter_mut().find(|(b, _)| *b == le) {
            Some(e) => e.1 += v,
            None => out.push((le, v)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Quantile `q` of the difference of two cumulative histograms (upper bucket bound, seconds).
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, v)| {
            let b = before.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1);
            (le, v - b)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (tele consult) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        let status = "Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   2048 kB\nThreads: 9\n";
        let p = parse_proc(stat, status, 100.0).expect("parses");
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.rss_bytes, 2048 * 1024);
        assert!(parse_proc("garbage", status, 100.0).is_none());
    }

    #[test]
    fn reads_our_own_process() {
        let p = read_proc(std::process::id()).expect("/proc of self");
        assert!(p.rss_bytes > 0);
    }

    #[test]
    fn sums_metrics_and_histogram_quantiles() {
        let page = "# HELP x y\nteleconsult_rtp_packets_out_total 12\n\
            teleconsult_rtp_packets_out_total_extra 5\n\
            a_bucket{le=\"0.001\"} 5\na_bucket{le=\"0.01\"} 9\na_bucket{le=\"+Inf\"} 10\n";
        assert_eq!(metric_sum(page, "teleconsult_rtp_packets_out_total"), 12.0);
        let after = histogram_buckets(page, "a");
        assert_eq!(after.len(), 3);
        assert_eq!(histogram_quantile(&[], &after, 0.5), Some(0.001));
        assert_eq!(histogram_quantile(&[], &after, 0.9), Some(0.01));
        assert_eq!(
            histogram_quantile(&after, &after, 0.5),
            None,
            "no samples in between"
        );
    }
}
