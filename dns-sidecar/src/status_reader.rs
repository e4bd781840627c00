//! `/status` for reader aliases (issue 19): the servers each answers now
//! (a spreading alias's set) with their share of the answers, and why each
//! other candidate is out; and the set-size gauge. The reasons come from
//! the pure [`select::excluded`]; the shares from the answer counters the
//! query path keeps (`dns_sidecar_reader_answers_total`).

use crate::config::{AliasId, Config, ServerId};
use crate::decision::{select, State};
use crate::metrics::{AliasLabel, AliasServer, Metrics};
use crate::status::{AliasStatus, Excluded, SetMember};

/// The reader fields of alias `i`'s status (the rest default).
pub(crate) fn reader(config: &Config, state: &State, i: AliasId, metrics: &Metrics) -> AliasStatus {
    let alias = &config.aliases[i];
    if !alias.role.reads_standbys() {
        return AliasStatus::default();
    }
    let set = state.answer_set(config, i);
    let answered: Vec<ServerId> = set.iter().map(|&(s, _)| s).collect();
    let counts: Vec<Option<u64>> = set
        .iter()
        .map(|&(s, _)| {
            alias.spread.is_set().then(|| {
                let label = AliasServer {
                    alias: alias.name.to_string(),
                    server: config.servers[s].id.clone(),
                };
                metrics.reader.answers.get_or_create(&label).get()
            })
        })
        .collect();
    let total: u64 = counts.iter().flatten().sum();
    let set = set
        .iter()
        .zip(&counts)
        .map(|(&(s, weight), &answers)| SetMember {
            server: config.servers[s].id.clone(),
            target: config.servers[s].target.to_string(),
            weight,
            answers,
            share: answers.filter(|_| total > 0).map(|n| n as f64 / total as f64),
            rtt_ms: state.servers[s].rtt.median().map(|d| d.as_secs_f64() * 1000.0),
        })
        .collect();
    let excluded = select::excluded(state, config, i, &answered)
        .into_iter()
        .map(|(s, reason)| Excluded {
            server: config.servers[s].id.clone(),
            reason,
        })
        .collect();
    AliasStatus {
        spread: Some(alias.spread.as_str().into()),
        prefer: Some(alias.prefer.as_str().into()),
        set,
        excluded,
        ..AliasStatus::default()
    }
}

/// `dns_sidecar_reader_set_size` for every alias: how many servers DNS
/// answers for it (a spreading alias's set; 1 or 0 for any other).
pub(crate) fn set_sizes(config: &Config, state: &State, metrics: &Metrics) {
    for (i, a) in config.enumerate_aliases() {
        let label = AliasLabel {
            alias: a.name.to_string(),
        };
        let n = state.answer_set(config, i).len();
        metrics.reader.set_size.get_or_create(&label).set(n as i64);
    }
}
