//! The place-aware error builder every check reports through, and the
//! secrets it defers to run time (as warnings) when asked to.

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;

use crate::config::{ConfigError, ConfigWarning, Located, Secret, Secrets};

/// A place-aware error builder for one file, which also knows whether
/// missing secrets are errors or warnings.
pub(super) struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    secrets: Secrets,
    /// Secrets that could not be read, with [`Secrets::Deferred`].
    deferred: RefCell<Vec<DeferredSecret>>,
}

/// A secret left for run time: where it is configured, what went wrong, and
/// whose it is (server ids; empty for the admin token).
struct DeferredSecret {
    span: Range<usize>,
    problem: String,
    owners: Vec<String>,
    hint: String,
}

/// Whose a secret is: a server's probe password, or the admin token.
#[derive(Clone, Copy)]
pub(super) enum Owner<'a> {
    Server(&'a str),
    AdminToken,
}

fn whose(owners: &[String]) -> String {
    match owners {
        [] => "the admin token".to_string(),
        [one] => format!("the password of server `{one}`"),
        many => format!(
            "the password of servers {}",
            many.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl<'a> Ctx<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str, secrets: Secrets) -> Ctx<'a> {
        Ctx {
            path,
            text,
            secrets,
            deferred: RefCell::new(Vec::new()),
        }
    }

    /// An error at `span` (none: the file as a whole), with a `hint` on what
    /// to write instead (empty: no hint).
    pub(super) fn err<T>(
        &self,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Result<T, ConfigError> {
        let hint: String = hint.into();
        let l = Located::at(self.path, self.text, span, msg);
        Err(if hint.is_empty() { l } else { l.hint(hint) }.into())
    }

    /// A secret that cannot be read (`problem`, e.g. "environment variable
    /// `X` is not set or empty"): an error when secrets are required; else
    /// remembered as a warning (one per place in the file, naming every
    /// server that uses it) and left unset.
    pub(super) fn missing_secret(
        &self,
        span: Range<usize>,
        problem: String,
        owner: Owner<'_>,
        hint: String,
    ) -> Result<Option<Secret>, ConfigError> {
        let owners: Vec<String> = match owner {
            Owner::Server(id) => vec![id.to_string()],
            Owner::AdminToken => Vec::new(),
        };
        if self.secrets == Secrets::Required {
            return self.err(Some(span), format!("{problem}: it holds {}", whose(&owners)), hint);
        }
        let mut deferred = self.deferred.borrow_mut();
        match deferred.iter_mut().find(|d| d.span == span) {
            Some(d) => d.owners.extend(owners),
            None => deferred.push(DeferredSecret {
                span,
                problem,
                owners,
                hint,
            }),
        }
        Ok(None)
    }

    /// The secrets left for run time, one warning per place in the file.
    pub(super) fn warnings(&self) -> Vec<ConfigWarning> {
        self.deferred
            .borrow()
            .iter()
            .map(|d| {
                let msg = format!(
                    "{}: it holds {}; needed at run time, not to check the file",
                    d.problem,
                    whose(&d.owners)
                );
                ConfigWarning(Located::at(self.path, self.text, Some(d.span.clone()), msg).hint(d.hint.clone()))
            })
            .collect()
    }
}
