//! The supervisor's HTTP endpoint for operators: `GET /status`, served so that no client can
//! exhaust the supervisor: at most `--admin-max-connections` connections at once (more wait in
//! the kernel's backlog, holding no descriptor of the supervisor's, which it needs to respawn
//! workers), and the workers' header and body timeouts.

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use chat_protocol::status::StatusResponse;

use crate::{config::SupervisorSettings, state::ClusterState};

/// Serves `app` on the admin listener until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, settings: &SupervisorSettings) {
    let edge = &settings.worker.edge;
    let options = chat_worker::edge::serve::ServeOptions {
        header_read_timeout: edge.header_read_timeout(),
        body_read_timeout: edge.body_read_timeout(),
        max_header_bytes: edge.max_header_bytes,
        write_stall_timeout: settings.worker.write_stall_timeout(),
        max_connections: Some(settings.admin_max_connections),
        clients: None,
    };
    chat_worker::edge::serve::serve(listener, app, options, std::future::pending()).await;
}

pub fn routes(state: Arc<ClusterState>) -> Router {
    Router::new().route(
        "/status",
        get(move || {
            let state = Arc::clone(&state);
            async move { Json::<StatusResponse>(state.status()) }
        }),
    )
}
