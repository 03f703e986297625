//! The sessions: this worker's logged-in sockets by user, and what the user's channel tells them.
//!
//! A chat frame becomes mail for each of the user's local sessions (their mailmen deliver it);
//! a login frame logs older sessions out under the device policy. Logins are ordered by the
//! user's login generation (a Redis counter), so when two devices log in at once, the later
//! login wins on every worker, whatever order the frames arrive in.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chat_protocol::{
    DeviceId, UserId,
    people::{LOGOUT_EVENT, LogoutNotice, StreamId, UserFrame},
};
use serde_json::value::RawValue;
use socketioxide::{extract::SocketRef, socket::Sid};
use tokio::sync::mpsc;

use crate::config::DevicePolicy;

/// Work for a session's mailman.
#[derive(Debug)]
pub enum Mail {
    /// A message just stored in the user's inbox.
    Live {
        id: StreamId,
        message: Arc<RawValue>,
    },
    /// Read the inbox for anything not delivered yet (after a bus reconnection).
    CatchUp,
    /// These messages were acknowledged by id (`chat_ack`) and removed from the inbox: they
    /// are no longer in flight.
    Acked(Arc<[StreamId]>),
    /// A notification to emit as `event`; with `remove_on_ack`, the client's ack removes `id`
    /// from the unread store.
    Push {
        event: Arc<str>,
        id: Option<StreamId>,
        remove_on_ack: bool,
        payload: Arc<RawValue>,
    },
}

/// The receiving end of a session's mail, for its mailman.
pub struct Mailbox {
    pub mail: mpsc::Receiver<Mail>,
    /// Set when live mail did not fit the queue: the mailman must catch up from the inbox.
    pub behind: Arc<AtomicBool>,
}

struct Session {
    sid: Sid,
    device: DeviceId,
    /// Whether the session follows the device policy; `false`: it stays beside the user's
    /// other sessions, whatever logs in.
    exclusive: bool,
    /// Pushes tagged with this take the session (the old push service's `tokenId`).
    tag: Option<UserId>,
    /// The login generation of this session; 0 until the login script answered.
    generation: u64,
    /// The newest login seen while `generation` was unknown.
    newest_seen: Option<(u64, String)>,
    socket: SocketRef,
    mail: mpsc::Sender<Mail>,
    behind: Arc<AtomicBool>,
}

/// How a login ends an older session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// The same device logged in again: close the old socket quietly.
    Replaced,
    /// Another device logged in under the `single` policy: tell the old socket, then close it.
    LoggedOut,
}

/// What a login of generation `login` from `login_device` does to a session of generation
/// `session` on `session_device`.
pub fn supersedes(
    policy: DevicePolicy,
    session: u64,
    session_device: &str,
    login: u64,
    login_device: &str,
) -> Option<Supersede> {
    if login <= session {
        return None;
    }
    if session_device == login_device {
        return Some(Supersede::Replaced);
    }
    match policy {
        DevicePolicy::Single => Some(Supersede::LoggedOut),
        DevicePolicy::Multi => None,
    }
}

pub struct Sessions {
    by_user: Mutex<HashMap<UserId, Vec<Session>>>,
    policy: DevicePolicy,
    queue: usize,
}

/// A session to end, decided under the lock and carried out after it.
struct Ending {
    socket: SocketRef,
    how: Supersede,
    device: String,
}

impl Sessions {
    pub fn new(policy: DevicePolicy, queue: usize) -> Self {
        Self {
            by_user: Mutex::new(HashMap::new()),
            policy,
            queue,
        }
    }

    /// Registers a socket logging in; its generation follows with [`Self::set_generation`].
    /// A session that is not `exclusive` is never ended by another login.
    pub fn add(
        &self,
        user: &UserId,
        device: DeviceId,
        socket: SocketRef,
        exclusive: bool,
        tag: Option<UserId>,
    ) -> Mailbox {
        let (mail, receiver) = mpsc::channel(self.queue);
        let behind = Arc::new(AtomicBool::new(false));
        self.lock().entry(user.clone()).or_default().push(Session {
            sid: socket.id,
            device,
            exclusive,
            tag,
            generation: 0,
            newest_seen: None,
            socket,
            mail,
            behind: Arc::clone(&behind),
        });
        Mailbox {
            mail: receiver,
            behind,
        }
    }

    /// Forgets a socket's session (its mailman stops). Whether it was registered.
    pub fn remove(&self, user: &UserId, sid: Sid) -> bool {
        let mut by_user = self.lock();
        let Some(sessions) = by_user.get_mut(user) else {
            return false;
        };
        let before = sessions.len();
        sessions.retain(|session| session.sid != sid);
        let removed = sessions.len() < before;
        if sessions.is_empty() {
            by_user.remove(user);
        }
        removed
    }

    /// Gives a session the generation its login got, and ends it at once if a newer login was
    /// seen meanwhile.
    pub fn set_generation(&self, user: &UserId, sid: Sid, generation: u64) {
        let ending = {
            let mut by_user = self.lock();
            let Some(session) = by_user
                .get_mut(user)
                .and_then(|sessions| sessions.iter_mut().find(|s| s.sid == sid))
            else {
                return;
            };
            session.generation = generation;
            session
                .newest_seen
                .take()
                .and_then(|(newest, device)| self.ending(session, newest, &device))
        };
        end_all(ending);
    }

    /// Acts on a frame from the user's channel.
    pub fn on_frame(&self, user: &str, frame: &str) {
        match UserFrame::parse(frame) {
            Ok(UserFrame::Chat { id, message }) => self.deliver(user, id, message),
            Ok(UserFrame::Login { generation, device }) => self.on_login(user, generation, device),
            Ok(UserFrame::Push {
                event,
                id,
                remove_on_ack,
                tag,
                payload,
            }) => {
                let event: Arc<str> = Arc::from(event);
                let payload: Arc<RawValue> = Arc::from(payload.to_owned());
                self.mail_matching(
                    user,
                    |session| {
                        tag.is_none_or(|tag| {
                            session.tag.as_ref().is_some_and(|t| t.as_str() == tag)
                        })
                    },
                    || Mail::Push {
                        event: Arc::clone(&event),
                        id,
                        remove_on_ack,
                        payload: Arc::clone(&payload),
                    },
                );
            }
            Err(err) => tracing::warn!(user, cause = %err, "dropping a bad user frame"),
        }
    }

    /// Asks every session to read its inbox again (after the bus reconnected: frames published
    /// while it was away are lost, the inbox is not).
    pub fn catch_up_all(&self) {
        for session in self.lock().values().flatten() {
            if session.mail.try_send(Mail::CatchUp).is_err() {
                session.behind.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Tells the user's sessions on this worker that these messages were acknowledged by id.
    pub fn acked(&self, user: &UserId, ids: &[StreamId]) {
        let ids: Arc<[StreamId]> = Arc::from(ids);
        self.mail_each(user.as_str(), || Mail::Acked(Arc::clone(&ids)));
    }

    /// Logged-in sockets on this worker.
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn deliver(&self, user: &str, id: StreamId, message: &RawValue) {
        let message: Arc<RawValue> = Arc::from(message.to_owned());
        self.mail_each(user, || Mail::Live {
            id,
            message: Arc::clone(&message),
        });
    }

    /// Queues mail for each of the user's sessions. A session whose queue is full is marked
    /// behind: it catches up from the inbox (a push without storage is lost for it, as for a
    /// client that is not connected).
    fn mail_each(&self, user: &str, mail: impl Fn() -> Mail) {
        self.mail_matching(user, |_| true, mail);
    }

    /// Queues mail for the user's sessions that `takes` accepts (see [`Self::mail_each`]).
    fn mail_matching(&self, user: &str, takes: impl Fn(&Session) -> bool, mail: impl Fn() -> Mail) {
        let by_user = self.lock();
        let Some(sessions) = by_user.get(user) else {
            return;
        };
        for session in sessions.iter().filter(|session| takes(session)) {
            if session.mail.try_send(mail()).is_err() {
                session.behind.store(true, Ordering::Relaxed);
            }
        }
    }

    fn on_login(&self, user: &str, generation: u64, device: &str) {
        let ending: Vec<Ending> = {
            let mut by_user = self.lock();
            let Some(sessions) = by_user.get_mut(user) else {
                return;
            };
            sessions
                .iter_mut()
                .filter_map(|session| {
                    if session.generation == 0 {
                        let newer = session
                            .newest_seen
                            .as_ref()
                            .is_none_or(|(seen, _)| *seen < generation);
                        if newer {
                            session.newest_seen = Some((generation, device.to_owned()));
                        }
                        return None;
                    }
                    self.ending(session, generation, device)
                })
                .collect()
        };
        end_all(ending);
    }

    fn ending(&self, session: &Session, generation: u64, device: &str) -> Option<Ending> {
        if !session.exclusive {
            return None;
        }
        let how = supersedes(
            self.policy,
            session.generation,
            session.device.as_str(),
            generation,
            device,
        )?;
        Some(Ending {
            socket: session.socket.clone(),
            how,
            device: device.to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<Session>>> {
        // No code between lock and unlock panics: a poisoned map is still consistent.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends sessions outside the registry's lock (disconnecting runs the socket's disconnect
/// handler, which removes the session from the registry).
fn end_all(endings: impl IntoIterator<Item = Ending>) {
    for Ending {
        socket,
        how,
        device,
    } in endings
    {
        tracing::debug!(sid = %socket.id, ?how, by_device = %device, "session superseded");
        if how == Supersede::LoggedOut {
            let notice = LogoutNotice {
                reason: "logged_in_elsewhere",
                device_id: &device,
            };
            let _ = socket.emit(LOGOUT_EVENT, &notice);
        }
        let _ = socket.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_logins_supersede_by_device_policy() {
        use DevicePolicy::{Multi, Single};
        assert_eq!(
            supersedes(Single, 1, "a", 2, "b"),
            Some(Supersede::LoggedOut)
        );
        assert_eq!(
            supersedes(Single, 1, "a", 2, "a"),
            Some(Supersede::Replaced)
        );
        assert_eq!(supersedes(Multi, 1, "a", 2, "b"), None);
        assert_eq!(supersedes(Multi, 1, "a", 2, "a"), Some(Supersede::Replaced));
        // An older or the session's own login never ends it, whatever the order of arrival.
        assert_eq!(supersedes(Single, 3, "a", 2, "b"), None);
        assert_eq!(supersedes(Single, 3, "a", 3, "a"), None);
    }
}
