//! A validated, canonical DNS name that does not depend on any DNS library.
//!
//! Config, probes, decisions and the routes snapshot speak about names; only the
//! `dns` module turns them into wire-format names. Keeping our own type here means
//! a hickory upgrade touches one module, and comparisons are plain string
//! comparisons on a canonical (lower-case, fully-qualified) form.

use std::fmt;

/// A fully-qualified DNS name in canonical form: ASCII lower case, with the
/// trailing dot (`prod.db.internal.`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

/// Why a string is not a usable DNS name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NameError {
    #[error("a DNS name cannot be empty")]
    Empty,
    #[error("`{0}` is longer than 253 characters")]
    TooLong(String),
    #[error("`{name}` has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("label `{label}` in `{name}` is longer than 63 characters")]
    LabelTooLong { name: String, label: String },
    #[error("`{name}` contains `{ch}`; use letters, digits, `-` and `_` only")]
    BadChar { name: String, ch: char },
}

impl DnsName {
    /// Parses `s`, accepting it with or without the trailing dot.
    pub(crate) fn parse(s: &str) -> Result<Self, NameError> {
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            if s == "." {
                return Ok(DnsName(".".into()));
            }
            return Err(NameError::Empty);
        }
        if trimmed.len() > 253 {
            return Err(NameError::TooLong(s.into()));
        }
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel { name: s.into() });
            }
            if label.len() > 63 {
                return Err(NameError::LabelTooLong {
                    name: s.into(),
                    label: label.into(),
                });
            }
            if let Some(ch) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(NameError::BadChar { name: s.into(), ch });
            }
        }
        Ok(DnsName(format!("{}.", trimmed.to_ascii_lowercase())))
    }

    /// The canonical text, with the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without its trailing dot, as a PostgreSQL `host` would be written.
    pub(crate) fn without_dot(&self) -> &str {
        self.0.strip_suffix('.').unwrap_or(&self.0)
    }

    /// Whether `self` equals `zone` or lies below it.
    pub(crate) fn is_within(&self, zone: &DnsName) -> bool {
        within(&self.0, &zone.0)
    }

    /// Number of labels (the root has none).
    pub(crate) fn label_count(&self) -> usize {
        if self.0 == "." {
            0
        } else {
            self.0.matches('.').count()
        }
    }
}

/// Whether the canonical name `name` (as [`DnsName::as_str`] writes it)
/// equals `zone` or lies below it, label by label (`xdb.internal.` is not
/// below `db.internal.`). The one containment check on names in text form:
/// [`DnsName::is_within`] and the DNS handler's zone lookup both use it.
pub(crate) fn within(name: &str, zone: &str) -> bool {
    if zone == "." {
        return true;
    }
    name == zone
        || (name.len() > zone.len() && name.ends_with(zone) && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DnsName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DnsName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form() {
        assert_eq!(
            DnsName::parse("Prod.DB.internal").unwrap().as_str(),
            "prod.db.internal."
        );
        assert_eq!(
            DnsName::parse("prod.db.internal.").unwrap().as_str(),
            "prod.db.internal."
        );
        assert_eq!(
            DnsName::parse("prod.db.internal").unwrap().without_dot(),
            "prod.db.internal"
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(DnsName::parse(""), Err(NameError::Empty));
        assert!(matches!(DnsName::parse("a..b"), Err(NameError::EmptyLabel { .. })));
        assert!(matches!(
            DnsName::parse("a b.c"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            DnsName::parse(&"x".repeat(64)),
            Err(NameError::LabelTooLong { .. })
        ));
    }

    #[test]
    fn within() {
        let zone = DnsName::parse("db.internal").unwrap();
        assert!(DnsName::parse("prod.db.internal").unwrap().is_within(&zone));
        assert!(DnsName::parse("db.internal").unwrap().is_within(&zone));
        assert!(!DnsName::parse("xdb.internal").unwrap().is_within(&zone));
        assert!(!DnsName::parse("internal").unwrap().is_within(&zone));
        assert_eq!(DnsName::parse("prod.db.internal").unwrap().label_count(), 3);
    }
}
