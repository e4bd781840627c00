//! The two text formats `/metrics` serves, and the negotiation between them.
//!
//! The exposition is negotiated, and its content type always says which
//! one the body is ([`Exposition`]): OpenMetrics 1.0 text (what
//! prometheus-client writes: `# TYPE x counter` above `x_total` samples,
//! `# EOF` at the end) for clients whose `Accept` names
//! `application/openmetrics-text` (Prometheus does, first), and the classic
//! Prometheus text format 0.0.4 for everyone else (curl, `promtool check
//! metrics`, older scrapers), converted from the same encoding.

use super::Metrics;

/// The content type of [`Metrics::encode`]'s output.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::encode_classic`]'s output.
pub(super) const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two text formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// OpenMetrics when the `Accept` header names it (with a non-zero
    /// quality), else the classic format.
    pub(crate) fn negotiate(accept: Option<&str>) -> Exposition {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';').map(str::trim);
                params
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("application/openmetrics-text"))
                    && !params.any(|p| p.replace(' ', "") == "q=0")
            })
        });
        if wants {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => CONTENT_TYPE,
            Exposition::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

impl Metrics {
    /// The exposition in `format`.
    pub(crate) fn render(&self, format: Exposition) -> String {
        match format {
            Exposition::OpenMetrics => self.encode(),
            Exposition::Classic => self.encode_classic(),
        }
    }

    /// The classic Prometheus text format (0.0.4): the OpenMetrics text
    /// with counters' `# HELP`/`# TYPE` named like their `_total` samples,
    /// and without `# UNIT` and `# EOF` lines. Gauges and histograms are
    /// written alike in both formats.
    pub(crate) fn encode_classic(&self) -> String {
        let om = self.encode();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::QueryKind;

    #[test]
    fn classic_format_names_counters_like_their_samples() {
        let m = Metrics::new();
        m.answered(QueryKind::Alias, 0);
        m.ready.set(1);
        let text = m.encode_classic();
        assert!(
            text.contains(
                "# HELP dns_sidecar_queries_total DNS queries answered, by kind and rcode.\n# TYPE dns_sidecar_queries_total counter\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dns_sidecar_ready gauge\ndns_sidecar_ready 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dns_sidecar_answer_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# TYPE dns_sidecar_queries counter"),
            "{text}"
        );
        // Every sample line is the same as in OpenMetrics.
        let samples = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(samples(&text), samples(&m.encode()));
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(
            Exposition::negotiate(Some(
                "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::negotiate(Some("text/plain;version=0.0.4")),
            Exposition::Classic
        );
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Classic);
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Exposition::Classic
        );
        assert_eq!(Exposition::negotiate(None), Exposition::Classic);
    }
}
