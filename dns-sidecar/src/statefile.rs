//! The state file: what the decision must not forget across a restart
//! (fences, timeline floors, targets, pins, drains; see
//! [`crate::decision::snapshot`]), as a small JSON document.
//!
//! Written atomically (a temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new
//! file, never half of one. Read once at start, before the first answer. A
//! file that cannot be used is reported and ignored, never a crash: one that
//! is ours but unreadable (a newer version, bad fields) is replaced at the
//! next write; one that is not ours at all (no `"format": "dns-sidecar-state"`)
//! is left untouched, and the sidecar keeps its state in memory only until
//! the operator moves it away, so a mistyped path never overwrites a
//! stranger's file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decision::snapshot::Remembered;

/// The value of the file's `format` field.
pub const FORMAT: &str = "dns-sidecar-state";
/// The file layout this build reads and writes.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    /// Unix time (seconds) of the write, for humans.
    written_at: f64,
    state: Remembered,
}

/// Just enough of a file to tell whether it is ours.
#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not a dns-sidecar state file: never overwritten.
    #[error(
        "{path} is not a dns-sidecar state file (no \"format\": \"dns-sidecar-state\"); it is ignored and will \
        not be overwritten: move it away or point [state] path elsewhere"
    )]
    Foreign { path: PathBuf },
    /// Ours, but this build cannot use it: ignored, replaced at the next write.
    #[error("state file {path} cannot be used ({reason}); starting without it, it will be replaced")]
    Unusable { path: PathBuf, reason: String },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl StateFileError {
    /// Whether the file at the path may be replaced by our own.
    pub fn may_overwrite(&self) -> bool {
        !matches!(self, StateFileError::Foreign { .. } | StateFileError::Read { .. })
    }
}

/// Reads `path`. `Ok(None)` when there is no file (or an empty one).
pub fn load(path: &Path) -> Result<Option<Remembered>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let unusable = |reason: String| StateFileError::Unusable {
        path: path.into(),
        reason,
    };
    let mentions_format = bytes.windows(FORMAT.len()).any(|w| w == FORMAT.as_bytes());
    let header: Header = match serde_json::from_slice(&bytes) {
        Ok(h) => h,
        // Ours but damaged (truncated, edited by hand): safe to replace.
        Err(e) if mentions_format => return Err(unusable(e.to_string())),
        Err(_) => return Err(StateFileError::Foreign { path: path.into() }),
    };
    match (header.format.as_deref(), header.version) {
        (Some(FORMAT), Some(VERSION)) => {}
        (Some(FORMAT), v) => return Err(unusable(format!("version {v:?}, this build reads version {VERSION}"))),
        _ => return Err(StateFileError::Foreign { path: path.into() }),
    }
    let file: File = serde_json::from_slice(&bytes).map_err(|e| unusable(e.to_string()))?;
    Ok(Some(file.state))
}

/// Writes `state` to `path` atomically.
pub fn store(path: &Path, state: &Remembered, written_at: f64) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.into(),
        source,
    };
    let file = File {
        format: FORMAT.into(),
        version: VERSION,
        written_at,
        state: state.clone(),
    };
    let mut body = serde_json::to_vec_pretty(&file).map_err(|e| err(std::io::Error::other(e)))?;
    body.push(b'\n');
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::snapshot::{RememberedAlias, RememberedFence};

    fn sample() -> Remembered {
        let mut r = Remembered::default();
        r.drained.push("c".into());
        r.aliases.insert(
            "prod.db.internal.".into(),
            RememberedAlias {
                target: Some("b".into()),
                decided: Some("b".into()),
                decided_timeline: Some(2),
                since: Some(1.5),
                timeline_floor: Some(2),
                fences: vec![RememberedFence {
                    server: "a".into(),
                    reason: "superseded".into(),
                    other: Some("b".into()),
                    timeline: Some(1),
                    since: 1.5,
                }],
                pinned: None,
            },
        );
        r
    }

    #[test]
    fn round_trips_and_leaves_no_temporary_file() {
        let dir = tempdir();
        let path = dir.join("state.json");
        assert!(load(&path).unwrap().is_none(), "no file yet");
        store(&path, &sample(), 10.0).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        let mut other = sample();
        other.drained.clear();
        store(&path, &other, 11.0).unwrap();
        assert_eq!(load(&path).unwrap(), Some(other), "replaced");
    }

    #[test]
    fn corrupt_and_foreign_files_are_reported_not_fatal() {
        let dir = tempdir();
        let path = dir.join("state.json");
        let cases: [(&str, bool); 6] = [
            ("", true),
            (
                "{\"format\": \"dns-sidecar-state\", \"version\": 1, \"written_at\": 1, \"state\": {\"aliases\": 7}}",
                false,
            ),
            ("{\"format\": \"dns-sidecar-state\", \"version\": 99}", false),
            ("{\"format\": \"dns-sidecar-state\", \"vers", false),
            ("root:x:0:0:root:/root:/bin/bash\n", false),
            ("{\"name\": \"some other program\"}", false),
        ];
        for (text, empty) in cases {
            std::fs::write(&path, text).unwrap();
            match load(&path) {
                Ok(None) if empty => {}
                Err(e) => {
                    let ours = text.contains(FORMAT);
                    assert_eq!(e.may_overwrite(), ours, "{text}: {e}");
                    assert!(e.to_string().contains("state.json"), "{e}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let e = store(Path::new("/nonexistent-dir-for-dns-sidecar/state.json"), &sample(), 0.0).unwrap_err();
        assert!(e.to_string().contains("cannot write state file"), "{e}");
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dns-sidecar-statefile-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
