//! Where `--redis-url` points: its topology (standalone, Sentinel, Cluster) read off the URL's
//! scheme, the URL with its passwords hidden for logs and errors, and a start-up probe that
//! refuses a URL whose scheme does not match what answers (a cluster URL on a standalone
//! server, a standalone URL on a cluster node, a sentinel URL on a plain server).

use std::time::Duration;

use fred::prelude::{ClientLike, Config};

/// The Redis deployment a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `redis://` or `rediss://`: one server (a master, possibly with replicas).
    Standalone,
    /// `redis-sentinel://` or `rediss-sentinel://`: a master found, and followed across
    /// failovers, through sentinels.
    Sentinel,
    /// `redis-cluster://` or `rediss-cluster://`: a Redis Cluster.
    Cluster,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel => "sentinel",
            Self::Cluster => "cluster",
        }
    }
}

/// Why a Redis URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "--redis-url {0} is not a URL (redis://host:port, redis-sentinel://..., redis-cluster://...)"
    )]
    NotAUrl(String),
    #[error(
        "--redis-url {url:?}: unsupported scheme {scheme:?} (use redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://)"
    )]
    Scheme { url: String, scheme: String },
    #[error("--redis-url {0:?} names no host")]
    NoHost(String),
    #[error("--redis-url {0:?}: a sentinel URL needs ?sentinelServiceName=<the master's name>")]
    NoServiceName(String),
}

/// A parsed `--redis-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    pub tls: bool,
    /// The URL with every password replaced by `***`: safe for logs, `/status` and errors.
    pub redacted: String,
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let redacted = crate::redact::redact_url(url);
        // Not a URL: shown only if its password could be found and hidden.
        let parsed = url::Url::parse(url).map_err(|_| {
            UrlError::NotAUrl(if url.contains("://") {
                redacted.clone()
            } else {
                "(value hidden)".to_owned()
            })
        })?;
        let (topology, tls) = match parsed.scheme() {
            "redis" => (Topology::Standalone, false),
            "rediss" => (Topology::Standalone, true),
            "redis-sentinel" => (Topology::Sentinel, false),
            "rediss-sentinel" => (Topology::Sentinel, true),
            "redis-cluster" => (Topology::Cluster, false),
            "rediss-cluster" => (Topology::Cluster, true),
            scheme => {
                return Err(UrlError::Scheme {
                    url: redacted,
                    scheme: scheme.to_owned(),
                });
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost(redacted));
        }
        if topology == Topology::Sentinel
            && !parsed
                .query_pairs()
                .any(|(key, value)| key == "sentinelServiceName" && !value.is_empty())
        {
            return Err(UrlError::NoServiceName(redacted));
        }
        Ok(Self {
            topology,
            tls,
            redacted,
        })
    }

    /// A fred error about this URL, told without the URL's secrets.
    pub fn describe_error(&self, err: &fred::error::Error) -> String {
        format!("{} ({})", self.redacted, err.details())
    }
}

/// What a start-up probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The URL's topology answered as expected.
    Matches,
    /// Nothing answered in time: the workers start anyway and keep retrying.
    Unreachable(String),
}

/// The URL names one topology and Redis answers as another: refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--redis-url {url} is a {expected} URL, but {found}")]
pub struct Mismatch {
    pub url: String,
    pub expected: &'static str,
    pub found: String,
}

/// Connects once with `config` (as the workers would) and checks that Redis is the topology
/// the URL names. Unreachable is not an error: Redis may start after the cluster.
pub async fn probe(
    target: &RedisTarget,
    config: &Config,
    timeout: Duration,
) -> Result<Probe, Mismatch> {
    let mut config = config.clone();
    config.fail_fast = true;
    let client = match fred::types::Builder::from_config(config)
        .with_connection_config(|conn| {
            conn.connection_timeout = timeout;
            conn.internal_command_timeout = timeout;
        })
        .with_performance_config(|perf| perf.default_command_timeout = timeout)
        .build()
    {
        Ok(client) => client,
        Err(err) => return Ok(Probe::Unreachable(err.details().to_owned())),
    };
    let mismatch = |found: &str| Mismatch {
        url: target.redacted.clone(),
        expected: target.topology.as_str(),
        found: found.to_owned(),
    };
    let connected = tokio::time::timeout(timeout, async {
        let task = client.init().await;
        match task {
            Ok(_) => client
                .info::<String>(Some(fred::types::InfoKind::Server))
                .await
                .map(Some),
            Err(err) => Err(err),
        }
    })
    .await;
    let _ = client.quit().await;
    let info = match connected {
        Err(_) => return Ok(Probe::Unreachable("no answer in time".into())),
        Ok(Err(err)) => {
            let details = err.details().to_ascii_lowercase();
            return if details.contains("cluster support disabled") {
                Err(mismatch("the server is not a Redis Cluster node"))
            } else if details.contains("unknown command") && details.contains("sentinel") {
                Err(mismatch("the server is not a Sentinel"))
            } else {
                Ok(Probe::Unreachable(err.details().to_owned()))
            };
        }
        Ok(Ok(info)) => info.unwrap_or_default(),
    };
    let mode = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_mode:"))
        .map(str::trim)
        .unwrap_or("standalone");
    match (target.topology, mode) {
        (Topology::Standalone, "cluster") => Err(mismatch(
            "the server is a Redis Cluster node: use redis-cluster://",
        )),
        (Topology::Standalone, "sentinel") => Err(mismatch(
            "the server is a Sentinel: use redis-sentinel://...?sentinelServiceName=NAME",
        )),
        (Topology::Cluster, mode) if mode != "cluster" => {
            Err(mismatch("the server is not a Redis Cluster node"))
        }
        _ => Ok(Probe::Matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_topologies() {
        let topology = |url| RedisTarget::parse(url).map(|t| (t.topology, t.tls));
        assert_eq!(
            topology("redis://127.0.0.1:6379"),
            Ok((Topology::Standalone, false))
        );
        assert_eq!(
            topology("rediss://h:6380/1"),
            Ok((Topology::Standalone, true))
        );
        assert_eq!(
            topology("redis-sentinel://h:26379/0?sentinelServiceName=m&node=h2:26380"),
            Ok((Topology::Sentinel, false))
        );
        assert_eq!(
            topology("redis-cluster://h:7000?node=h:7001"),
            Ok((Topology::Cluster, false))
        );
        assert!(matches!(
            topology("http://h:1"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(
            topology("redis-sentinel://h:26379"),
            Err(UrlError::NoServiceName(_))
        ));
        assert!(matches!(topology("not a url"), Err(UrlError::NotAUrl(_))));
    }

    #[test]
    fn refusals_never_show_a_password() {
        for url in [
            "bogus://u:s3cret@h",
            "redis-sentinel://u:s3cret@h:1",
            "s3cret not a url",
        ] {
            let err = RedisTarget::parse(url).unwrap_err();
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let target = RedisTarget::parse("redis://ann:s3cret@h:6379/0").unwrap();
        assert_eq!(target.redacted, "redis://ann:***@h:6379/0");
    }
}
