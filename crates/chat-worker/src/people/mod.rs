//! People: `login`, direct messages (`chat`), heartbeats (`hb`), `geo`, and the backend hooks.
//!
//! A login binds a socket to a user: the worker subscribes the user's channel (like a room's,
//! through the hub and the bus) before recording the login in Redis, so no frame published after
//! the login is missed; then a [`mailman::Mailman`] delivers the inbox and live messages. A
//! direct message is stored by the recipient's inbox script before the sender's ack (see
//! [`inbox`]); the script also publishes it to the recipient's channel, and every worker holding
//! one of the recipient's sockets hands it to that socket's mailman ([`sessions`]).
//!
//! Architecture invariant (identity): the sender of a direct message is the socket's logged-in
//! user, never a field of the payload; a socket's identity is set once, by its own login.

pub mod format;
pub mod inbox;
pub mod mailman;
pub mod moderation;
pub mod sessions;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chat_protocol::{
    ChatText, ClientMsgId, DeviceId, ErrorCode, FreeForm, Limits, ProtocolError, UserId,
    bus::{NodeId, Topic},
    people::{
        ChatAckPayload, ChatAckReply, ChatPayload, DirectMessageFields, GeoHook, Login, LoginAck,
        LoginPayload, ModerationItem, Pending, SendAck, SessionEvent, SessionHook, StreamId,
        free_form_body, validate_geo,
    },
    push::{Category, MarkReadAck, MarkReadPayload, StoredCategory, UnreadCountAck},
};
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;

use self::{
    format::{SessionFormat, Standard},
    inbox::{Inbox, InboxError, Outgoing, Stored},
    mailman::Mailman,
    sessions::Sessions,
};
use crate::{
    bus::{self, Bus},
    config::PeopleSettings,
    push::unread::Unread,
    rooms::hub::{Hub, Occupancy},
    store::StoreError,
    unix_millis,
};

/// Who a socket is, once logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub device: DeviceId,
    /// Whether the socket's end publishes a logout hook.
    pub logout_hook: bool,
}

/// How a login binds its socket, beyond who it is: the core's way by default; an old client
/// dialect ([`crate::dialects`]) sets its own.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// How the session takes its deliveries.
    pub format: Arc<dyn SessionFormat>,
    /// Whether the login follows `--device-policy` (logs older sessions of other devices out,
    /// and is logged out by newer ones). `false`: it stays beside every other session of the
    /// user, and logs none out.
    pub exclusive: bool,
    /// Fields of the login hook message besides the core's own (which win on a clash): an old
    /// client's login object, which its backends read.
    pub hook_fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the socket's end publishes a logout hook on the login channel (old backends
    /// read every message there as a login).
    pub logout_hook: bool,
    /// Pushes tagged with this reach the session (the old push service's `tokenId`).
    pub tag: Option<UserId>,
}

impl Default for LoginOptions {
    fn default() -> Self {
        Self {
            format: Arc::new(Standard),
            exclusive: true,
            hook_fields: None,
            logout_hook: true,
            tag: None,
        }
    }
}

/// What a direct message says: a text (the core's `chat`), or an old client's own fields.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Text(&'a ChatText),
    Fields(&'a FreeForm),
}

/// A socket's login, kept in its membership.
#[derive(Debug, Default)]
pub enum LoginState {
    #[default]
    Out,
    /// The login waits for its user channel's subscription; nothing is registered or recorded
    /// yet, so a socket that ends now abandons it without effect.
    Pending(Arc<Identity>),
    /// The login script is issued: the login is made (hooks, kick-out), the session is
    /// registered, the answer is on its way.
    Committing(Arc<Identity>),
    In(Arc<Identity>),
}

/// Longest an event waits for its socket's login in progress ([`LoginSlot::settled_identity`]):
/// more than a login takes (the subscription wait and the login script's Redis timeout).
const LOGIN_SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The socket's login slot: one login per socket.
#[derive(Debug, Default)]
pub struct LoginSlot {
    state: Mutex<LoginState>,
    /// While a login is in progress: notified once it is made or abandoned.
    settling: Mutex<Option<Arc<Notify>>>,
}

impl LoginSlot {
    /// The logged-in identity, if the login completed.
    pub fn identity(&self) -> Result<Arc<Identity>, ProtocolError> {
        match &*self.lock() {
            LoginState::In(identity) => Ok(Arc::clone(identity)),
            _ => Err(ProtocolError::new(
                ErrorCode::NotLoggedIn,
                "send login {userId, deviceId} first",
            )),
        }
    }

    /// The logged-in identity, once a login in progress is made or abandoned (at most
    /// [`LOGIN_SETTLE_WAIT`]): for clients that send events right behind a login they cannot
    /// wait for (the old apps' logins have no ack). Events waiting here resume in the order
    /// they arrived.
    pub async fn settled_identity(&self) -> Result<Arc<Identity>, ProtocolError> {
        let settled = {
            let state = self.lock();
            if !matches!(*state, LoginState::Pending(_) | LoginState::Committing(_)) {
                drop(state);
                return self.identity();
            }
            let Some(settling) = self.settling().clone() else {
                drop(state);
                return self.identity();
            };
            // Created before the lock is released: notify_waiters wakes every future created
            // before it, polled or not, so the notice cannot be missed.
            settling.notified_owned()
        };
        let _ = tokio::time::timeout(LOGIN_SETTLE_WAIT, settled).await;
        self.identity()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settling(&self) -> std::sync::MutexGuard<'_, Option<Arc<Notify>>> {
        self.settling.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks a login in progress on its slot; dropped when the login is made or abandoned, it wakes
/// the events waiting for it.
struct Settling<'a>(&'a LoginSlot);

impl<'a> Settling<'a> {
    fn start(slot: &'a LoginSlot) -> Self {
        *slot.settling() = Some(Arc::new(Notify::new()));
        Self(slot)
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if let Some(settling) = self.0.settling().take() {
            settling.notify_waiters();
        }
    }
}

/// A completed login: the ack to send, then the mailman to start.
pub struct LoggedIn {
    pub identity: Arc<Identity>,
    pub pending: Pending,
    pub start_delivery: Box<dyn FnOnce() + Send>,
}

impl LoggedIn {
    pub fn ack(&self) -> LoginAck<'_> {
        LoginAck {
            ok: true,
            user_id: self.identity.user.as_str(),
            device_id: self.identity.device.as_str(),
            pending: self.pending,
        }
    }
}

/// The result of a `chat`: the id to put in the sender's ack.
#[derive(Debug)]
pub struct Sent {
    pub id: String,
    pub duplicate: bool,
    pub moderation: bool,
}

impl Sent {
    pub fn ack(&self) -> SendAck<'_> {
        SendAck {
            ok: true,
            id: &self.id,
            duplicate: self.duplicate,
            moderation: self.moderation,
        }
    }
}

pub struct People {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    sessions: Arc<Sessions>,
    /// `None` when the worker runs without Redis (the in-memory bus of tests).
    inbox: Option<Inbox>,
    unread: Option<Unread>,
    settings: PeopleSettings,
    limits: Limits,
    origin: NodeId,
    next_moderation: AtomicU64,
}

impl People {
    pub fn new(
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        sessions: Arc<Sessions>,
        stores: Option<(Inbox, Unread)>,
        settings: PeopleSettings,
        limits: Limits,
        origin: NodeId,
    ) -> Self {
        let (inbox, unread) = stores.unzip();
        Self {
            hub,
            bus,
            sessions,
            inbox,
            unread,
            settings,
            limits,
            origin,
            next_moderation: AtomicU64::new(0),
        }
    }

    /// `login {userId, deviceId}`: binds the socket to the user (once; the handshake's
    /// `authenticated` identity if any), logs older sessions out per the device policy, and
    /// answers with the waiting counts. See [`Self::login_as`].
    pub async fn login(
        &self,
        socket: &SocketRef,
        slot: &LoginSlot,
        authenticated: Option<&UserId>,
        payload: Option<LoginPayload>,
    ) -> Result<LoggedIn, ProtocolError> {
        let login = payload
            .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, LoginPayload::EXPECTED))?
            .validate(&self.limits, authenticated)?;
        self.login_as(socket, slot, login, LoginOptions::default())
            .await
    }

    /// Binds the socket to a validated login, as `options` say.
    ///
    /// A login either completes or is abandoned, never half of each. Its effects (the login
    /// hook, the kick-out of older sessions, the generation) are all in one script; if the
    /// socket closes before that script is issued, the login is abandoned with none of them.
    /// Once it is issued the login counts as made, and the socket's end — even during the
    /// script — publishes exactly one logout hook, after the login's on the same connection.
    pub async fn login_as(
        &self,
        socket: &SocketRef,
        slot: &LoginSlot,
        login: Login,
        options: LoginOptions,
    ) -> Result<LoggedIn, ProtocolError> {
        let inbox = self.inbox()?;
        let unread = self.unread()?;
        let identity = Arc::new(Identity {
            user: login.user,
            device: login.device,
            logout_hook: options.logout_hook,
        });
        {
            let mut state = slot.lock();
            if !matches!(*state, LoginState::Out) {
                return Err(ProtocolError::new(
                    ErrorCode::AlreadyLoggedIn,
                    "this socket has logged in already",
                ));
            }
            *state = LoginState::Pending(Arc::clone(&identity));
        }
        let _settling = Settling::start(slot);

        let topic = Topic::User(identity.user.clone());
        bus::subscribe_before_first_socket(&self.hub, &*self.bus, &topic).await;
        // The commit point: past here the login script is issued. The socket's disconnect
        // handler has taken the slot if the socket closed during the wait above.
        {
            let mut state = slot.lock();
            if !matches!(*state, LoginState::Pending(_)) || !socket.connected() {
                *state = LoginState::Out;
                tracing::debug!(user = %identity.user, "login abandoned: the socket closed before it was recorded");
                return Err(closed_during_login());
            }
            *state = LoginState::Committing(Arc::clone(&identity));
        }
        let mailbox = self.sessions.add(
            &identity.user,
            identity.device.clone(),
            socket.clone(),
            options.exclusive,
            options.tag.clone(),
        );
        if self.hub.enter(&topic) == Occupancy::Changed {
            self.bus.occupancy_changed(&topic);
        }

        let hook = self.session_hook(SessionEvent::Login, &identity, options.hook_fields.as_ref());
        let record = match inbox
            .login(&identity.user, &identity.device, options.exclusive, hook)
            .await
        {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(user = %identity.user, cause = %err, "login not recorded");
                self.forget(&identity.user, socket);
                let mut state = slot.lock();
                if matches!(*state, LoginState::Committing(_)) {
                    *state = LoginState::Out;
                }
                return Err(unavailable(&err));
            }
        };
        {
            let mut state = slot.lock();
            // The socket closed while the script ran: its disconnect handler forgot the
            // session and published the logout hook; the login was made and is over.
            if !matches!(*state, LoginState::Committing(_)) || !socket.connected() {
                return Err(closed_during_login());
            }
            *state = LoginState::In(Arc::clone(&identity));
        }
        self.sessions
            .set_generation(&identity.user, socket.id, record.generation);
        tracing::debug!(user = %identity.user, device = %identity.device, generation = record.generation, waiting = record.waiting, "logged in");

        let mailman = Mailman {
            inbox: inbox.clone(),
            unread: unread.clone(),
            user: identity.user.clone(),
            socket: socket.clone(),
            batch: self.settings.delivery_batch,
            window: self.settings.delivery_window,
            ack_timeout: self.settings.delivery_ack_timeout(),
            format: options.format,
        };
        Ok(LoggedIn {
            identity,
            pending: Pending {
                chat: record.waiting,
                notifications: record.unread,
            },
            start_delivery: Box::new(move || {
                tokio::spawn(mailman.run(mailbox));
            }),
        })
    }

    /// `chat {to, text, clientMsgId?}` from a logged-in socket: stored in the recipient's inbox
    /// (or handed to the moderation filter) before the answer.
    pub async fn chat(
        &self,
        sender: &Identity,
        payload: Option<ChatPayload>,
    ) -> Result<Sent, ProtocolError> {
        self.inbox()?;
        let request = payload
            .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, ChatPayload::EXPECTED))?
            .validate(&self.limits)?;
        self.send_message(
            sender,
            &request.to,
            Content::Text(&request.text),
            request.client_msg_id.as_ref(),
        )
        .await
    }

    /// Takes one send from the user's budget, shared by every worker (`--sender-rate-per-sec`),
    /// or refuses; a refusal says nothing was stored.
    pub async fn spend_send(&self, sender: &UserId) -> Result<(), ProtocolError> {
        self.inbox()?
            .spend_send(sender)
            .await
            .map_err(|err| match err {
                InboxError::Rate { .. } => send_refusal(&err, false),
                // The send script is issued only after the rate check: nothing was stored.
                other => {
                    tracing::debug!(cause = %other, "sender rate check failed");
                    ProtocolError::new(
                        ErrorCode::Unavailable,
                        "the message store did not answer; the message was not stored; retry later",
                    )
                }
            })
    }

    /// Sends a validated direct message from `sender` to `to`: paid from the sender's rate,
    /// stored in the recipient's inbox (or handed to the moderation filter) before the answer.
    pub async fn send_message(
        &self,
        sender: &Identity,
        to: &UserId,
        content: Content<'_>,
        client_msg_id: Option<&ClientMsgId>,
    ) -> Result<Sent, ProtocolError> {
        let inbox = self.inbox()?;
        self.spend_send(&sender.user).await?;
        let ts = unix_millis();
        let client_msg_id = client_msg_id.map(ClientMsgId::as_str);
        if self.settings.moderation {
            let (text, fields) = match content {
                Content::Text(text) => (Some(text.as_str().to_owned()), Default::default()),
                Content::Fields(fields) => (None, fields.fields().clone()),
            };
            let item = ModerationItem {
                mid: format!(
                    "{}-m{}",
                    self.origin,
                    self.next_moderation.fetch_add(1, Ordering::Relaxed)
                ),
                from: sender.user.as_str().to_owned(),
                to: to.as_str().to_owned(),
                text,
                ts,
                client_msg_id: client_msg_id.map(str::to_owned),
                fields,
            };
            return self.submit_for_moderation(inbox, item).await;
        }
        let body = match content {
            Content::Text(text) => DirectMessageFields {
                from: sender.user.as_str(),
                to: to.as_str(),
                text: text.as_str(),
                ts,
                client_msg_id,
            }
            .body(),
            Content::Fields(fields) => {
                free_form_body(sender.user.as_str(), to.as_str(), ts, client_msg_id, fields)
            }
        };
        let stored = inbox
            .send(Outgoing {
                to,
                from: sender.user.as_str(),
                body: &body,
                client_msg_id,
            })
            .await
            .map_err(|err| send_refusal(&err, client_msg_id.is_some()))?;
        Ok(match stored {
            Stored::New(id) => Sent {
                id,
                duplicate: false,
                moderation: false,
            },
            Stored::Duplicate(id) => Sent {
                id,
                duplicate: true,
                moderation: false,
            },
        })
    }

    /// `chat_ack {ids}`: removes delivered direct messages from the reader's own inbox (a
    /// second way to acknowledge, for clients that cannot answer the server's acks), and takes
    /// them out of flight for the reader's sessions on this worker.
    pub async fn chat_ack(
        &self,
        reader: &Identity,
        payload: Option<ChatAckPayload>,
    ) -> Result<ChatAckReply, ProtocolError> {
        let inbox = self.inbox()?;
        let ids = payload
            .ok_or_else(|| ProtocolError::new(ErrorCode::InvalidPayload, ChatAckPayload::EXPECTED))?
            .validate(self.settings.inbox_max_messages as usize)?;
        let removed = inbox
            .remove(&reader.user, &ids)
            .await
            .map_err(|err| unavailable(&err))?;
        self.sessions.acked(&reader.user, &ids);
        Ok(ChatAckReply { ok: true, removed })
    }

    /// `geo {...}` from a logged-in socket: forwarded to the geo hook channel.
    pub async fn geo(
        &self,
        sender: &Identity,
        payload: Option<serde_json::Value>,
    ) -> Result<(), ProtocolError> {
        let data = validate_geo(payload)?;
        let hook = GeoHook {
            user_id: sender.user.as_str(),
            device_id: sender.device.as_str(),
            ts: unix_millis(),
            data: &data,
        };
        self.publish_geo(serde_json::to_string(&hook).unwrap_or_default())
            .await
    }

    /// Publishes a message on the geo hook channel (`--geo-channel`; empty: refused).
    pub async fn publish_geo(&self, message: String) -> Result<(), ProtocolError> {
        let inbox = self.inbox()?;
        if self.settings.geo_channel.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "geo events are not collected here",
            ));
        }
        inbox
            .publish(&self.settings.geo_channel, message)
            .await
            .map(drop)
            .map_err(|err| unavailable(&err))
    }

    /// The socket closed: forgets its session and, if its login was made (its script issued),
    /// tells the logout hook.
    pub async fn end(&self, socket: &SocketRef, slot: &LoginSlot) {
        let state = std::mem::take(&mut *slot.lock());
        let identity = match state {
            // Not made yet: the login sees the slot emptied and abandons itself.
            LoginState::Out | LoginState::Pending(_) => return,
            LoginState::Committing(identity) | LoginState::In(identity) => identity,
        };
        self.forget(&identity.user, socket);
        if !identity.logout_hook {
            return;
        }
        if let (Some(inbox), Some((channel, message))) = (
            &self.inbox,
            self.session_hook(SessionEvent::Logout, &identity, None),
        ) && let Err(err) = inbox.publish(channel, message).await
        {
            tracing::debug!(cause = %err, "logout hook not published");
        }
    }

    /// Stores a message the moderation filter handed back. Every worker receives it; the
    /// send script's marker makes the first one store it and the others find a duplicate.
    pub async fn deliver_moderated(&self, item: &str) {
        let Some(inbox) = &self.inbox else { return };
        match moderation::approved(item, &self.limits) {
            Ok(approved) => {
                let outcome = inbox
                    .send(Outgoing {
                        to: &approved.to,
                        from: approved.from.as_str(),
                        body: &approved.body(),
                        client_msg_id: Some(&approved.token),
                    })
                    .await;
                match outcome {
                    Ok(stored) => tracing::debug!(?stored, "moderated message stored"),
                    Err(err) => tracing::warn!(cause = %err, "moderated message not stored"),
                }
            }
            Err(err) => tracing::warn!(cause = %err, "dropping a bad message from the filter"),
        }
    }

    /// `mark_read {ids}`: removes notifications from the user's unread store.
    pub async fn mark_read(
        &self,
        reader: &Identity,
        payload: Option<MarkReadPayload>,
    ) -> Result<MarkReadAck, ProtocolError> {
        let unread = self.unread()?;
        let payload = payload.ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::InvalidPayload,
                "mark_read expects {\"ids\": [string]}",
            )
        })?;
        let ids = payload
            .ids
            .iter()
            .map(|id| {
                id.parse::<StreamId>().map_err(|()| {
                    ProtocolError::new(
                        ErrorCode::InvalidPayload,
                        format!("{id:?} is not a notification id"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let removed = unread
            .remove(&reader.user, &ids)
            .await
            .map_err(|err| unavailable(&err))?;
        Ok(MarkReadAck { ok: true, removed })
    }

    /// `unread_count`: the user's unread notifications, in total and per category.
    pub async fn unread_count(&self, reader: &Identity) -> Result<UnreadCountAck, ProtocolError> {
        let entries = self
            .unread()?
            .all(&reader.user)
            .await
            .map_err(|err| unavailable(&err))?;
        let mut by_category: std::collections::BTreeMap<Category, u64> = Category::ALL
            .iter()
            .map(|category| (*category, 0))
            .collect();
        for entry in &entries {
            let json = format!("{{{}", entry.body);
            if let Ok(stored) = serde_json::from_str::<StoredCategory>(&json) {
                *by_category.entry(stored.category).or_default() += 1;
            }
        }
        Ok(UnreadCountAck {
            ok: true,
            count: entries.len() as u64,
            by_category,
        })
    }

    /// Logged-in sockets on this worker.
    pub fn session_count(&self) -> usize {
        self.sessions.count()
    }

    async fn submit_for_moderation(
        &self,
        inbox: &Inbox,
        item: ModerationItem,
    ) -> Result<Sent, ProtocolError> {
        let message = serde_json::to_string(&item).unwrap_or_default();
        let listeners = inbox
            .publish(&self.settings.filter_channel, message)
            .await
            .map_err(|err| unavailable(&err))?;
        if listeners == 0 {
            return Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "the moderation filter is not listening; the message was not sent",
            ));
        }
        Ok(Sent {
            id: item.mid,
            duplicate: false,
            moderation: true,
        })
    }

    fn forget(&self, user: &UserId, socket: &SocketRef) {
        if self.sessions.remove(user, socket.id) {
            let topic = Topic::User(user.clone());
            if self.hub.leave(&topic) == Occupancy::Changed {
                self.bus.occupancy_changed(&topic);
            }
        }
    }

    /// The login hook's channel and message: the core's fields, after `extra` ones if any.
    fn session_hook(
        &self,
        event: SessionEvent,
        identity: &Identity,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Option<(&str, String)> {
        if self.settings.login_channel.is_empty() {
            return None;
        }
        let node = self.origin.to_string();
        let hook = SessionHook {
            event,
            user_id: identity.user.as_str(),
            device_id: identity.device.as_str(),
            ts: unix_millis(),
            node: &node,
        };
        let message = match extra {
            None => serde_json::to_string(&hook).unwrap_or_default(),
            Some(extra) => {
                let mut merged = extra.clone();
                if let Ok(serde_json::Value::Object(core)) = serde_json::to_value(&hook) {
                    merged.extend(core);
                }
                serde_json::to_string(&merged).unwrap_or_default()
            }
        };
        Some((&self.settings.login_channel, message))
    }

    fn inbox(&self) -> Result<&Inbox, ProtocolError> {
        self.inbox.as_ref().ok_or_else(without_redis)
    }

    fn unread(&self) -> Result<&Unread, ProtocolError> {
        self.unread.as_ref().ok_or_else(without_redis)
    }
}

fn closed_during_login() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotLoggedIn, "the socket closed during login")
}

fn without_redis() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        "people features need Redis, and this worker runs without it",
    )
}

/// A store that failed to answer a read or an idempotent write: retrying is safe.
fn unavailable(err: &InboxError) -> ProtocolError {
    tracing::debug!(cause = %err, "people store unavailable");
    ProtocolError::new(
        ErrorCode::Unavailable,
        "the message store did not answer; retry later",
    )
}

/// Why a direct message was refused. Redis failing to answer does not say whether the message
/// was stored (the script may have run after the worker stopped waiting), and the answer says
/// so: a retry with the same `clientMsgId` is never stored twice.
fn send_refusal(err: &InboxError, has_client_msg_id: bool) -> ProtocolError {
    let retry = if has_client_msg_id {
        "retry with the same clientMsgId: a retry is never stored twice"
    } else {
        "give the message a clientMsgId and retry with the same one, so a retry is never stored twice"
    };
    match err {
        InboxError::Full { waiting } => ProtocolError::new(
            ErrorCode::InboxFull,
            format!(
                "the recipient has {waiting} messages waiting, the most allowed; the message was not stored"
            ),
        ),
        InboxError::SenderFull { waiting } => ProtocolError::new(
            ErrorCode::InboxFull,
            format!(
                "the recipient has {waiting} of your messages waiting, the most one sender may have there; the message was not stored"
            ),
        ),
        InboxError::Rate { retry_ms } => ProtocolError::new(
            ErrorCode::RateLimited,
            format!(
                "too many direct messages from this user (on all of its connections); the message was not stored; retry in {retry_ms} ms"
            ),
        ),
        InboxError::Store(StoreError::NotReplicated { timeout_ms }) => ProtocolError::new(
            ErrorCode::Unavailable,
            format!(
                "the message was stored, but no Redis replica confirmed it within {timeout_ms} ms, so a failover could lose it; {retry}"
            ),
        ),
        other => {
            tracing::debug!(cause = %other, "direct message store unavailable");
            ProtocolError::new(
                ErrorCode::Unavailable,
                format!(
                    "the message store did not answer in time, so the message may or may not have been stored; {retry}"
                ),
            )
        }
    }
}
