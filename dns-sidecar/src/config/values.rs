//! Value types that parse themselves during deserialization, so a bad value is
//! reported by the TOML parser with its exact line and column.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A duration written with a unit: `150ms`, `5s`, `2m`, `1h`, `1d` (fractions allowed:
/// `1.5s`). A bare number is refused because `interval = 100` is ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("`{s}` is not a duration; write a number with a unit, e.g. \"150ms\", \"5s\", \"2m\"")
        })?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(format!("`{s}` has no unit; write e.g. \"{s}ms\" or \"{s}s\"")),
            other => return Err(format!("unknown unit `{other}` in `{s}`; use ms, s, m, h or d")),
        };
        let secs = value * scale;
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit, e.g. \"150ms\" or \"5s\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number is ambiguous; write \"{n}s\" or \"{n}ms\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TTL in whole seconds, written like a duration (`"5s"`, `"1m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ttl(pub u32);

/// The largest TTL we accept; anything longer defeats the point of the sidecar.
pub(crate) const MAX_TTL: u32 = 86_400;

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(dur) = HumanDuration::deserialize(d)?;
        if dur.subsec_nanos() != 0 {
            return Err(D::Error::custom(format!(
                "a TTL is whole seconds; {dur:?} is not (write e.g. \"5s\")"
            )));
        }
        if dur.as_secs() > MAX_TTL as u64 {
            return Err(D::Error::custom(format!(
                "a TTL of {}s is longer than one day",
                dur.as_secs()
            )));
        }
        Ok(Ttl(dur.as_secs() as u32))
    }
}

/// A socket address where the port may be left out (`"168.63.129.16"` means
/// port 53). IPv6 addresses with a port are written `"[::1]:5353"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DnsAddr(pub SocketAddr);

impl FromStr for DnsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(DnsAddr(addr));
        }
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(DnsAddr(SocketAddr::new(ip, 53)));
        }
        Err(format!(
            "`{s}` is not an IP address with an optional port; write e.g. \"127.0.0.1:5353\", \"[::1]:53\" or \"168.63.129.16\" (host names are not allowed here)"
        ))
    }
}

impl<'de> Deserialize<'de> for DnsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// A size in bytes: `"16MiB"`, `"512KiB"`, `"1GiB"` or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write e.g. \"16MiB\", \"512KiB\""))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown unit `{other}` in `{s}`; use B, KiB, MiB or GiB")),
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is out of range"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP network in CIDR notation (`"10.0.0.0/8"`, `"fd00::/8"`); a bare
/// address means that one address. Host bits must be zero, so a typo such as
/// `10.1.2.3/8` is reported rather than silently widened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this network (an IPv4 address mapped into IPv6
    /// counts as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The loopback networks, the default allow list.
    pub(crate) fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Cidr {
                addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("`{s}` is not an IP network; write e.g. \"10.0.0.0/8\", \"192.168.1.7\" or \"fd00::/8\"")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}` has a prefix length outside 0..={max}")),
            },
        };
        let c = Cidr { addr, prefix };
        let base = match addr {
            IpAddr::V4(v) => {
                IpAddr::V4((u32::from(v) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)).into())
            }
            IpAddr::V6(v) => {
                IpAddr::V6((u128::from(v) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)).into())
            }
        };
        if base != addr {
            return Err(format!(
                "`{s}` has bits set after the prefix; did you mean \"{base}/{prefix}\"?"
            ));
        }
        Ok(c)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("150ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(150));
        assert_eq!("1.5s".parse::<HumanDuration>().unwrap().0, Duration::from_millis(1500));
        assert_eq!("2m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(120));
        assert!("100".parse::<HumanDuration>().unwrap_err().contains("no unit"));
        assert_eq!("1d".parse::<HumanDuration>().unwrap().0, Duration::from_secs(86_400));
        assert!("5 days".parse::<HumanDuration>().unwrap_err().contains("unknown unit"));
        assert!("fast".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!("10.0.0.1".parse::<DnsAddr>().unwrap().0, "10.0.0.1:53".parse().unwrap());
        assert_eq!(
            "[::1]:5353".parse::<DnsAddr>().unwrap().0,
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!("::1".parse::<DnsAddr>().unwrap().0, "[::1]:53".parse().unwrap());
        assert!("dns.example.com".parse::<DnsAddr>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("16MiB".parse::<ByteSize>().unwrap().0, 16 << 20);
        assert_eq!("512KiB".parse::<ByteSize>().unwrap().0, 512 << 10);
        assert_eq!("100".parse::<ByteSize>().unwrap().0, 100);
        assert!("16MB".parse::<ByteSize>().unwrap_err().contains("unknown unit"));
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[test]
    fn networks() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.2".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!("::/0".parse::<Cidr>().unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!("10.1.2.3/8".parse::<Cidr>().unwrap_err().contains("10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }
}
