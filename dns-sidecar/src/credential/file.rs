//! `password_file`: read at start, again when the file changes (checked
//! every second by its size, modification time and inode, following
//! symlinks, so a Kubernetes Secret volume's swapped `..data` link counts)
//! and when the server refuses the password.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Secret;

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// A password file and the version last read.
#[derive(Debug)]
pub(crate) struct Watched {
    path: PathBuf,
    seen: Option<Stamp>,
}

impl Watched {
    pub(crate) fn new(path: PathBuf) -> Watched {
        Watched { path, seen: None }
    }

    /// Whether the file looks different from the version last read.
    pub(crate) fn changed(&self) -> bool {
        stamp(&self.path) != self.seen
    }

    /// Reads the password (trailing newline ignored; empty is an error).
    pub(crate) fn read(&mut self) -> Result<Secret, String> {
        let before = stamp(&self.path);
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read password_file `{}`: {e}", self.path.display()))?;
        self.seen = before;
        let pw = text.trim_end_matches(['\r', '\n']);
        if pw.is_empty() {
            return Err(format!("password_file `{}` is empty", self.path.display()));
        }
        Ok(Secret::new(pw.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_or_a_swapped_symlink_is_a_change() {
        let dir = std::env::temp_dir().join(format!("dns-sidecar-pwfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let v1 = dir.join("v1");
        let v2 = dir.join("v2");
        std::fs::write(&v1, "one\n").unwrap();
        std::fs::write(&v2, "two\n").unwrap();
        let link = dir.join("pw");
        std::os::unix::fs::symlink(&v1, &link).unwrap();
        let mut w = Watched::new(link.clone());
        assert!(w.changed(), "never read yet");
        assert_eq!(w.read().unwrap().expose(), "one");
        assert!(!w.changed());
        // Kubernetes: a new link renamed over the old one.
        let tmp = dir.join("pw.tmp");
        std::os::unix::fs::symlink(&v2, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(w.changed());
        assert_eq!(w.read().unwrap().expose(), "two");
        // Rewritten in place with a different length.
        std::fs::write(&v2, "three\n").unwrap();
        assert!(w.changed());
        assert_eq!(w.read().unwrap().expose(), "three");
        std::fs::write(&v2, "\n").unwrap();
        assert!(w.read().unwrap_err().contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(w.changed());
        assert!(w.read().is_err());
    }
}
