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
    /// Pushes tagged with this take the session (the old push service's `tokenId`).
    tag: Option<UserId>,
    /// Where this session stands in its user's login order.
    order: LoginOrder,
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

/// A session's place in its user's login order: the generation its own login got, and, while
/// that is not known yet (the login script has not answered), the logins seen meanwhile that
/// may end it. Pure: the registry below feeds it the frames and carries out what it decides.
///
/// Whatever order a login frame and the session's own generation arrive in, the session ends
/// if and only if some login frame [`supersedes`] it; a session logged in side by side never
/// ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoginOrder {
    /// The session logged in beside the user's others (an old client's login that follows no
    /// device policy, [`super::LoginOptions::exclusive`] false): no login ends it.
    side_by_side: bool,
    /// The login generation of this session; 0 until the login script answered.
    generation: u64,
    /// The newest login from the session's own device seen while `generation` was 0.
    newest_same_device: u64,
    /// The newest login from another device seen while `generation` was 0.
    newest_other_device: Option<(u64, String)>,
}

impl LoginOrder {
    /// The order of a new session: `exclusive`, it follows the device policy; otherwise it
    /// stays beside every other session of the user.
    pub(crate) fn new(exclusive: bool) -> Self {
        Self {
            side_by_side: !exclusive,
            ..Self::default()
        }
    }

    /// A login frame of `generation` from `device` arrived; what it does to this session (on
    /// `own_device`) now. Before the session's own generation is known it only remembers.
    pub(crate) fn on_login(
        &mut self,
        policy: DevicePolicy,
        own_device: &str,
        generation: u64,
        device: &str,
    ) -> Option<Supersede> {
        if self.side_by_side {
            return None;
        }
        if self.generation != 0 {
            return supersedes(policy, self.generation, own_device, generation, device);
        }
        if device == own_device {
            self.newest_same_device = self.newest_same_device.max(generation);
        } else if self
            .newest_other_device
            .as_ref()
            .is_none_or(|(seen, _)| *seen < generation)
        {
            self.newest_other_device = Some((generation, device.to_owned()));
        }
        None
    }

    /// The session's own login got `generation`; whether a login seen meanwhile ends it (how,
    /// and by which device).
    pub(crate) fn set_generation(
        &mut self,
        policy: DevicePolicy,
        own_device: &str,
        generation: u64,
    ) -> Option<(Supersede, String)> {
        self.generation = generation;
        if self.side_by_side {
            return None;
        }
        let same = std::mem::take(&mut self.newest_same_device);
        let other = self.newest_other_device.take();
        if let Some(how) = supersedes(policy, generation, own_device, same, own_device) {
            return Some((how, own_device.to_owned()));
        }
        let (seen, device) = other?;
        let how = supersedes(policy, generation, own_device, seen, &device)?;
        Some((how, device))
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
            tag,
            order: LoginOrder::new(exclusive),
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
            session
                .order
                .set_generation(self.policy, session.device.as_str(), generation)
                .map(|(how, device)| Ending {
                    socket: session.socket.clone(),
                    how,
                    device,
                })
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
                    let how = session.order.on_login(
                        self.policy,
                        session.device.as_str(),
                        generation,
                        device,
                    )?;
                    Some(Ending {
                        socket: session.socket.clone(),
                        how,
                        device: device.to_owned(),
                    })
                })
                .collect()
        };
        end_all(ending);
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

    /// What happens to a session on device "a" whose own login gets `own` when `frames` (login
    /// generation, device) arrive and the generation is learnt after the first `known_after` of
    /// them: the first ending, if any.
    fn run(
        policy: DevicePolicy,
        own: u64,
        frames: &[(u64, &str)],
        known_after: usize,
    ) -> Option<(Supersede, String)> {
        run_order(LoginOrder::default(), policy, own, frames, known_after)
    }

    /// [`run`] for a session whose order starts as `order` (exclusive or side by side).
    fn run_order(
        mut order: LoginOrder,
        policy: DevicePolicy,
        own: u64,
        frames: &[(u64, &str)],
        known_after: usize,
    ) -> Option<(Supersede, String)> {
        let mut endings = Vec::new();
        for (i, (generation, device)) in frames.iter().enumerate() {
            if i == known_after {
                endings.extend(order.set_generation(policy, "a", own));
            }
            let how = order.on_login(policy, "a", *generation, device);
            endings.extend(how.map(|how| (how, device.to_string())));
        }
        if known_after >= frames.len() {
            endings.extend(order.set_generation(policy, "a", own));
        }
        endings.into_iter().next()
    }

    /// Every sequence of up to three login frames (generations 1 to 4, devices "a" and "b").
    fn login_sequences() -> Vec<Vec<(u64, &'static str)>> {
        let choices: Vec<(u64, &str)> = (1..=4)
            .flat_map(|generation| [(generation, "a"), (generation, "b")])
            .collect();
        let mut sequences: Vec<Vec<(u64, &str)>> = vec![vec![]];
        for _ in 0..3 {
            let longer: Vec<_> = sequences
                .iter()
                .filter(|s| s.len() == sequences.last().map_or(0, Vec::len))
                .flat_map(|s| {
                    choices.iter().map(move |c| {
                        let mut s = s.clone();
                        s.push(*c);
                        s
                    })
                })
                .collect();
            sequences.extend(longer);
        }
        assert_eq!(sequences.len(), 1 + 8 + 64 + 512);
        sequences
    }

    /// Every sequence of up to three login frames (generations 1 to 4, devices "a" and "b"),
    /// with the session's own generation (1 to 4) learnt before, between or after them, under
    /// both policies: the session ends if and only if some frame supersedes it, whatever the
    /// order, and the way it ends is one of those frames'.
    #[test]
    fn the_later_login_wins_whatever_the_arrival_order() {
        let sequences = login_sequences();
        let mut ended_runs = 0;
        for policy in [DevicePolicy::Single, DevicePolicy::Multi] {
            for own in 1..=4 {
                for frames in &sequences {
                    let superseding: Vec<(Supersede, String)> = frames
                        .iter()
                        .filter_map(|(g, d)| {
                            supersedes(policy, own, "a", *g, d).map(|how| (how, d.to_string()))
                        })
                        .collect();
                    for known_after in 0..=frames.len() {
                        let got = run(policy, own, frames, known_after);
                        let case =
                            format!("{policy:?}, own {own}, {frames:?}, known after {known_after}");
                        match &got {
                            None => assert!(superseding.is_empty(), "{case}: not ended"),
                            Some(ending) => {
                                ended_runs += 1;
                                assert!(superseding.contains(ending), "{case}: ended by {ending:?}")
                            }
                        }
                        if known_after == 0 {
                            // Known from the start: the first superseding frame ends it.
                            assert_eq!(got.as_ref(), superseding.first(), "{case}");
                        }
                    }
                }
            }
        }
        assert!(ended_runs > 1000, "only {ended_runs} runs ended a session");
    }

    /// A session logged in side by side (an old client's `user_login`) is never ended, by any
    /// sequence of logins in any arrival order, under either policy, even by its own device.
    #[test]
    fn a_session_side_by_side_is_never_ended() {
        for policy in [DevicePolicy::Single, DevicePolicy::Multi] {
            for own in 1..=4 {
                for frames in &login_sequences() {
                    for known_after in 0..=frames.len() {
                        let got =
                            run_order(LoginOrder::new(false), policy, own, frames, known_after);
                        assert_eq!(
                            got, None,
                            "{policy:?}, own {own}, {frames:?}, known after {known_after}"
                        );
                    }
                }
            }
        }
        // The same runs with an exclusive order do end sessions: the loop above could fail.
        assert_eq!(
            run_order(
                LoginOrder::new(true),
                DevicePolicy::Single,
                1,
                &[(2, "b")],
                0
            ),
            Some((Supersede::LoggedOut, "b".to_owned()))
        );
    }

    /// Mentioned in the module doc: two devices log in at once; the later one's frame may arrive
    /// on a worker before the earlier session learnt its own generation.
    #[test]
    fn an_early_frame_of_a_later_login_ends_the_session_once_its_generation_is_known() {
        let mut order = LoginOrder::default();
        assert_eq!(order.on_login(DevicePolicy::Single, "a", 8, "b"), None);
        assert_eq!(
            order.on_login(DevicePolicy::Single, "a", 7, "a"),
            None,
            "its own frame"
        );
        assert_eq!(
            order.set_generation(DevicePolicy::Single, "a", 7),
            Some((Supersede::LoggedOut, "b".to_owned()))
        );
        // Remembered logins are spent: a later frame is judged on its own.
        assert_eq!(order.on_login(DevicePolicy::Single, "a", 6, "b"), None);
        assert_eq!(
            order.on_login(DevicePolicy::Single, "a", 9, "a"),
            Some(Supersede::Replaced)
        );
    }
}
