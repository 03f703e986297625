//! What `chat-cluster check-config` checks and prints, and what `supervise` checks before it
//! starts anything: the settings' own rules ([`SupervisorSettings::validate`]), then what can
//! be checked from outside the settings (the Redis URL parses, secret files are readable, the
//! admin token is usable, allowed origins are origins).
//!
//! Secrets never appear in what is printed: a password in a URL is replaced by `***`
//! ([`chat_worker::redact::redact_url`]), and secrets from the environment or files are shown
//! only as set or not.

use std::path::Path;

use chat_worker::{auth, redact::redact_url};
use clap::parser::ValueSource;

use crate::SupervisorSettings;

/// The environment variable holding the admin token (unless `--admin-token-file` is given).
pub const ADMIN_TOKEN_ENV: &str = "CHAT_ADMIN_TOKEN";

/// Shortest admin token accepted: it guards process ids and counts, and is sent in a cookie.
const MIN_ADMIN_TOKEN: usize = 16;

/// Every check, in the order an operator would fix them; the first failure is the answer, as
/// one line.
pub fn check(settings: &SupervisorSettings) -> Result<(), String> {
    // The settings' rules include the Redis URL's scheme and form (`RedisTarget`).
    settings.validate()?;
    // fred's own reading of it, and the CA file if one is named.
    chat_worker::store::redis_config(&settings.worker.redis_url, &settings.worker.redis)
        .map_err(|err| err.to_string())?;
    for origin in &settings.worker.auth.allowed_origins {
        check_origin(origin)?;
    }
    auth::api_key(&settings.worker.auth).map_err(|err| err.to_string())?;
    if let Some(path) = &settings.worker.auth.jwt_secret_file {
        readable(path, "--jwt-secret-file")?;
    }
    admin_token(settings)?;
    Ok(())
}

/// Connects once to the Redis of `--redis-url` (as the workers would, at most 3 s) and refuses a
/// URL whose topology does not match what answers: a cluster URL on a standalone server, a
/// standalone URL on a cluster node or a sentinel. `Ok(Some(reason))` when nothing answered:
/// not an error, Redis may start after the cluster (the workers keep retrying).
pub async fn probe_redis(settings: &SupervisorSettings) -> Result<Option<String>, String> {
    use chat_worker::store::{RedisTarget, redis_config, topology};
    let url = &settings.worker.redis_url;
    let target = RedisTarget::parse(url).map_err(|err| err.to_string())?;
    let config = redis_config(url, &settings.worker.redis).map_err(|err| err.to_string())?;
    match topology::probe(&target, &config, std::time::Duration::from_secs(3)).await {
        Ok(topology::Probe::Matches) => Ok(None),
        Ok(topology::Probe::Unreachable(reason)) => Ok(Some(format!(
            "Redis at {} does not answer yet ({reason}); the workers will keep trying",
            target.redacted
        ))),
        Err(mismatch) => Err(mismatch.to_string()),
    }
}

/// The admin token: from `--admin-token-file`, else `CHAT_ADMIN_TOKEN`; `None` when neither is
/// set. Surrounding whitespace (a file's newline) is not part of it.
pub fn admin_token(settings: &SupervisorSettings) -> Result<Option<String>, String> {
    let (token, source) = match &settings.admin_token_file {
        Some(path) => (
            readable(path, "--admin-token-file")?,
            path.display().to_string(),
        ),
        None => match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(token) => (token, ADMIN_TOKEN_ENV.to_owned()),
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim();
    if token.len() < MIN_ADMIN_TOKEN {
        return Err(format!(
            "the admin token in {source} must be at least {MIN_ADMIN_TOKEN} characters"
        ));
    }
    // It travels in a header and a cookie: visible ASCII without cookie separators.
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
    {
        return Err(format!(
            "the admin token in {source} may hold only visible ASCII characters other than ; , \" \\"
        ));
    }
    Ok(Some(token.to_owned()))
}

fn readable(path: &Path, flag: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("{flag} {}: {err}", path.display()))
}

/// `*`, `null`, or `scheme://host[:port]` with nothing after the authority (a trailing `/` and
/// case are forgiven, as the origin guard forgives them). Any scheme: hybrid apps use their own
/// (`capacitor://localhost`).
fn check_origin(origin: &str) -> Result<(), String> {
    let trimmed = origin.trim().trim_end_matches('/');
    if matches!(trimmed, "*" | "null" | "") {
        return Ok(());
    }
    let invalid = |why: &str| format!("--allowed-origins {origin:?}: {why}");
    if !trimmed.contains("://") {
        return Err(invalid("not an origin (scheme://host[:port])"));
    }
    let uri: axum::http::Uri = trimmed
        .parse()
        .map_err(|_| invalid("not an origin (scheme://host[:port])"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            "an origin has no path (write scheme://host[:port])",
        ));
    }
    Ok(())
}

/// The effective settings as `check-config` prints them: one line per flag of `command`, with
/// its value as the process would use it and where it came from, secrets redacted; then the
/// secrets read from the environment, as set or not.
pub fn effective_settings(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    settings: &SupervisorSettings,
) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<32} {}  (resolved)",
        "workers",
        settings.worker_count()
    )];
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if values.is_empty() {
            "(none)".to_owned()
        } else {
            let joined = values.join(",");
            if long.contains("url") {
                redact_url(&joined)
            } else {
                joined
            }
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => {
                arg.get_env().map_or("environment".to_owned(), |env| {
                    env.to_string_lossy().into_owned()
                })
            }
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => "unset".to_owned(),
        };
        lines.push(format!("--{long:<30} {value}  ({source})"));
    }
    for env in [auth::JWT_SECRET_ENV, auth::API_KEY_ENV, ADMIN_TOKEN_ENV] {
        let set = std::env::var_os(env).is_some_and(|value| !value.is_empty());
        lines.push(format!(
            "{env:<32} {}",
            if set {
                "set (value not shown)"
            } else {
                "not set"
            }
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "*",
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "https://example.com/",
            "capacitor://localhost",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://example.com/path",
            "https://example.com?x=1",
            "https://",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
