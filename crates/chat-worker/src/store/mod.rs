//! The Redis store: where the URL points (standalone, Sentinel, Cluster), how connections to it
//! are built, and what an acknowledged write promises (`--durability`).
//!
//! The rest of the worker never learns the topology: fred routes every command by its keys'
//! hash slot on a Cluster and follows the master through the sentinels on Sentinel; every key
//! a script touches shares its owner's hash tag ([`chat_protocol::keys`]).
//!
//! Architecture invariant (durability): under `--durability replicated` a write that backs an
//! acknowledgement (a stored direct message, a stored notification) is followed, on the same
//! connection, by `WAIT 1 <timeout>` routed to the node holding the written key; the answer
//! is sent only if a replica confirmed it.

pub mod rooms;
pub mod sentinel;
pub mod topology;

use std::{path::Path, time::Duration};

use chat_protocol::keys::hash_slot;
use fred::{
    prelude::{ClientLike, Config},
    types::{ClusterHash, CustomCommand},
};

pub use self::topology::{RedisTarget, Topology};
use crate::config::{Durability, RedisSettings};

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the redis URL is not usable: {0}")]
    Url(String),
    #[error("the redis CA file {path} is not usable: {reason}")]
    CaFile { path: String, reason: String },
    #[error("could not create the redis client: {0}")]
    Client(String),
    #[error("no replica confirmed the write within {timeout_ms} ms")]
    NotReplicated { timeout_ms: u64 },
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
}

/// fred's configuration for `settings`' URL: the topology it names, its credentials, and TLS
/// with `--redis-ca-file` as the trusted root if given.
pub fn redis_config(redis_url: &str, settings: &RedisSettings) -> Result<Config, StoreError> {
    let target = RedisTarget::parse(redis_url).map_err(|err| StoreError::Url(err.to_string()))?;
    let mut config =
        Config::from_url(redis_url).map_err(|err| StoreError::Url(target.describe_error(&err)))?;
    if let Some(path) = &settings.redis_ca_file {
        config.tls = Some(tls_with_ca(path)?.into());
    }
    // Keep trying when Redis is away at start too, not only after a first success.
    config.fail_fast = false;
    Ok(config)
}

/// A TLS client configuration trusting only the certificate authorities in `path` (PEM).
fn tls_with_ca(path: &Path) -> Result<fred::types::config::TlsConnector, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let failed = |reason: String| StoreError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| failed(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| failed(err.to_string()))?;
    if certs.is_empty() {
        return Err(failed("it holds no PEM certificate".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|err| failed(err.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| failed(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config.into())
}

/// The connection that runs the store's commands and scripts, and the durability promise it
/// keeps.
#[derive(Clone)]
pub struct Store {
    client: fred::prelude::Client,
    prefix: String,
    durability: Durability,
    replica_ack_timeout: Duration,
}

impl Store {
    pub fn new(
        client: fred::prelude::Client,
        prefix: &str,
        durability: Durability,
        replica_ack_timeout: Duration,
    ) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            durability,
            replica_ack_timeout,
        }
    }

    pub fn client(&self) -> &fred::prelude::Client {
        &self.client
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// After a write to `key` that an acknowledgement depends on: under `--durability
    /// replicated`, waits until a replica has every write made so far on the connection to
    /// `key`'s node (`WAIT 1 <timeout>`), and fails if none confirms in time. Under `local`,
    /// returns at once.
    pub async fn confirm(&self, key: &str) -> Result<(), StoreError> {
        if self.durability == Durability::Local {
            return Ok(());
        }
        let timeout_ms = self.replica_ack_timeout.as_millis() as u64;
        // Routed like the key, so it runs on the connection that carried the write.
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(hash_slot(key)), false);
        let replicas: i64 = self
            .client
            .custom(wait, vec![1.to_string(), timeout_ms.to_string()])
            .await?;
        if replicas >= 1 {
            Ok(())
        } else {
            Err(StoreError::NotReplicated { timeout_ms })
        }
    }
}

/// Builds a fred client for `config` with the worker's timeouts and reconnection policy.
/// `receive_capacity` sizes fred's broadcast channels (pub/sub messages, errors, reconnects):
/// preallocated, so only a subscriber needs a large one.
pub fn build_client(
    config: &Config,
    settings: &RedisSettings,
    receive_capacity: usize,
) -> Result<fred::prelude::Client, StoreError> {
    use fred::{prelude::ReconnectPolicy, types::Builder};
    /// Reconnection backoff: from 100 ms, doubling, to 2 s, forever.
    const RECONNECT_MIN_MS: u32 = 100;
    const RECONNECT_MAX_MS: u32 = 2_000;
    let timeout = settings.timeout();
    Builder::from_config(config.clone())
        .with_performance_config(|perf| {
            perf.broadcast_channel_capacity = receive_capacity;
            perf.default_command_timeout = timeout;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = timeout;
            conn.internal_command_timeout = timeout;
            // Commands issued while Redis is away wait here, up to this many; older room
            // traffic is worth less than a bounded memory.
            conn.max_command_buffer_len = 10_000;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ))
        .build()
        .map_err(|err| StoreError::Client(err.to_string()))
}

/// Whether `client` is connected (to every node, on a Cluster).
pub fn connected(client: &fred::prelude::Client) -> bool {
    client.is_connected()
}
