//! The push HTTP API: `POST /api/push`, `POST /api/broadcast`, the old `POST /api`, and its
//! OpenAPI description at `GET /api/openapi.yaml`. Described in `docs/openapi.yaml`.
//!
//! Every request is checked in the same order, and nothing happens before all checks pass: API
//! enabled (503), key (401), body size (413), JSON (400), fields (400); then Redis (503 if away).

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chat_protocol::{
    ClientMsgId, Limits, ProtocolError,
    push::{
        ApiError, ApiErrorBody, BroadcastRequest, BroadcastResponse, LEGACY_EVENT, LegacyMessage,
        LegacyPushRequest, NotificationFields, PushRequest, parse_event_name, parse_users,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{Push, Pusher};
use crate::{auth::bearer_matches, people::inbox::InboxError, unix_millis};

const OPENAPI_YAML: &str = include_str!("../../../../docs/openapi.yaml");

pub struct ApiState {
    /// `None`: no key configured, the API is off.
    pub key: Option<Vec<u8>>,
    /// `None`: the worker runs without Redis.
    pub pusher: Option<Pusher>,
    pub limits: Limits,
    pub max_body: usize,
}

pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/push", post(push))
        .route("/api/broadcast", post(broadcast))
        .route("/api", post(legacy_push))
        .route("/api/openapi.yaml", get(openapi))
        .with_state(state)
}

/// A refused or failed API request.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<ProtocolError> for Refusal {
    fn from(err: ProtocolError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, err.code.as_str(), err.message)
    }
}

/// A push that Redis did not (or did not durably) confirm. Whether it had an effect is unknown
/// (a script may run after the worker stopped waiting for it), and the answer says so.
fn unconfirmed(err: &InboxError, idempotency_key: Option<&str>) -> Refusal {
    tracing::warn!(cause = %err, "push not confirmed");
    let retry = if idempotency_key.is_some() {
        "retry with the same Idempotency-Key: a retry delivers and stores nothing twice"
    } else {
        "send an Idempotency-Key header and retry with the same one, so that a retry delivers and stores nothing twice"
    };
    let what = match err {
        InboxError::Store(crate::store::StoreError::NotReplicated { timeout_ms }) => format!(
            "the notification was stored, but no Redis replica confirmed it within {timeout_ms} ms, so a failover could lose it"
        ),
        _ => "Redis did not answer in time, so the notification may or may not have been delivered or stored".to_owned(),
    };
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what}; {retry}"),
    )
}

/// The request's `Idempotency-Key` header, if any: a retry with the same key does nothing
/// twice per user. Same alphabet and length as a `clientMsgId`.
fn idempotency_key(headers: &HeaderMap, limits: &Limits) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .and_then(|text| ClientMsgId::parse(text, limits).ok());
    key.map(|key| Some(key.as_str().to_owned())).ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!(
                "the Idempotency-Key header must be 1 to {} characters of A-Za-z0-9_-.:@",
                limits.max_user_id_len
            ),
        )
    })
}

/// Why a body is not a request, in our words (serde_json's own messages are its API, not ours):
/// where it went wrong, and what kind of wrong.
fn unreadable_body(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let (line, column) = (err.line(), err.column());
    match err.classify() {
        Category::Syntax => {
            format!("the body is not JSON: syntax error at line {line}, column {column}")
        }
        Category::Eof => format!("the body ends too early, at line {line}, column {column}"),
        Category::Data | Category::Io => format!(
            "the body is JSON but not a request of this endpoint (docs/openapi.yaml): a field \
             is missing or has the wrong type, near line {line}, column {column}"
        ),
    }
}

/// Whether `E` is among the causes of `err`.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current.is::<E>() {
            return true;
        }
        cause = current.source();
    }
    false
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.status, code = self.code, reason = %self.message, "api request refused");
        let body = ApiError {
            ok: false,
            error: ApiErrorBody {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, json(&body)).into_response()
    }
}

fn json<T: Serialize>(value: &T) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(value).unwrap_or_default(),
    )
}

/// The checks every request passes before it may have an effect.
async fn admit<'a, T: DeserializeOwned>(
    state: &'a ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(T, &'a Pusher), Refusal> {
    let key = state.key.as_deref().ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "disabled",
            "the push API is off: set CHAT_API_KEY or --api-key-file",
        )
    })?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if !bearer_matches(authorization, key) {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send Authorization: Bearer <key>",
        ));
    }
    let bytes = to_bytes(body, state.max_body).await.map_err(|err| {
        if caused_by::<crate::edge::body::BodyTimeout>(&err) {
            return Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time (see --body-read-timeout-ms)",
            );
        }
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", state.max_body),
        )
    })?;
    let request = serde_json::from_slice(&bytes).map_err(|err| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            unreadable_body(&err),
        )
    })?;
    let pusher = state.pusher.as_ref().ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this worker runs without Redis",
        )
    })?;
    Ok((request, pusher))
}

async fn push(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, Refusal> {
    let (request, pusher): (PushRequest, _) = admit(&state, &headers, body).await?;
    let idempotency_key = idempotency_key(&headers, &state.limits)?;
    let users = parse_users(request.users, "users", &state.limits)?;
    let event = parse_event_name(request.event.as_deref())?;
    let body = NotificationFields {
        category: request.category,
        data: &request.data,
        ts: unix_millis(),
    }
    .body();
    let counts = pusher
        .push(Push {
            users: &users,
            event,
            body: &body,
            store: request.store,
            remove_on_ack: false,
            idempotency_key: idempotency_key.as_deref(),
        })
        .await
        .map_err(|err| unconfirmed(&err, idempotency_key.as_deref()))?;
    Ok(json(&counts))
}

async fn broadcast(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, Refusal> {
    let (request, pusher): (BroadcastRequest, _) = admit(&state, &headers, body).await?;
    let room = request.room(&state.limits)?;
    let body = NotificationFields {
        category: request.category,
        data: &request.data,
        ts: unix_millis(),
    }
    .body();
    let workers = pusher
        .broadcast(room.as_ref(), &body)
        .await
        .map_err(|err| unconfirmed(&err, None))?;
    Ok(json(&BroadcastResponse { ok: true, workers }))
}

/// The old API: `{tokens, data, entityType?}` delivers `receive_message {entityType?, data}`,
/// both values as they came (any JSON: the old example sends a string), to the user of each
/// token's id and to the sockets that gave the token as `tokenId` at `user_login`.
async fn legacy_push(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, Refusal> {
    let (request, pusher): (LegacyPushRequest, _) = admit(&state, &headers, body).await?;
    let idempotency_key = idempotency_key(&headers, &state.limits)?;
    let tokens = parse_users(request.tokens, "tokens", &state.limits)?;
    let body = LegacyMessage {
        entity_type: request.entity_type.as_deref(),
        data: &request.data,
    }
    .body();
    let counts = pusher
        .push_to_tokens(&tokens, LEGACY_EVENT, &body, idempotency_key.as_deref())
        .await
        .map_err(|err| unconfirmed(&err, idempotency_key.as_deref()))?;
    Ok(json(&counts))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}
