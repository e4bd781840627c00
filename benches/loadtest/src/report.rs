//! The Markdown report and the per-round CSV.

use std::fmt::Write as _;

use crate::{servers, sys, Mix, Outcome, Round};

/// Seconds since midnight of the first `HH:MM:SS[.frac]` in a log line's
/// first 40 characters (PostgreSQL's `2026-11-26 01:22:18.942 UTC` and the
/// sidecar's `2026-11-26T01:22:19.263006Z`, both UTC).
pub fn time_of_day(line: &str) -> Option<f64> {
    let head: String = line.chars().take(40).collect();
    let b = head.as_bytes();
    for i in 0..b.len().saturating_sub(7) {
        let d = |j: usize| b.get(i + j).is_some_and(|c| c.is_ascii_digit());
        if d(0) && d(1) && b[i + 2] == b':' && d(3) && d(4) && b[i + 5] == b':' && d(6) && d(7) {
            let num = |a: usize, n: usize| head[i + a..i + a + n].parse::<f64>().ok();
            let mut secs = num(0, 2)? * 3600.0 + num(3, 2)? * 60.0 + num(6, 2)?;
            if b.get(i + 8) == Some(&b'.') {
                let frac: String = head[i + 9..].chars().take_while(char::is_ascii_digit).collect();
                if !frac.is_empty() {
                    secs += format!("0.{frac}").parse::<f64>().ok()?;
                }
            }
            return Some(secs);
        }
    }
    None
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_f(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.prec$}")
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// What limited the rate: the server's core (its process used >= 90 % of
/// it), the load generator's core (dnsperf, plus the upstream when it shares
/// that core), or neither (latency-bound: waiting on the upstream).
pub fn bound_by(server_core_pct: f64, client_core_pct: f64, noisy: bool) -> &'static str {
    if noisy {
        "unclear (noisy)"
    } else if server_core_pct >= 90.0 {
        "server"
    } else if client_core_pct >= 90.0 {
        "load generator"
    } else {
        "neither (waiting)"
    }
}

struct Agg {
    qps: f64,
    qps_min: f64,
    qps_max: f64,
    lost: u64,
    sent: u64,
    avg_ms: f64,
    max_ms: f64,
    us_q: f64,
    srv_pct: f64,
    cli_pct: f64,
    up_pct: f64,
    kernel_pct: f64,
    other_pct: f64,
    srv_core: f64,
    cli_core: f64,
    rcodes: String,
    noisy: usize,
    upstream_per_1000: f64,
}

fn aggregate(rs: &[&Round], max_other: f64) -> Agg {
    let m = |f: &dyn Fn(&Round) -> f64| median(rs.iter().map(|r| f(r)).collect());
    let qps: Vec<f64> = rs.iter().map(|r| r.stats.qps).collect();
    let srv_pct = m(&|r| r.pct(r.server_cpu));
    let cli_pct = m(&|r| r.pct(r.client_cpu));
    let up_pct = m(&|r| r.pct(r.upstream_cpu));
    Agg {
        qps: median(qps.clone()),
        qps_min: qps.iter().copied().fold(f64::INFINITY, f64::min),
        qps_max: qps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        lost: rs.iter().map(|r| r.stats.lost).sum(),
        sent: rs.iter().map(|r| r.stats.sent).sum(),
        avg_ms: m(&|r| r.stats.avg_latency * 1e3),
        max_ms: rs.iter().map(|r| r.stats.max_latency * 1e3).fold(f64::NAN, f64::max),
        us_q: m(&|r| r.us_per_query()),
        srv_pct,
        cli_pct,
        up_pct,
        kernel_pct: m(&|r| r.pct(r.kernel_cpu)),
        other_pct: m(&|r| r.pct(r.other_cpu)),
        srv_core: m(&|r| r.server_core_pct),
        cli_core: m(&|r| r.client_core_pct),
        rcodes: rs.last().map(|r| r.stats.rcodes.clone()).unwrap_or_default(),
        noisy: rs.iter().filter(|r| r.noisy(max_other)).count(),
        upstream_per_1000: m(&|r| r.upstream_per_1000()),
    }
}

/// The charts' file names, next to results.md.
pub const CPU_SVG: &str = "cpu.svg";
pub const FAILOVER_SVG: &str = "failover.svg";

/// The charts to write next to results.md: (file name, SVG).
pub fn charts(o: &Outcome) -> Vec<(&'static str, String)> {
    let mut bars = Vec::new();
    for (mix, rows) in &o.rows {
        for row in rows {
            let rs: Vec<&Round> = o.rounds.iter().filter(|r| r.mix == *mix && &r.row == row).collect();
            if rs.is_empty() {
                continue;
            }
            bars.push(crate::charts::Bar {
                mix: mix.id().to_string(),
                server: row.clone(),
                us_per_query: median(rs.iter().map(|r| r.us_per_query()).collect()),
            });
        }
    }
    let mut out = Vec::new();
    if !bars.is_empty() {
        out.push((
            CPU_SVG,
            crate::charts::cpu(
                &bars,
                "dns-sidecar load test: server CPU µs per answered query (median)",
            ),
        ));
    }
    if let Some(f) = o.failover.as_ref().filter(|f| !f.polls.is_empty()) {
        let marks = crate::charts::Marks {
            pg_ready: f.pg_ready_after,
            switched: f.sidecar_switched_after,
            followed: f.followed_after,
        };
        out.push((
            FAILOVER_SVG,
            crate::charts::failover(
                &f.polls,
                &marks,
                &format!("{}: the alias's answers around the promote", f.server),
            ),
        ));
    }
    out
}

fn lost_cell(lost: u64, sent: u64) -> String {
    if sent == 0 {
        return "–".into();
    }
    format!("{lost} / {sent} ({:.3}%)", 100.0 * lost as f64 / sent as f64)
}

/// Mix r's paired row: the same sidecar answering mix a's single-target
/// alias in the same rounds, the baseline of the rotating alias's cost.
pub const SINGLE_SUFFIX: &str = " single-target";

/// Mix r: the rotating alias's server CPU per query over the paired
/// single-target row's, per round (both measured back to back on the same
/// process); `None` without paired rounds.
pub fn rotation_ratios(rounds: &[Round], row: &str) -> Option<Vec<f64>> {
    let single = format!("{row}{SINGLE_SUFFIX}");
    let of = |name: &str, round: u32| {
        rounds
            .iter()
            .find(|r| r.mix == Mix::R && r.row == name && r.round == round)
            .map(Round::us_per_query)
    };
    let v: Vec<f64> = (rounds.iter().filter(|r| r.mix == Mix::R && r.row == row))
        .filter_map(|r| Some(r.us_per_query() / of(&single, r.round)?))
        .collect();
    (!v.is_empty()).then_some(v)
}

pub fn markdown(o: &Outcome) -> String {
    let a = &o.args;
    let mut s = String::new();
    let _ = writeln!(s, "# dns-sidecar load test\n");
    let _ = writeln!(s, "- Command: `{}`", o.command);
    let _ = writeln!(s, "- Started: {}", o.started);
    let _ = writeln!(
        s,
        "- Machine: {} CPUs (nproc), {}, {}",
        sys::online_cpus(),
        sys::cpu_model(),
        sys::kernel()
    );
    let _ = writeln!(
        s,
        "- Load average: {} at start, {} at end (other work on the machine shows in the \"other CPU\" column)",
        o.loadavg_start, o.loadavg_end
    );
    let _ = writeln!(
        s,
        "- Pinning: servers under test on CPU {}; dnsperf on CPU {}; upstream Knot on CPU {}; PostgreSQL and the \
            harness on CPU {}",
        a.server_cpu, a.client_cpu, a.upstream_cpu, a.client_cpu
    );
    let _ = writeln!(
        s,
        "- dnsperf {}: `-c {} -q {} -T {} -t {}`, {} round(s) x {} s per server and mix, interleaved (A B C A B C \
            ...); medians across rounds; a round with other CPU > {}% is repeated up to {} time(s)",
        o.dnsperf_version,
        a.clients,
        a.outstanding.iter().map(u32::to_string).collect::<Vec<_>>().join("|"),
        a.threads,
        a.timeout,
        a.rounds(),
        a.duration(),
        a.max_other,
        a.retries
    );
    let _ = writeln!(s, "- Servers:");
    for (id, label) in &o.labels {
        let _ = writeln!(s, "  - `{id}`: {label}");
    }
    let _ = writeln!(s);

    for (mix, rows) in &o.rows {
        let _ = writeln!(s, "## Mix {}: {}\n", mix.id(), mix.title());
        let fwd = mix.forwarded();
        let _ = writeln!(
            s,
            "| server | q/s (median) | q/s min–max | lost / sent | avg latency ms | max latency ms | server CPU \
                µs/query |{} server CPU | dnsperf CPU | upstream CPU | kernel CPU | other CPU | cores busy (server / \
                    dnsperf) | noisy rounds | bound by | responses |",
            if fwd { " upstream queries per 1000 |" } else { "" }
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|{}---:|---:|---:|---:|---:|---:|---:|---|---|",
            if fwd { "---:|" } else { "" }
        );
        for row in rows {
            let rs: Vec<&Round> = o.rounds.iter().filter(|r| r.mix == *mix && &r.row == row).collect();
            if rs.is_empty() {
                continue;
            }
            let g = aggregate(&rs, a.max_other);
            let _ =
                writeln!(
                s,
                "| {row} | {} | {}–{} | {} | {} | {} | {} |{} {}% | {}% | {}% | {}% | {}% | {}% / {}% | {}/{} | {} | \
                    {} |",
                fmt_f(g.qps, 0),
                fmt_f(g.qps_min, 0),
                fmt_f(g.qps_max, 0),
                lost_cell(g.lost, g.sent),
                fmt_f(g.avg_ms, 3),
                fmt_f(g.max_ms, 2),
                fmt_f(g.us_q, 2),
                if fwd { format!(" {} |", fmt_f(g.upstream_per_1000, 1)) } else { String::new() },
                fmt_f(g.srv_pct, 0),
                fmt_f(g.cli_pct, 0),
                fmt_f(g.up_pct, 0),
                fmt_f(g.kernel_pct, 0),
                fmt_f(g.other_pct, 0),
                fmt_f(g.srv_core, 0),
                fmt_f(g.cli_core, 0),
                g.noisy,
                rs.len(),
                bound_by(g.srv_core, g.cli_core, g.other_pct > a.max_other),
                g.rcodes
            );
        }
        let _ = writeln!(s);
        for row in rows.iter().filter(|r| *mix == Mix::R && !r.ends_with(SINGLE_SUFFIX)) {
            let Some(ratios) = rotation_ratios(&o.rounds, row) else {
                continue;
            };
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                s,
                "**{row}: rotating over single-target, server CPU per query: {:+.1}%** (median of {} per-round ratios, each round measuring `{}` and `{}` back to back on the same process, in alternating order; range {:+.1}% to {:+.1}%).\n",
                100.0 * (median(ratios.clone()) - 1.0),
                ratios.len(),
                servers::ALIAS,
                servers::READERS,
                100.0 * (lo - 1.0),
                100.0 * (hi - 1.0),
            );
        }
    }

    if !o.rounds.is_empty() {
        let _ = writeln!(
            s,
            "![Server CPU µs per query, per server and mix]({CPU_SVG})\n\n[{CPU_SVG}]({CPU_SVG}): the \
                \"server CPU µs/query\" column of the tables above (medians), one bar per server and mix.\n"
        );
    }

    if !o.replays.is_empty() {
        let _ = writeln!(s, "## Upstream queries saved at a pod's pace (simulated)\n");
        let _ = writeln!(
            s,
            "Mix d's {} names (same popularity and TTLs), asked with Poisson arrivals for one hour at each rate, \
                through dns-sidecar's own cache code (default `[cache]`) on a manual clock; every miss is answered as \
                    the upstream zone would and kept. In the load test above the rounds are too short for any TTL to \
                        run out. Each rate runs without and with `[cache] prefetch` (a popular entry hit in the last \
                        tenth of its lifetime refreshed in the background, the refresh answered {} ms later): \
                        **hit rate** is the share answered from the cache, **reached the upstream** counts misses and \
                        refreshes.\n",
            a.zipf_names,
            crate::replay::REFRESH_RTT_MS
        );
        let _ = writeln!(
            s,
            "| queries/s | prefetch | queries in the hour | hit rate | refreshes | reached the upstream | saved | entries at the end |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|");
        for r in &o.replays {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2}% | {} | {} | {:.1}% | {} |",
                r.rate,
                if r.prefetch { "on" } else { "off" },
                r.queries,
                100.0 * r.hit_rate(),
                r.refreshes,
                r.upstream,
                100.0 * r.saved(),
                r.entries
            );
        }
        let _ = writeln!(s);
    }

    if !o.memory.is_empty() {
        let _ = writeln!(s, "## dns-sidecar memory\n");
        let _ = writeln!(s, "| server | idle VmRSS (before load) | peak VmHWM (after the run) |");
        let _ = writeln!(s, "|---|---:|---:|");
        for m in &o.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                m.server,
                mib(m.idle_rss_kib),
                mib(m.peak_hwm_kib)
            );
        }
        let _ = writeln!(s);
    }

    if let Some(f) = &o.failover {
        let r = &f.round;
        let _ = writeln!(s, "## Failover during load\n");
        let _ = writeln!(
            s,
            "One extra mix-a round of {} s against `{}`; the replica (pg-b) was promoted {:.1} s into it (the old \
                primary keeps running; the newer timeline wins). Times are counted from the `pg_ctl promote` request: \
                    PostgreSQL's \"ready to accept connections\" and the sidecar's \"alias target changed\" come from \
                        their logs, the first answer naming pg-b from polling the alias every 5 ms. PostgreSQL runs \
                            on dnsperf's saturated CPU, so these are upper bounds (the integration tests measure \
                                following unloaded).\n",
            a.duration(),
            f.server,
            f.promoted_at
        );
        let _ = writeln!(
            s,
            "| q/s | lost / sent | avg latency ms | max latency ms | PostgreSQL ready | sidecar \
            switched | first answer naming pg-b | answer after the round | responses | result |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
        let ms = |x: Option<f64>| x.map_or("?".to_string(), |v| format!("{:.0} ms", v * 1e3));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_f(r.stats.qps, 0),
            lost_cell(r.stats.lost, r.stats.sent),
            fmt_f(r.stats.avg_latency * 1e3, 3),
            fmt_f(r.stats.max_latency * 1e3, 2),
            ms(f.pg_ready_after),
            ms(f.sidecar_switched_after),
            f.followed_after
                .map_or("not seen during the round".into(), |x| format!("{:.0} ms", x * 1e3)),
            f.after
                .as_ref()
                .map_or("(no answer)".into(), |x| format!("`{}`", x.summary())),
            r.stats.rcodes,
            if f.ok {
                "OK: alias names pg-b.test."
            } else {
                "FAILED: alias does not name pg-b.test."
            }
        );
        let _ = writeln!(s);
        if !f.polls.is_empty() {
            let _ = writeln!(
                s,
                "![The alias's answers around the promote]({FAILOVER_SVG})\n\n[{FAILOVER_SVG}]({FAILOVER_SVG}): \
                    every answer polled around the promote, in the lane of the target it named.\n"
            );
        }
    }

    let _ = writeln!(s, "## Answers checked before the load\n");
    let _ = writeln!(s, "| server | query (A) | answer |");
    let _ = writeln!(s, "|---|---|---|");
    for (id, checks) in &o.answers {
        for (q, ans) in checks {
            let _ = writeln!(s, "| {id} | `{q}` | `{ans}` |");
        }
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## Every round\n");
    let _ = writeln!(
        s,
        "| mix | server | round | q/s | lost | avg ms | max ms | µs/query | server CPU | dnsperf CPU \
        | upstream CPU | kernel CPU | other CPU | cores busy | tries |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &o.rounds {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}% | {}% | {}% | {}% | {}%{} | {}% / {}% | {} |",
            r.mix.id(),
            r.row,
            r.round,
            fmt_f(r.stats.qps, 0),
            r.stats.lost,
            fmt_f(r.stats.avg_latency * 1e3, 3),
            fmt_f(r.stats.max_latency * 1e3, 2),
            fmt_f(r.us_per_query(), 2),
            fmt_f(r.pct(r.server_cpu), 0),
            fmt_f(r.pct(r.client_cpu), 0),
            fmt_f(r.pct(r.upstream_cpu), 0),
            fmt_f(r.pct(r.kernel_cpu), 0),
            fmt_f(r.pct(r.other_cpu), 0),
            if r.noisy(a.max_other) { " (noisy)" } else { "" },
            fmt_f(r.server_core_pct, 0),
            fmt_f(r.client_core_pct, 0),
            r.attempts,
        );
    }
    let _ = writeln!(s);
    s.push_str(LEGEND);
    s
}

const LEGEND: &str = "\
## How to read this

- **q/s, lost, latency**: dnsperf's own summary (\"Queries per second\", \"Queries lost\",
  \"Average Latency (s): X (min Y, max Z)\"). Lost = no answer within `-t` seconds.
- **server CPU µs/query**: the server's user + system CPU time (utime + stime from
  `/proc/<pid>/stat` of the process and its children, in clock ticks) over the round,
  divided by the answered queries. Kernel work done in softirq context on behalf of
  the server may be charged to another process or to nobody, so this is a lower bound
  that is comparable across servers, not an absolute cost.
- **server / dnsperf / upstream CPU**: that process's CPU time as a percentage of one
  core over the round's wall time. A server near 100% is saturated.
- **kernel CPU**: irq + softirq time (`/proc/stat`) plus kernel threads, over all
  CPUs, as a percentage of one core: work charged to no process, mostly the loopback
  packet path. It belongs to the whole setup (dnsperf, the server and the upstream
  alike), so it is reported, not attributed.
- **other CPU**: busy time of all CPUs (including steal) minus everything above, as a
  percentage of one core: other processes on the machine (a compile, another test),
  plus the idle servers' and PostgreSQL's background work (a few %). A round above
  `--max-other` is *noisy*: it is repeated up to `--retries` times, and kept (flagged)
  if it stays noisy. Medians are over the kept rounds.
- **cores busy**: how busy the server's CPU and dnsperf's CPU were, all causes
  included (`/proc/stat`: user, system, irq, softirq, steal).
- **bound by**: `unclear (noisy)` if the median other CPU is above `--max-other`;
  else `server` if the server's CPU was >= 90% busy; else `load generator` if
  dnsperf's CPU was (dnsperf, the upstream when it shares that CPU, and packet
  processing); otherwise `neither (waiting)`: both CPUs had idle time, the rate was
  limited by latency (the client and the server taking turns to sleep and wake up,
  or waiting on the upstream).
- **upstream queries per 1000** (forwarding mixes): queries the upstream Knot
  answered during the round (its mod-stats counters, read with `knotc`), per 1000
  queries the server answered: 1000 for a forwarder without a cache, near 0 for a
  cache answering repeated names. It includes a few background queries (dnsdist's
  health check every second, the sidecar refreshing its alias targets).
- **sidecar** forwards (its alias answers carry the CNAME plus the target's address,
  kept fresh from the upstream in the background) and caches forwarded answers
  (`[cache]` defaults); **sidecar-cname** is the same binary and config without
  `[upstream]`, so its alias answers are the CNAME only, like Knot, NSD and the
  floor. **floor** answers every query with the same CNAME (also for nonexistent
  names). **dnsdist** is Debian's dnsdist forwarding to the same upstream, without a
  cache; **dnsdist-cache** the same with its packet cache (10000 entries, like the
  sidecar's).
";

pub fn csv(o: &Outcome) -> String {
    let mut s = String::from("mix,server,round,sent,completed,lost,qps,avg_latency_s,min_latency_s,max_latency_s,wall_s,server_cpu_s,dnsperf_cpu_s,upstream_cpu_s,kernel_cpu_s,other_cpu_s,server_core_pct,client_core_pct,attempts,us_per_query,upstream_queries,rcodes\n");
    let mut all: Vec<&Round> = o.rounds.iter().collect();
    if let Some(f) = &o.failover {
        all.push(&f.round);
    }
    for r in all {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{:.1},{:.6},{:.6},{:.6},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{:.1},{},{:.3},{},\"{}\"",
            r.mix.id(),
            r.row,
            r.round,
            r.stats.sent,
            r.stats.completed,
            r.stats.lost,
            r.stats.qps,
            r.stats.avg_latency,
            r.stats.min_latency,
            r.stats.max_latency,
            r.wall,
            r.server_cpu,
            r.client_cpu,
            r.upstream_cpu,
            r.kernel_cpu,
            r.other_cpu,
            r.server_core_pct,
            r.client_core_pct,
            r.attempts,
            r.us_per_query(),
            r.upstream_queries.map_or(String::new(), |u| u.to_string()),
            r.stats.rcodes
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(mix: Mix, row: &str, round: u32, cpu_s: f64) -> Round {
        Round {
            mix,
            row: row.into(),
            round,
            stats: crate::dnsperf::Stats {
                completed: 1_000_000,
                ..Default::default()
            },
            wall: 5.0,
            server_cpu: cpu_s,
            client_cpu: 0.0,
            upstream_cpu: 0.0,
            kernel_cpu: 0.0,
            other_cpu: 0.0,
            server_core_pct: 0.0,
            client_core_pct: 0.0,
            upstream_queries: None,
            attempts: 1,
        }
    }

    #[test]
    fn rotation_ratios_pair_rounds_by_number() {
        let single = format!("sidecar{SINGLE_SUFFIX}");
        let rounds = [
            round(Mix::R, &single, 1, 4.0),
            round(Mix::R, "sidecar", 1, 4.2),
            round(Mix::R, &single, 2, 5.0),
            round(Mix::R, "sidecar", 2, 5.0),
            // Another mix's row of the same name is not a partner.
            round(Mix::A, "sidecar", 3, 1.0),
            round(Mix::R, "sidecar", 3, 9.0),
        ];
        let r = rotation_ratios(&rounds, "sidecar").unwrap();
        assert_eq!(r.len(), 2, "round 3 has no single-target partner: {r:?}");
        assert!((r[0] - 1.05).abs() < 1e-9 && (r[1] - 1.0).abs() < 1e-9, "{r:?}");
        assert!(rotation_ratios(&rounds, "knot").is_none());
    }

    #[test]
    fn median_of_odd_even_and_nan() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn reads_log_times() {
        let pg = "2026-11-26 01:22:18.942 UTC [22871] LOG:  database system is ready to accept connections";
        let sc = "2026-11-26T01:22:19.263006Z  WARN alias target changed alias=\"prod.db.test.\"";
        assert!((time_of_day(pg).unwrap() - (3600.0 + 22.0 * 60.0 + 18.942)).abs() < 1e-6);
        assert!((time_of_day(sc).unwrap() - (3600.0 + 22.0 * 60.0 + 19.263006)).abs() < 1e-6);
        assert_eq!(time_of_day("no time here"), None);
    }

    #[test]
    fn bound_by_prefers_the_server() {
        assert_eq!(bound_by(95.0, 99.0, false), "server");
        assert_eq!(bound_by(85.0, 95.0, false), "load generator");
        assert_eq!(bound_by(40.0, 99.0, false), "load generator");
        assert_eq!(bound_by(40.0, 50.0, false), "neither (waiting)");
        assert_eq!(bound_by(95.0, 50.0, true), "unclear (noisy)");
    }
}
