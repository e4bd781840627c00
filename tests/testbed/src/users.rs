//! OS users and groups: who this process is, and the ids of the user
//! PostgreSQL runs as.
//!
//! Asked through libc's reentrant `getpw*_r` / `getgr*_r` rather than by
//! reading `/etc/passwd` and `/etc/group`, so users and groups that come
//! from NSS (LDAP, `systemd-userdb`, a container's injected user) are found
//! too, exactly as `setpriv` and dnsmasq will find them.

use std::ffi::{c_char, c_int, CStr, CString};
use std::mem::MaybeUninit;

/// Effective uid of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Effective gid of this process.
pub(crate) fn effective_gid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Name of the user with `uid`; `None` if there is none (or the lookup
/// failed).
pub(crate) fn user_name(uid: u32) -> Option<String> {
    // SAFETY: `lookup` passes valid pointers and the buffer's true length.
    lookup(
        |pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) },
        |pwd: &libc::passwd| c_string(pwd.pw_name),
    )
    .flatten()
}

/// `(uid, gid)` of the user `name`; `None` if there is none (or the lookup
/// failed).
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: as in `user_name`; `name` outlives the call.
    lookup(
        |pwd, buf, len, result| unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) },
        |pwd: &libc::passwd| (pwd.pw_uid, pwd.pw_gid),
    )
}

/// Name of the group with `gid`; `None` if there is none (or the lookup
/// failed).
pub(crate) fn group_name(gid: u32) -> Option<String> {
    // SAFETY: as in `user_name`.
    lookup(
        |grp, buf, len, result| unsafe { libc::getgrgid_r(gid, grp, buf, len, result) },
        |grp: &libc::group| c_string(grp.gr_name),
    )
    .flatten()
}

/// The largest string buffer a lookup may ask for (a group with thousands
/// of members needs a lot); beyond it the entry counts as not found.
const MAX_BUFFER: usize = 1 << 20;

/// Runs one `get*_r` call (`call(entry, buf, buflen, result)`), growing its
/// string buffer while it answers `ERANGE`, and reads the entry with `read`
/// while the buffer its strings point into is still alive.
fn lookup<T, R>(
    call: impl Fn(*mut T, *mut c_char, usize, *mut *mut T) -> c_int,
    read: impl FnOnce(&T) -> R,
) -> Option<R> {
    let mut len = 1024;
    loop {
        let mut entry = MaybeUninit::<T>::uninit();
        let mut buf = vec![0 as c_char; len];
        let mut result: *mut T = std::ptr::null_mut();
        let rc = call(entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && len < MAX_BUFFER {
            len *= 4;
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success `result` points at `entry`, now initialised, and
        // its strings point into `buf`, both alive until the end of this scope.
        return Some(read(unsafe { &*result }));
    }
}

/// An owned copy of a name from a passwd/group entry; `None` if it is
/// missing or empty.
fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null entry strings are NUL-terminated and live in the
    // lookup's buffer, which outlives this call (see `lookup`).
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}
