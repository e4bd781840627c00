//! Runs `dig` (bind9-dnsutils) and parses what a person would read.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub class: String,
    pub rtype: String,
    pub data: String,
}

#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: String,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub edns: Option<String>,
    pub raw: String,
    /// The whole run of `dig`, process start-up included (tens of ms, and
    /// hundreds on a loaded machine).
    pub elapsed: Duration,
    /// dig's own `;; Query time:`, from its query to the answer: what a
    /// test of how fast the sidecar answers should look at.
    pub query_time: Option<Duration>,
}

impl Dig {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    /// How long the answer took: dig's query time (without its process
    /// start-up), or the whole run when dig printed none.
    pub fn answer_time(&self) -> Duration {
        self.query_time.unwrap_or(self.elapsed)
    }
    /// Data of the answer records of `rtype`.
    pub fn answers(&self, rtype: &str) -> Vec<String> {
        self.answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect()
    }
}

/// `dig @server -p port name type [extra...]`, one try, 2 s timeout.
pub fn dig(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let start = Instant::now();
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args([name, rtype, "+tries=1", "+time=2", "+nocookie"])
        .args(extra)
        .output()
        .expect("running dig (apt-get install -y bind9-dnsutils)");
    let elapsed = start.elapsed();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = parse(&raw);
    d.elapsed = elapsed;
    d
}

fn parse(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
            if let Some(s) = rest.split("status: ").nth(1) {
                d.status = s.split(',').next().unwrap_or("").trim().to_string();
            }
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if let Some(rest) = line.strip_prefix(";; Query time:") {
            d.query_time = rest
                .trim()
                .strip_suffix("msec")
                .and_then(|ms| ms.trim().parse().ok())
                .map(Duration::from_millis);
        } else if let Some(rest) = line.strip_prefix("; EDNS:") {
            d.edns = Some(rest.trim().to_string());
        } else if line.starts_with(";; QUESTION SECTION") {
            section = "q";
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "an";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "au";
        } else if line.starts_with(";; ADDITIONAL SECTION") || line.starts_with(";; OPT PSEUDOSECTION") {
            section = "";
        } else if line.is_empty() {
            if section != "q" {
                section = "";
            }
        } else if section == "q" && line.starts_with(';') {
            d.question = line
                .trim_start_matches(';')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            section = "";
        } else if (section == "an" || section == "au") && !line.starts_with(';') {
            let mut f = line.split_whitespace();
            let rr = Rr {
                name: f.next().unwrap_or("").to_string(),
                ttl: f.next().and_then(|t| t.parse().ok()).unwrap_or(0),
                class: f.next().unwrap_or("").to_string(),
                rtype: f.next().unwrap_or("").to_string(),
                data: f.collect::<Vec<_>>().join(" "),
            };
            if section == "an" {
                d.answer.push(rr);
            } else {
                d.authority.push(rr);
            }
        }
    }
    d
}
