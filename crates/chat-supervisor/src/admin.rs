//! The supervisor's HTTP endpoint for operators: `GET /status`.

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use chat_protocol::status::StatusResponse;

use crate::state::ClusterState;

pub fn routes(state: Arc<ClusterState>) -> Router {
    Router::new().route(
        "/status",
        get(move || {
            let state = Arc::clone(&state);
            async move { Json::<StatusResponse>(state.status()) }
        }),
    )
}
