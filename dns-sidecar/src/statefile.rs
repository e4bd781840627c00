//! The state file: what the decision must not forget across a restart
//! (fences, timeline floors, targets, pins, drains; see
//! [`crate::decision::snapshot`]) and what each on-change hook's external
//! record holds (see [`crate::hook::reconcile`]), as a small JSON document.
//!
//! Written atomically (a temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new
//! file, never half of one. The temporary file has a name of its own (never
//! reused, not guessable) and is created with `O_EXCL|O_NOFOLLOW` and mode
//! 0600, so a symlink planted in the directory is never followed and the
//! file is readable by this user only. Every write carries a generation
//! from a [`Writer`]: a write that was given up on (it outlasted its
//! timeout) and lands late never replaces a newer one.
//!
//! Values are checked when read: a time that is not a Unix time between 1970
//! and the year 9999 (an absurd `since`, say) makes the file damaged, with
//! the field named, exactly like a file that does not parse. Read once at start, before the first answer. A
//! file that cannot be used is reported and ignored, never a crash: one that
//! is ours but unreadable (a newer version, bad fields) is replaced at the
//! next write; one that is not ours at all (no `"format": "dns-sidecar-state"`)
//! is left untouched, and the sidecar keeps its state in memory only until
//! the operator moves it away, so a mistyped path never overwrites a
//! stranger's file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::decision::snapshot::Remembered;

/// The value of the file's `format` field.
pub(crate) const FORMAT: &str = "dns-sidecar-state";
/// The file layout this build reads and writes.
pub(crate) const VERSION: u32 = 1;
/// The latest time a file may hold (the end of the year 9999, Unix
/// seconds): anything later, negative or not finite is damage.
pub(crate) const MAX_UNIX: f64 = 253_402_300_799.0;

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
pub(crate) enum StateFileError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not a dns-sidecar state file: never overwritten.
    #[error(
        "{path} is not a dns-sidecar state file (no \"format\": \"dns-sidecar-state\"); it is ignored and will not be overwritten: move it away or point [state] path elsewhere"
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
    pub(crate) fn may_overwrite(&self) -> bool {
        !matches!(self, StateFileError::Foreign { .. } | StateFileError::Read { .. })
    }
}

/// Reads `path`. `Ok(None)` when there is no file (or an empty one).
pub(crate) fn load(path: &Path) -> Result<Option<Remembered>, StateFileError> {
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
    check_values(&file).map_err(unusable)?;
    Ok(Some(file.state))
}

/// Every value that the JSON types do not already bound (the integers are
/// `u32`, so serde rejects what does not fit): the times.
fn check_values(file: &File) -> Result<(), String> {
    check_time("written_at", file.written_at)?;
    for (name, a) in &file.state.aliases {
        if let Some(since) = a.since {
            check_time(&format!("aliases.\"{name}\".since"), since)?;
        }
        for (i, f) in a.fences.iter().enumerate() {
            check_time(&format!("aliases.\"{name}\".fences[{i}].since"), f.since)?;
        }
    }
    Ok(())
}

fn check_time(field: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=MAX_UNIX).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} = {value} is out of range: a Unix time in seconds from 0 to {MAX_UNIX} (the year 9999)"
        ))
    }
}

/// Orders the writes of one state file: each gets a generation, and a write
/// lands (is renamed into place) only if no later generation landed before
/// it. One per engine, shared with the blocking threads that write.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    next: AtomicU64,
    /// The generation of the file in place.
    landed: Mutex<u64>,
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    Written,
    /// A later generation landed first; this one was dropped.
    Superseded,
}

impl Writer {
    /// The next generation, in the order the caller decides its writes.
    pub(crate) fn generation(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes `state` to `path` atomically, unless a later generation has
    /// landed by the time this one is ready to.
    pub(crate) fn store(
        &self,
        path: &Path,
        generation: u64,
        state: &Remembered,
        written_at: f64,
    ) -> Result<Stored, StateFileError> {
        let tmp = Temp::write(path, &body(state, written_at))?;
        self.commit(tmp, generation)
    }

    /// Renames a written temporary file into place if `generation` is the
    /// latest so far (under the lock, so two renames cannot cross).
    fn commit(&self, tmp: Temp, generation: u64) -> Result<Stored, StateFileError> {
        let mut landed = self.landed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if generation <= *landed {
            return Ok(Stored::Superseded);
        }
        tmp.rename()?;
        *landed = generation;
        Ok(Stored::Written)
    }
}

/// Writes `state` to `path` atomically (one write of its own; see [`Writer`]
/// for writes that may overlap); the tests' shorthand.
#[cfg(test)]
pub(crate) fn store(path: &Path, state: &Remembered, written_at: f64) -> Result<(), StateFileError> {
    Temp::write(path, &body(state, written_at))?.rename()
}

fn body(state: &Remembered, written_at: f64) -> Vec<u8> {
    let file = File {
        format: FORMAT.into(),
        version: VERSION,
        written_at,
        state: state.clone(),
    };
    // Serializing plain data with string keys cannot fail.
    let mut body = serde_json::to_vec_pretty(&file).unwrap_or_default();
    body.push(b'\n');
    body
}

/// A written, fsynced temporary file next to `target`; removed when dropped
/// unless renamed into place.
struct Temp {
    path: PathBuf,
    target: PathBuf,
    renamed: bool,
}

/// Makes temporary names unique within the process (with the pid across
/// processes, and a random part against a name planted in advance).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Temp {
    fn write(target: &Path, body: &[u8]) -> Result<Temp, StateFileError> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut last = None;
        // A name taken (planted, or left by a crash) is skipped, never opened.
        for _ in 0..8 {
            let unique = format!(
                ".{name}.tmp-{}-{}-{:016x}",
                std::process::id(),
                TEMP_SEQ.fetch_add(1, Ordering::Relaxed),
                rand::random::<u64>()
            );
            match Temp::write_at(target, &dir_of(target).join(unique), body) {
                Err(StateFileError::Write { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = Some(source)
                }
                r => return r,
            }
        }
        Err(write_error(
            target,
            last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
        ))
    }

    /// Creates `tmp` (which must not exist, and is never a symlink followed)
    /// with mode 0600, writes `body` and fsyncs it.
    fn write_at(target: &Path, tmp: &Path, body: &[u8]) -> Result<Temp, StateFileError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
            .map_err(|e| write_error(target, e))?;
        // From here on the file is ours: dropping `t` removes it.
        let t = Temp {
            path: tmp.into(),
            target: target.into(),
            renamed: false,
        };
        f.write_all(body).map_err(|e| write_error(target, e))?;
        f.sync_all().map_err(|e| write_error(target, e))?;
        Ok(t)
    }

    /// Renames into place (a symlink at the target is replaced, not
    /// followed) and makes the rename durable.
    fn rename(mut self) -> Result<(), StateFileError> {
        std::fs::rename(&self.path, &self.target).map_err(|e| write_error(&self.target, e))?;
        self.renamed = true;
        std::fs::File::open(dir_of(&self.target))
            .and_then(|d| d.sync_all())
            .map_err(|e| write_error(&self.target, e))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn write_error(path: &Path, source: std::io::Error) -> StateFileError {
    StateFileError::Write {
        path: path.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
                hooked: Some(crate::decision::snapshot::HookedTarget {
                    server: "b".into(),
                    target: "pg-b.test.".into(),
                }),
                hook_unsure: None,
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

    /// A file of ours with `since` (of the alias) set to the literal `since`.
    fn with_since(since: &str) -> String {
        format!(
            "{{\"format\": \"dns-sidecar-state\", \"version\": 1, \"written_at\": 1700000000.5, \"state\": \
            {{\"aliases\": {{\"prod.db.internal.\": {{\"target\": \"a\", \"since\": {since}, \"timeline_floor\": 2, \
            \"pinned\": null}}}}}}}}"
        )
    }

    /// Files written before the hook records existed load, without them.
    #[test]
    fn files_without_hook_records_load() {
        let dir = tempdir();
        let path = dir.join("state.json");
        std::fs::write(&path, with_since("1700000000.25")).unwrap();
        let r = load(&path).unwrap().unwrap();
        let a = &r.aliases["prod.db.internal."];
        assert_eq!(
            (a.target.as_deref(), &a.hooked, &a.hook_unsure),
            (Some("a"), &None, &None)
        );
        let text = String::from_utf8(body(&r, 1.0)).unwrap();
        assert!(!text.contains("hook"), "absent records are not written: {text}");
    }

    #[test]
    fn out_of_range_times_make_the_file_damaged_with_the_field_named() {
        let dir = tempdir();
        let path = dir.join("state.json");
        std::fs::write(&path, with_since("1700000000.25")).unwrap();
        assert!(load(&path).unwrap().is_some(), "a sane file loads");
        for since in ["1e19", "-1", "253402300800", "1.7e308"] {
            std::fs::write(&path, with_since(since)).unwrap();
            let e = load(&path).unwrap_err();
            let msg = e.to_string();
            assert!(e.may_overwrite(), "ours, damaged: replaced at the next write");
            assert!(
                msg.contains("state.json")
                    && msg.contains("aliases.\"prod.db.internal.\".since")
                    && msg.contains("out of range"),
                "{since}: {msg}"
            );
        }
        // Beyond f64: serde's own located error.
        std::fs::write(&path, with_since("1e400")).unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.may_overwrite() && e.to_string().contains("line 1"), "{e}");
        // A fence's time and the write time are checked too.
        let mut bad = sample();
        bad.aliases.get_mut("prod.db.internal.").unwrap().fences[0].since = -5.0;
        store(&path, &bad, 10.0).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains(".fences[0].since = -5"), "{e}");
        store(&path, &sample(), 1e300).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("written_at = 1"), "{e}");
    }

    proptest! {
        /// Any JSON number in any numeric field: a clean `Ok` or a damaged
        /// file, never a panic, and what loads restores and converts back
        /// without one either.
        #[test]
        fn arbitrary_numbers_in_every_field_never_panic(
            field in 0usize..7,
            number in prop_oneof![
                any::<f64>().prop_map(|f| format!("{f:e}")),
                any::<i64>().prop_map(|i| i.to_string()),
                any::<u64>().prop_map(|u| u.to_string()),
                (any::<i32>(), -400i32..400).prop_map(|(m, e)| format!("{m}e{e}")),
                Just("123456789012345678901234567890".to_string()),
                Just("-0".to_string()),
            ],
        ) {
            let mut v: Vec<String> = ["1", "1700000000.5", "1700000000", "2", "3", "1699999999", "1"]
                .iter().map(|s| s.to_string()).collect();
            v[field] = number;
            let text = format!(
                "{{\"format\": \"dns-sidecar-state\", \"version\": {}, \"written_at\": {}, \"state\": {{\"aliases\": \
                {{\"prod.db.internal.\": {{\"target\": \"a\", \"decided\": \"a\", \"since\": {}, \"decided_timeline\": {}, \
                \"timeline_floor\": {}, \"fences\": [{{\"server\": \"b\", \"reason\": \"superseded\", \"other\": \"a\", \
                \"since\": {}, \"timeline\": {}}}], \"pinned\": null}}}}}}}}",
                v[0], v[1], v[2], v[3], v[4], v[5], v[6]
            );
            let dir = tempdir();
            let path = dir.join("state.json");
            std::fs::write(&path, &text).unwrap();
            match load(&path) {
                Ok(Some(r)) => {
                    let config = crate::config::Config::from_toml(Path::new("t.toml"), CONFIG).unwrap();
                    let clock = crate::wallclock::WallClock::now();
                    let now = std::time::Instant::now();
                    let (state, _) = crate::decision::snapshot::restore(&config, &r, now, |u| clock.instant(u));
                    let back = crate::decision::snapshot::capture(&state, &config, |t| clock.unix(t));
                    for a in back.aliases.values() {
                        for t in a.since.iter().chain(a.fences.iter().map(|f| &f.since)) {
                            prop_assert!(t.is_finite() && (0.0..=MAX_UNIX).contains(t), "{t}");
                        }
                    }
                }
                Ok(None) => prop_assert!(false, "{text}"),
                Err(e) => prop_assert!(e.may_overwrite(), "{e}"),
            }
        }
    }

    const CONFIG: &str = r#"
[dns]
listen = ["127.0.0.1:5353"]
[[zones]]
name = "db.internal"
[probe]
user = "probe"
sslmode = "require"
[servers.a]
target = "pg-a.test"
[servers.b]
target = "pg-b.test"
[[aliases]]
name = "prod.db.internal"
servers = ["a", "b"]
"#;

    #[test]
    fn the_file_and_its_temporary_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let path = dir.join("state.json");
        store(&path, &sample(), 1.0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        Writer::default().store(&path, 1, &sample(), 2.0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let dir = tempdir();
        let path = dir.join("state.json");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // At the target: replaced by our file, the victim untouched.
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        store(&path, &sample(), 1.0).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(load(&path).unwrap(), Some(sample()));
        // At the temporary name (planted, or dangling): refused, not opened.
        let tmp = dir.join(".state.json.tmp-planted");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = Temp::write_at(&path, &tmp, b"evil").err().expect("refused");
        assert!(e.to_string().contains("cannot write state file"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let dangling = dir.join(".state.json.tmp-dangling");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        assert!(Temp::write_at(&path, &dangling, b"evil").is_err());
        assert!(!dir.join("nowhere").exists(), "a dangling link is not created through");
    }

    #[test]
    fn a_slow_older_write_never_replaces_a_newer_one() {
        let dir = tempdir();
        let path = dir.join("state.json");
        let w = Writer::default();
        let (old_gen, new_gen) = (w.generation(), w.generation());
        assert!(new_gen > old_gen);
        // The older write got as far as its fsync, then stalled (a hung disk,
        // its timeout expired); the newer one is written meanwhile.
        let older = Temp::write(&path, &body(&sample(), 1.0)).unwrap();
        let mut newer = sample();
        newer.drained.clear();
        assert_eq!(w.store(&path, new_gen, &newer, 2.0).unwrap(), Stored::Written);
        assert_eq!(w.commit(older, old_gen).unwrap(), Stored::Superseded);
        assert_eq!(load(&path).unwrap(), Some(newer), "the newer state stays");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "the superseded temporary file is removed");
    }

    #[test]
    fn temporary_names_are_unique() {
        let dir = tempdir();
        let path = dir.join("state.json");
        let a = Temp::write(&path, b"1").unwrap();
        let b = Temp::write(&path, b"2").unwrap();
        assert_ne!(a.path, b.path);
        drop((a, b));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "dropped temporaries are removed"
        );
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
