//! Running `dnsperf` and reading its summary.

use anyhow::{bail, Context, Result};

/// dnsperf's closing statistics (2.10's format).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// e.g. "NOERROR 90.00%, NXDOMAIN 10.00%".
    pub rcodes: String,
    pub run_time: f64,
    pub qps: f64,
    pub avg_latency: f64,
    pub min_latency: f64,
    pub max_latency: f64,
}

fn after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
}

fn first_number<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// Parses the summary dnsperf prints at the end of a run.
pub fn parse(out: &str) -> Result<Stats> {
    let num = |label: &str| -> Result<f64> {
        let v = after(out, label).with_context(|| format!("no {label:?} in dnsperf output:\n{out}"))?;
        first_number(v).with_context(|| format!("cannot read {label:?} {v:?}"))
    };
    let lat = after(out, "Average Latency (s):").with_context(|| format!("no latency in dnsperf output:\n{out}"))?;
    // "0.000123 (min 0.000010, max 0.001234)"
    let avg: f64 = first_number(lat).context("average latency")?;
    let min = lat.split("min ").nth(1).and_then(first_number).unwrap_or(f64::NAN);
    let max = lat.split("max ").nth(1).and_then(first_number).unwrap_or(f64::NAN);
    let rcodes = after(out, "Response codes:").unwrap_or("").to_string();
    let rcodes = rcodes
        .split(", ")
        .filter_map(|part| {
            // "NOERROR 123 (100.00%)" -> "NOERROR 100.00%"
            let mut w = part.split_whitespace();
            let code = w.next()?;
            let pct = part.split('(').nth(1)?.trim_end_matches(')');
            Some(format!("{code} {pct}"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let s = Stats {
        sent: num("Queries sent:")? as u64,
        completed: num("Queries completed:")? as u64,
        lost: num("Queries lost:")? as u64,
        rcodes,
        run_time: num("Run time (s):")?,
        qps: num("Queries per second:")?,
        avg_latency: avg,
        min_latency: min,
        max_latency: max,
    };
    if s.sent == 0 {
        bail!("dnsperf sent no queries:\n{out}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5300 -d a.txt -l 2
[Status] Sending queries (to 127.0.0.1:5300)
[Status] Started at: Wed Nov 26 00:27:45 2026
[Status] Stopping after 2.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         150217
  Queries completed:    150200 (99.99%)
  Queries lost:         17 (0.01%)

  Response codes:       NOERROR 135180 (90.00%), NXDOMAIN 15020 (10.00%)
  Average packet size:  request 30, response 56
  Run time (s):         2.000183
  Queries per second:   75093.129167

  Average Latency (s):  0.001105 (min 0.000022, max 0.032242)
  Latency StdDev (s):   0.000410

";

    #[test]
    fn parses_the_summary() {
        let s = parse(OUT).unwrap();
        assert_eq!(s.sent, 150217);
        assert_eq!(s.completed, 150200);
        assert_eq!(s.lost, 17);
        assert_eq!(s.rcodes, "NOERROR 90.00%, NXDOMAIN 10.00%");
        assert!((s.qps - 75093.129167).abs() < 1e-6);
        assert!((s.avg_latency - 0.001105).abs() < 1e-9);
        assert!((s.min_latency - 0.000022).abs() < 1e-9);
        assert!((s.max_latency - 0.032242).abs() < 1e-9);
        assert!((s.run_time - 2.000183).abs() < 1e-9);
    }

    #[test]
    fn rejects_output_without_a_summary() {
        assert!(parse("DNS Performance Testing Tool\nError: could not open file\n").is_err());
    }
}
