//! Config errors name the file, the line and what to write instead.

use std::fmt;
use std::path::PathBuf;

/// A config that cannot be used. Displayed as `file:line:column: message`,
/// followed by the offending line and a hint where we have one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}\n  hint: check the path and that this user may read the file", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Located),
}

/// One problem at one place in the file.
#[derive(Debug)]
pub struct Located {
    pub(crate) path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub(crate) line: Option<(usize, usize)>,
    /// The source line, shown under the message.
    pub(crate) snippet: Option<String>,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Located {
    /// Builds an error at byte `span` of `source`.
    pub(crate) fn at(
        path: &std::path::Path,
        source: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, snippet) = match span {
            Some(span) => {
                let start = span.start.min(source.len());
                let before = &source[..start];
                let line_no = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let col = source[line_start..start].chars().count() + 1;
                let text = source[line_start..].lines().next().unwrap_or("").to_string();
                (Some((line_no, col)), Some(text))
            }
            None => (None, None),
        };
        Located {
            path: path.to_path_buf(),
            line,
            snippet,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, "")
    }
}

impl Located {
    /// `file:line:col: {label}message`, the line, and the hint.
    fn write(&self, f: &mut fmt::Formatter<'_>, label: &str) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {label}{}", self.message)?;
        if let (Some((line, _)), Some(snippet)) = (self.line, &self.snippet) {
            write!(f, "\n  {line:>4} | {snippet}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Something a valid config leaves for later: a secret that cannot be read
/// now but is needed at run time (see [`super::Secrets::Deferred`]).
/// Displayed like an error, with `warning: ` before the message.
#[derive(Debug)]
pub struct ConfigWarning(pub Located);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f, "warning: ")
    }
}

impl From<Located> for ConfigError {
    fn from(l: Located) -> Self {
        ConfigError::Invalid(l)
    }
}
