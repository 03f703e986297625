//! `chat-cluster check-config`, run as the binary: every flag of `supervise` is printed with its
//! source, secrets never are, and each kind of bad setting exits 2 with one line.

mod support;

use std::process::{Command, Output};

fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-cluster"));
    command.arg("check-config").args(args);
    // The test's own environment must not decide the outcome.
    for (key, _) in std::env::vars() {
        if key.starts_with("CHAT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run chat-cluster check-config")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_supervise_flag_is_printed_with_its_source_and_secrets_are_redacted() {
    let output = check_config(
        &["--workers", "3", "--console-note", "hello"],
        &[
            (
                "CHAT_REDIS_URL",
                "redis://app:hunter2-secret@10.1.2.3:6380/2",
            ),
            ("CHAT_API_KEY", "api-key-secret-value"),
            ("CHAT_ADMIN_TOKEN", "admin-token-secret-value"),
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("redis://app:***@10.1.2.3:6380/2  (CHAT_REDIS_URL)"),
        "{stdout}"
    );
    for secret in [
        "hunter2",
        "api-key-secret-value",
        "admin-token-secret-value",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(stdout.contains("CHAT_API_KEY                     set (value not shown)"));
    assert!(stdout.contains("CHAT_JWT_SECRET                  not set"));
    assert!(
        stdout.contains("--workers                        3  (flag)"),
        "{stdout}"
    );
    assert!(stdout.contains("--base-port                      6001  (default)"));

    // Every long flag `supervise --help` documents has its line.
    let help = Command::new(env!("CARGO_BIN_EXE_chat-cluster"))
        .args(["supervise", "--help"])
        .output()
        .expect("supervise --help");
    let flags: Vec<String> = text(&help.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.trim_end_matches([',', '.', ')']).to_owned())
        .filter(|flag| !matches!(flag.as_str(), "--help" | "--version"))
        .collect();
    assert!(flags.len() > 40, "{flags:?}");
    for flag in flags {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("{flag} "))),
            "{flag} is missing from check-config:\n{stdout}"
        );
    }
}

#[test]
fn each_bad_setting_exits_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("chat-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let short_token = dir.join("short-token");
    std::fs::write(&short_token, "short\n").expect("write token file");
    let short_token = short_token.to_string_lossy().into_owned();
    // Flags, environment, and what the one line must say.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--redis-url", "http://user:pw-secret@host"],
            vec![],
            "unsupported scheme",
        ),
        (
            vec!["--redis-url", "redis://:pw-secret@host:99999"],
            vec![],
            "--redis-url redis://:***@host:99999",
        ),
        (
            vec!["--base-port", "65535", "--workers", "2"],
            vec![],
            "run past port 65535",
        ),
        (
            vec![
                "--base-port",
                "7000",
                "--workers",
                "4",
                "--admin-port",
                "7002",
            ],
            vec![],
            "is one of the worker ports",
        ),
        (vec!["--base-port", "0"], vec![], "ports from 1 to 65535"),
        (
            vec!["--api-key-file", "/nonexistent/chat-api-key"],
            vec![],
            "/nonexistent/chat-api-key",
        ),
        (
            vec!["--auth", "jwt", "--jwt-secret-file", "/nonexistent/jwt"],
            vec![],
            "/nonexistent/jwt",
        ),
        (
            vec!["--admin-token-file", &short_token],
            vec![],
            "at least 16 characters",
        ),
        (
            vec![],
            vec![("CHAT_ADMIN_TOKEN", "has spaces in it, and more")],
            "visible ASCII",
        ),
        (
            vec!["--allowed-origins", "https://app.example.com/path"],
            vec![],
            "an origin has no path",
        ),
        (vec!["--send-queue", "0"], vec![], "--send-queue"),
        (
            vec!["--redis-url", "redis-cluster://127.0.0.1:7000"],
            vec![("CHAT_BUS_FORMAT", "legacy")],
            "--bus-format legacy speaks the node design's classic pub/sub on one Redis server",
        ),
    ];
    for (args, env, expected) in cases {
        let output = check_config(&args, &env);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed settings");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("chat-cluster check-config: "),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("pw-secret"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A URL whose scheme names another topology than what answers is refused at once, with one
/// line, by check-config and by supervise (which starts no worker).
#[test]
fn a_redis_url_naming_the_wrong_topology_is_refused() {
    let standalone = support::Redis::start();
    let cluster_node = support::Redis::start_with(&["--cluster-enabled", "yes"]);
    for (url, expected) in [
        (
            format!("redis-cluster://127.0.0.1:{}", standalone.port),
            "not a Redis Cluster node",
        ),
        (
            format!("redis://127.0.0.1:{}", cluster_node.port),
            "use redis-cluster://",
        ),
    ] {
        let output = check_config(&["--redis-url", &url], &[]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");

        let started = std::time::Instant::now();
        let supervise = Command::new(env!("CARGO_BIN_EXE_chat-cluster"))
            .args(["supervise", "--workers", "1", "--redis-url", &url])
            .args(["--base-port", &support::free_port().to_string()])
            .args(["--admin-port", &support::free_port().to_string()])
            .env_remove("CHAT_WORKER_SETTINGS")
            .output()
            .expect("run chat-cluster supervise");
        let stderr = text(&supervise.stderr);
        assert!(!supervise.status.success(), "{url}: supervise started");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(
            !stderr.contains("worker started"),
            "no worker ran: {stderr}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    // The right URL passes.
    let ok = check_config(&["--redis-url", &standalone.url()], &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
}
