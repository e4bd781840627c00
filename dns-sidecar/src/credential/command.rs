//! `password_command`: a program (argv, no shell) whose standard output,
//! trimmed, is the password or token. It inherits the sidecar's environment
//! (the Azure CLI needs its HOME), gets no standard input, and is killed at
//! its time limit. Its standard error reaches the log as one line at most.

use std::process::Stdio;
use std::time::Duration;

use tracing::debug;

use super::token::first_line;
use crate::config::Secret;

/// How long one run may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `argv` once.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<Secret, String> {
    let (program, args) = argv.split_first().ok_or("password_command is empty")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run password_command `{program}`: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("password_command `{program}` did not finish within {timeout:?} (killed)"))?
        .map_err(|e| format!("password_command `{program}`: {e}"))?;
    let stderr = first_line(&String::from_utf8_lossy(&out.stderr), 200);
    if !out.status.success() {
        let mut msg = format!("password_command `{program}` failed ({})", out.status);
        if !stderr.is_empty() {
            msg.push_str(&format!(": {stderr}"));
        }
        return Err(msg);
    }
    if !stderr.is_empty() {
        debug!(program = %program, stderr = %stderr, "password_command wrote to standard error");
    }
    let text = String::from_utf8(out.stdout).map_err(|_| format!("password_command `{program}` printed non-UTF-8"))?;
    let pw = text.trim();
    if pw.is_empty() {
        return Err(format!("password_command `{program}` printed nothing"));
    }
    Ok(Secret::new(pw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn stdout_trimmed_is_the_password_and_failures_say_why() {
        let ok = run(&sh("printf '  tok-1 \\n'; echo noise >&2"), TIMEOUT).await.unwrap();
        assert_eq!(ok.expose(), "tok-1");
        let err = run(&sh("echo 'az login needed' >&2; echo second >&2; exit 3"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.contains("az login needed") && !err.contains("second"), "{err}");
        assert!(run(&sh("true"), TIMEOUT).await.unwrap_err().contains("printed nothing"));
        let slow = run(&sh("sleep 5"), Duration::from_millis(200)).await.unwrap_err();
        assert!(slow.contains("did not finish"), "{slow}");
        let missing = run(&["/nonexistent/prog".to_string()], TIMEOUT).await.unwrap_err();
        assert!(missing.contains("cannot run"), "{missing}");
    }
}
