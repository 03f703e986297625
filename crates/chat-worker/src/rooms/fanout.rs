//! Announcements from backends (`POST /api/broadcast`, through the broadcast channel): to every
//! local socket, or to the local members of one room. Room messages are fanned out by
//! [`super::Rooms::say`] and [`super::Rooms::on_frame`], which add offsets.

use super::Rooms;
use crate::payload::Encoded;

impl Rooms {
    /// Emits an announcement from the broadcast channel to every local socket, or to the local
    /// members of its room (both kinds: with and without offsets; announcements carry none).
    pub async fn announce(&self, frame: &str) {
        let announcement: crate::push::Announcement<'_> = match serde_json::from_str(frame) {
            Ok(announcement) => announcement,
            Err(err) => {
                tracing::warn!(cause = %err, "dropping a bad announcement");
                return;
            }
        };
        let sent = match announcement.room {
            Some(room) => {
                self.io()
                    .to([Self::room_name(room, true), Self::room_name(room, false)])
                    .emit(announcement.event, &Encoded(announcement.payload))
                    .await
            }
            None => {
                self.io()
                    .emit(announcement.event, &Encoded(announcement.payload))
                    .await
            }
        };
        if let Err(err) = sent {
            tracing::debug!(cause = %err, "announcement skipped some sockets");
        }
    }
}
