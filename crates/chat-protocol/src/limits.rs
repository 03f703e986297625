//! Size limits on client input, shared by validation and by the worker's configuration.

/// Caps applied to every client-provided string. Lengths are counted in Unicode scalar values
/// (what a user perceives as characters), except the room id, which is ASCII only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted room id, in bytes (room ids are ASCII).
    pub max_room_id_len: usize,
    /// Longest accepted user name, in characters.
    pub max_username_chars: usize,
    /// Longest accepted chat text, in characters.
    pub max_text_chars: usize,
    /// Longest accepted user id, device id or client message id, in bytes (they are ASCII).
    pub max_user_id_len: usize,
    /// Largest free-form object an old client may send (a `chat` of the old chat app, a
    /// `todo`), as JSON, in bytes (see [`crate::freeform`]).
    pub max_object_bytes: usize,
}

impl Limits {
    pub const DEFAULT_MAX_ROOM_ID_LEN: usize = 64;
    pub const DEFAULT_MAX_USERNAME_CHARS: usize = 32;
    pub const DEFAULT_MAX_TEXT_CHARS: usize = 2000;
    pub const DEFAULT_MAX_USER_ID_LEN: usize = 64;
    pub const DEFAULT_MAX_OBJECT_BYTES: usize = 8192;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_room_id_len: Self::DEFAULT_MAX_ROOM_ID_LEN,
            max_username_chars: Self::DEFAULT_MAX_USERNAME_CHARS,
            max_text_chars: Self::DEFAULT_MAX_TEXT_CHARS,
            max_user_id_len: Self::DEFAULT_MAX_USER_ID_LEN,
            max_object_bytes: Self::DEFAULT_MAX_OBJECT_BYTES,
        }
    }
}
