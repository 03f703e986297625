//! Following a Sentinel failover at once, as Sentinel's client guidelines ask: the worker
//! listens for `+switch-master` on every sentinel of `--redis-url` and, when the sentinels name
//! a new master for its service, reconnects each of its connections that is still on another
//! server (fred asks the sentinels again when it reconnects).
//!
//! fred alone follows a failover only when its connection breaks. A SIGKILLed master breaks it,
//! but in a failover of a live master (`SENTINEL FAILOVER`, the way maintenance is done) the old
//! master stays up and keeps saying it is master until the sentinels demote it, about 10 s
//! later; meanwhile every write the workers send it (direct messages, logins, unread items) is
//! lost when it resyncs from the new master, and a worker that reconnects in between lands on the
//! new master while the others stay on the old one, splitting rooms.
//!
//! Architecture invariant (Sentinel): within the sentinels' own agreement (one `+switch-master`
//! per sentinel as it learns the new configuration), every connection of the worker leaves a
//! master the sentinels no longer name.

use std::time::{Duration, Instant};

use fred::{
    prelude::{ClientLike, Config, EventInterface, PubsubInterface},
    types::config::{Server, ServerConfig},
};
use tokio::sync::watch;

use super::{StoreError, build_client};
use crate::config::RedisSettings;

/// The Sentinel pub/sub channel announcing a new master: `<name> <old ip> <old port> <new ip>
/// <new port>` (Redis Sentinel documentation, "Pub/Sub messages").
pub const SWITCH_CHANNEL: &str = "+switch-master";
/// How long to keep reconnecting connections that a sentinel not yet told of the switch sent
/// back to the old master; later `+switch-master` notices start again.
const REALIGN_FOR: Duration = Duration::from_secs(30);
/// Pause between checks while some connection is still on the old master.
const REALIGN_EVERY: Duration = Duration::from_millis(250);

/// The new master named by a `+switch-master` message, if it is about `service`.
pub fn parse_switch(service: &str, message: &str) -> Option<Server> {
    let mut fields = message.split_ascii_whitespace();
    if fields.next()? != service {
        return None;
    }
    let (_old_ip, _old_port) = (fields.next()?, fields.next()?);
    let (ip, port) = (fields.next()?, fields.next()?.parse().ok()?);
    fields.next().is_none().then(|| Server::new(ip, port))
}

/// Under a Sentinel `config`, starts listening to every sentinel it names and keeps `clients`
/// on the master the sentinels name; does nothing for other topologies. Does not wait for the
/// sentinels: each listener connects, and reconnects, on its own.
pub fn follow_switches(
    config: &Config,
    settings: &RedisSettings,
    clients: Vec<fred::prelude::Client>,
) -> Result<(), StoreError> {
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        ..
    } = &config.server
    else {
        return Ok(());
    };
    let (targets, target) = watch::channel(None);
    for sentinel in hosts {
        let listener_config = Config {
            server: ServerConfig::Centralized {
                server: sentinel.clone(),
            },
            // A sentinel has no databases: fred would SELECT one and fail.
            database: None,
            ..config.clone()
        };
        // Receives one kind of short message, rarely.
        const LISTENER_CHANNEL_CAPACITY: usize = 16;
        let listener = build_client(&listener_config, settings, LISTENER_CHANNEL_CAPACITY)?;
        tokio::spawn(listen(listener, service_name.clone(), targets.clone()));
    }
    tokio::spawn(realign(clients, target, settings.timeout()));
    Ok(())
}

/// Subscribes to [`SWITCH_CHANNEL`] on one sentinel (again after every reconnection) and
/// publishes each new master it announces for `service`.
async fn listen(
    client: fred::prelude::Client,
    service: String,
    targets: watch::Sender<Option<Server>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    client.connect();
    loop {
        tokio::select! {
            reconnect = reconnects.recv() => {
                if let Err(RecvError::Closed) = reconnect {
                    return;
                }
                if let Err(err) = client.subscribe(SWITCH_CHANNEL).await {
                    tracing::debug!(cause = %err, "could not subscribe to a sentinel's switch notices; retrying after its next reconnection");
                }
            }
            message = messages.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                if let Some(master) = message.value.as_str().and_then(|text| parse_switch(&service, &text)) {
                    tracing::debug!(%master, "a sentinel names a new master");
                    targets.send_replace(Some(master));
                }
            }
        }
    }
}

/// Reconnects every connected client that is not on the latest announced master, until all
/// are (a sentinel not yet told of the switch may send a reconnection back to the old master)
/// or [`REALIGN_FOR`] has passed. A client that is disconnected is left alone: fred is
/// reconnecting it already, through the sentinels. So is one whose server fred does not know
/// (no `CLIENT ID` answer): better one stray connection than a reconnection loop.
async fn realign(
    clients: Vec<fred::prelude::Client>,
    mut target: watch::Receiver<Option<Server>>,
    timeout: Duration,
) {
    while target.changed().await.is_ok() {
        let since = Instant::now();
        let mut told = false;
        loop {
            let Some(master) = target.borrow_and_update().clone() else {
                break;
            };
            let stray: Vec<_> = clients
                .iter()
                .filter(|c| {
                    let on = c.active_connections();
                    c.is_connected() && !on.is_empty() && !on.contains(&master)
                })
                .collect();
            if stray.is_empty() {
                break;
            }
            if since.elapsed() >= REALIGN_FOR {
                tracing::warn!(%master, connections = stray.len(), "connections still on a master the sentinels no longer name");
                break;
            }
            if !told {
                told = true;
                tracing::info!(%master, connections = stray.len(), "the sentinels switched the master; reconnecting");
            }
            for client in stray {
                match tokio::time::timeout(timeout, client.force_reconnection()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        tracing::debug!(cause = %err, "forced reconnection failed; fred keeps retrying")
                    }
                    Err(_) => tracing::debug!("forced reconnection still under way"),
                }
            }
            tokio::time::sleep(REALIGN_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_messages_name_the_new_master_of_one_service() {
        assert_eq!(
            parse_switch("chat", "chat 10.0.0.1 6379 10.0.0.2 6380"),
            Some(Server::new("10.0.0.2", 6380))
        );
        assert_eq!(
            parse_switch("chat", "other 10.0.0.1 6379 10.0.0.2 6380"),
            None
        );
        assert_eq!(parse_switch("chat", "chat 10.0.0.1 6379 10.0.0.2"), None);
        assert_eq!(
            parse_switch("chat", "chat 10.0.0.1 6379 10.0.0.2 port"),
            None
        );
        assert_eq!(
            parse_switch("chat", "chat 10.0.0.1 6379 10.0.0.2 6380 extra"),
            None
        );
        assert_eq!(parse_switch("chat", ""), None);
    }
}
