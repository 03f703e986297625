//! Moderation: in `--moderation` mode a direct message goes to the filter channel instead of an
//! inbox, and is stored and delivered only when the filter hands it back on the return channel
//! (the old `chat_filter_channel` → `snschat` loop). What comes back is checked like client
//! input: the filter is a backend, but a broken one must not put bad data in inboxes.

use chat_protocol::{
    ChatText, ClientMsgId, ErrorCode, FreeForm, Limits, ProtocolError, UserId,
    dialects::ChatAppMessage,
    people::{DirectMessageFields, ModerationItem, free_form_body},
};

/// What an approved message says: a text, or an old chat app's own fields.
#[derive(Debug)]
pub enum Content {
    Text(ChatText),
    Fields(FreeForm),
}

/// A message the filter approved, validated.
#[derive(Debug)]
pub struct Approved {
    pub from: UserId,
    pub to: UserId,
    pub content: Content,
    pub ts: u64,
    pub client_msg_id: Option<ClientMsgId>,
    /// Marks the message as stored, so that of all workers receiving it only one stores it:
    /// the sender's `clientMsgId` if given, else `m:<moderation id>`.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("not a moderation item: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("invalid field: {0}")]
    Field(#[from] ProtocolError),
}

impl Approved {
    /// The message body to store (see [`chat_protocol::people`]).
    pub fn body(&self) -> String {
        let client_msg_id = self.client_msg_id.as_ref().map(ClientMsgId::as_str);
        match &self.content {
            Content::Text(text) => DirectMessageFields {
                from: self.from.as_str(),
                to: self.to.as_str(),
                text: text.as_str(),
                ts: self.ts,
                client_msg_id,
            }
            .body(),
            Content::Fields(fields) => free_form_body(
                self.from.as_str(),
                self.to.as_str(),
                self.ts,
                client_msg_id,
                fields,
            ),
        }
    }
}

/// Parses and checks an item the filter handed back.
pub fn approved(json: &str, limits: &Limits) -> Result<Approved, ModerationError> {
    let item: ModerationItem = serde_json::from_str(json)?;
    let client_msg_id = item
        .client_msg_id
        .as_deref()
        .map(|id| ClientMsgId::parse(id, limits))
        .transpose()?;
    let token = match &client_msg_id {
        Some(id) => id.as_str().to_owned(),
        None => format!("m:{}", ClientMsgId::parse(&item.mid, limits)?),
    };
    let content = match item.text {
        Some(text) => Content::Text(ChatText::parse(text, limits)?),
        None => {
            let fields = FreeForm::parse(
                serde_json::Value::Object(item.fields),
                "moderated message",
                &ChatAppMessage::SERVER_OWNED,
                limits,
            )?;
            if fields.is_empty() {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidPayload,
                    "a moderated message needs a text or fields of its own",
                )
                .into());
            }
            Content::Fields(fields)
        }
    };
    Ok(Approved {
        from: UserId::parse(&item.from, limits)?,
        to: UserId::parse(&item.to, limits)?,
        content,
        ts: item.ts,
        client_msg_id,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approved_items_are_validated() {
        let limits = Limits::default();
        let ok = approved(
            r#"{"mid":"00ab-m1","from":"ann","to":"bob","text":"hi","ts":5}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(ok.token, "m:00ab-m1");
        assert_eq!(ok.body(), r#""from":"ann","to":"bob","text":"hi","ts":5}"#);
        let old_app = approved(
            r#"{"mid":"x","from":"ann","to":"bob","ts":5,"content":"hi","type":2}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(
            old_app.body(),
            r#""from":"ann","to":"bob","ts":5,"content":"hi","type":2}"#
        );
        assert!(approved(r#"{"mid":"x","from":"ann","to":"bob","ts":5}"#, &limits).is_err());
        let with_id = approved(
            r#"{"mid":"x","from":"ann","to":"bob","text":"hi","ts":5,"clientMsgId":"c1"}"#,
            &limits,
        )
        .unwrap();
        assert_eq!(with_id.token, "c1");
        assert!(
            approved(
                r#"{"mid":"x","from":"a b","to":"bob","text":"hi","ts":5}"#,
                &limits
            )
            .is_err()
        );
        assert!(
            approved(
                r#"{"mid":"x","from":"ann","to":"bob","text":"","ts":5}"#,
                &limits
            )
            .is_err()
        );
        assert!(approved("[]", &limits).is_err());
    }
}
