//! A server's password source: exactly one of `password_env`,
//! `password_file`, `password_command`, `entra_identity`, with its
//! qualifiers. Checks the choice and the environment it needs (a readable
//! file, a command on PATH, the workload-identity variables) without ever
//! fetching a token or running the command; what is missing is an error when
//! secrets are required and a warning for `check-config` (see [`Ctx::missing_secret`]).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::ctx::{Ctx, Owner};
use super::human;
use crate::config::raw::RawConn;
use crate::config::{ConfigError, EntraIdentity, PasswordSource, Secret, DEFAULT_PASSWORD_REFRESH};
use crate::credential::endpoint;

/// Shortest `password_refresh` accepted.
const MIN_REFRESH: Duration = Duration::from_secs(1);

pub(super) fn source(cx: &Ctx<'_>, id: &str, c: &RawConn) -> Result<Option<PasswordSource>, ConfigError> {
    one_source(cx, id, c)?;
    if let Some(var) = &c.password_env {
        return env(cx, id, var);
    }
    if let Some(file) = &c.password_file {
        return file_source(cx, id, file);
    }
    if let Some(cmd) = &c.password_command {
        return command(cx, id, c, cmd);
    }
    if let Some(identity) = &c.entra_identity {
        return entra(cx, id, c, identity);
    }
    Ok(None)
}

/// At most one source, and no qualifier without the source it qualifies.
fn one_source(cx: &Ctx<'_>, id: &str, c: &RawConn) -> Result<(), ConfigError> {
    let set: Vec<(&str, Range<usize>)> = [
        ("password_env", c.password_env.as_ref().map(|v| v.span())),
        ("password_file", c.password_file.as_ref().map(|v| v.span())),
        ("password_command", c.password_command.as_ref().map(|v| v.span())),
        ("entra_identity", c.entra_identity.as_ref().map(|v| v.span())),
    ]
    .into_iter()
    .filter_map(|(k, s)| Some((k, s?)))
    .collect();
    if let [(a, _), (b, span), ..] = set.as_slice() {
        return cx.err(
            Some(span.clone()),
            format!("server `{id}` has both {a} and {b}"),
            "keep one password source (a server's own source replaces [probe]'s)",
        );
    }
    if let (Some(r), None) = (&c.password_refresh, &c.password_command) {
        return cx.err(
            Some(r.span()),
            format!("server `{id}` has password_refresh but no password_command"),
            "password_refresh says how often password_command runs again; remove it or add password_command",
        );
    }
    if let (Some(r), None) = (&c.entra_client_id, &c.entra_identity) {
        return cx.err(
            Some(r.span()),
            format!("server `{id}` has entra_client_id but no entra_identity"),
            "add entra_identity = \"managed-identity\" (or \"workload-identity\"), or remove entra_client_id",
        );
    }
    Ok(())
}

/// `password_env`: the variable must be set (its value is the password).
fn env(cx: &Ctx<'_>, id: &str, var: &Spanned<String>) -> Result<Option<PasswordSource>, ConfigError> {
    Ok(match std::env::var(var.get_ref()) {
        Ok(v) if !v.is_empty() => Some(PasswordSource::Env {
            var: var.get_ref().clone(),
            value: Secret::new(v),
        }),
        _ => {
            cx.missing_secret(
                var.span(),
                format!("environment variable `{}` is not set or empty", var.get_ref()),
                Owner::Server(id),
                format!("export {}=... before starting, or use password_file", var.get_ref()),
            )?;
            None
        }
    })
}

/// `password_file`: the file must be readable (it is read again at each login).
fn file_source(cx: &Ctx<'_>, id: &str, file: &Spanned<PathBuf>) -> Result<Option<PasswordSource>, ConfigError> {
    Ok(match std::fs::read(file.get_ref()) {
        Ok(_) => Some(PasswordSource::File(file.get_ref().clone())),
        Err(e) => {
            cx.missing_secret(
                file.span(),
                format!("cannot read password_file `{}`: {e}", file.get_ref().display()),
                Owner::Server(id),
                "check the path and that this user may read it".into(),
            )?;
            None
        }
    })
}

/// `password_command`: a program that exists, and a refresh of 1s or more.
fn command(
    cx: &Ctx<'_>,
    id: &str,
    c: &RawConn,
    cmd: &Spanned<Vec<String>>,
) -> Result<Option<PasswordSource>, ConfigError> {
    let argv = cmd.get_ref().clone();
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return cx.err(
            Some(cmd.span()),
            format!("server `{id}` has an empty password_command"),
            "give the program and its arguments, e.g. [\"/usr/local/bin/get-pg-token\", \"--db\", \"prod\"]",
        );
    };
    if find_program(program).is_none() {
        cx.missing_secret(
            cmd.span(),
            format!("password_command `{program}` is not an executable file or not found on PATH"),
            Owner::Server(id),
            "give an absolute path, or install it where the sidecar runs".into(),
        )?;
    }
    let refresh = c
        .password_refresh
        .as_ref()
        .map_or(DEFAULT_PASSWORD_REFRESH, |r| r.get_ref().0);
    if refresh < MIN_REFRESH {
        return cx.err(
            c.password_refresh.as_ref().map(|r| r.span()),
            format!("password_refresh of {} is too short", human(refresh)),
            "use 1s or more; the command also runs again whenever the server refuses the password",
        );
    }
    Ok(Some(PasswordSource::Command { argv, refresh }))
}

/// `entra_identity`: the variables its token endpoint needs.
fn entra(
    cx: &Ctx<'_>,
    id: &str,
    c: &RawConn,
    identity: &Spanned<EntraIdentity>,
) -> Result<Option<PasswordSource>, ConfigError> {
    let client_id = c.entra_client_id.as_ref().map(|c| c.get_ref().clone());
    let problem = match identity.get_ref() {
        EntraIdentity::ManagedIdentity => endpoint::Imds::from_env(client_id.clone()).err(),
        EntraIdentity::WorkloadIdentity => endpoint::Workload::from_env(client_id.clone()).err(),
    };
    if let Some(problem) = problem {
        cx.missing_secret(
            identity.span(),
            problem,
            Owner::Server(id),
            "set the variables where the sidecar runs (AKS workload identity injects them into pods whose service account is annotated and that carry the azure.workload.identity/use label)"
                .into(),
        )?;
    }
    Ok(Some(PasswordSource::Entra {
        identity: *identity.get_ref(),
        client_id,
    }))
}

/// The file `program` names: itself when it contains a `/`, else the first
/// executable file of that name on PATH.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, EntraIdentity, PasswordSource, Secrets};

    const BASE: &str = r#"
[dns]
listen = ["127.0.0.1:5353"]

[[zones]]
name = "db.internal"

[probe]
user = "probe"
sslmode = "require"
PROBE

[servers.a]
target = "pg-a.example.com"
A

[servers.b]
target = "pg-b.example.com"

[[aliases]]
name = "prod.db.internal"
servers = ["a", "b"]
"#;

    fn text(probe: &str, a: &str) -> String {
        BASE.replace("PROBE", probe).replace("A\n", &format!("{a}\n"))
    }

    fn deferred(probe: &str, a: &str) -> Result<(Config, Vec<String>), String> {
        Config::from_toml_with(Path::new("t.toml"), &text(probe, a), Secrets::Deferred)
            .map(|(c, w)| (c, w.iter().map(|w| w.to_string()).collect()))
            .map_err(|e| e.to_string())
    }

    fn required(probe: &str, a: &str) -> Result<Config, String> {
        Config::from_toml(Path::new("t.toml"), &text(probe, a)).map_err(|e| e.to_string())
    }

    #[test]
    fn each_source_with_its_qualifiers_and_server_overrides() {
        let (c, w) = deferred(
            "entra_identity = \"managed-identity\"\nentra_client_id = \"cid\"",
            "password_command = [\"/bin/sh\", \"-c\", \"echo x\"]\npassword_refresh = \"5s\"",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.servers[0].conn.password,
            Some(PasswordSource::Command {
                argv: vec!["/bin/sh".into(), "-c".into(), "echo x".into()],
                refresh: Duration::from_secs(5),
            }),
            "a server's own source replaces [probe]'s"
        );
        assert_eq!(
            c.servers[1].conn.password,
            Some(PasswordSource::Entra {
                identity: EntraIdentity::ManagedIdentity,
                client_id: Some("cid".into()),
            })
        );
        // A server without its own source may override [probe]'s qualifier.
        let c = required(
            "password_command = [\"/bin/sh\", \"-c\", \"echo x\"]",
            "password_refresh = \"2s\"",
        )
        .unwrap();
        let refresh = |i: usize| match &c.servers[i].conn.password {
            Some(PasswordSource::Command { refresh, .. }) => *refresh,
            p => panic!("{p:?}"),
        };
        assert_eq!(
            (refresh(0), refresh(1)),
            (Duration::from_secs(2), Duration::from_secs(600))
        );
        // Managed identity needs nothing from the environment to be checked.
        assert!(required("entra_identity = \"managed-identity\"", "").is_ok());
    }

    #[test]
    fn one_source_per_server_and_qualifiers_need_their_source() {
        let e = deferred("", "password_file = \"/x\"\nentra_identity = \"workload-identity\"").unwrap_err();
        assert!(
            e.starts_with("t.toml:16:") && e.contains("has both password_file and entra_identity"),
            "{e}"
        );
        let e = deferred("password_env = \"X\"\npassword_command = [\"true\"]", "").unwrap_err();
        assert!(e.contains("both password_env and password_command"), "{e}");
        let e = deferred("password_refresh = \"1m\"", "").unwrap_err();
        assert!(e.contains("password_refresh but no password_command"), "{e}");
        let e = deferred("", "entra_client_id = \"x\"").unwrap_err();
        assert!(e.contains("entra_client_id but no entra_identity"), "{e}");
        let e = deferred("password_command = []", "").unwrap_err();
        assert!(e.contains("empty password_command"), "{e}");
        let e = deferred("password_command = [\"/bin/sh\"]\npassword_refresh = \"100ms\"", "").unwrap_err();
        assert!(e.contains("too short"), "{e}");
        let e = deferred("entra_identity = \"service-principal\"", "").unwrap_err();
        assert!(e.contains("managed-identity") && e.contains("workload-identity"), "{e}");
    }

    /// `check-config` warns where the environment a source needs is
    /// missing; `--strict` (and `run`) make it an error, at the key.
    #[test]
    fn missing_environment_is_a_warning_or_with_strict_an_error() {
        for (probe, words) in [
            (
                "password_command = [\"dns-sidecar-no-such-program\"]",
                "`dns-sidecar-no-such-program` is not an executable file or not found on PATH",
            ),
            // The test environment has no workload identity variables.
            (
                "entra_identity = \"workload-identity\"",
                "workload identity needs AZURE_TENANT_ID, AZURE_CLIENT_ID (or entra_client_id), AZURE_FEDERATED_TOKEN_FILE set",
            ),
        ] {
            let (c, w) = deferred(probe, "").unwrap();
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].starts_with("t.toml:11:") && w[0].contains(words), "{}", w[0]);
            assert!(w[0].contains("servers `a`, `b`"), "{}", w[0]);
            assert!(c.servers[0].conn.password.is_some());
            let e = required(probe, "").unwrap_err();
            assert!(e.starts_with("t.toml:11:") && e.contains(words), "{e}");
        }
    }
}
