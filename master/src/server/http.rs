//! The master's HTTP port: `/health`, `/state` (JSON), `/metrics`
//! (Prometheus text).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::handle::ActorHandle;

pub fn router(actor: ActorHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/state", get(state))
        .route("/metrics", get(metrics))
        .with_state(actor)
}

async fn health(State(actor): State<ActorHandle>) -> Response {
    match actor.query(|_, _| ()).await {
        Ok(()) => "ok\n".into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn state(State(actor): State<ActorHandle>) -> Response {
    let state = actor
        .query(|core, _| {
            let tasks: Vec<_> = core
                .tasks()
                .into_iter()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "framework": t.framework,
                        "agent": t.agent,
                        "state": format!("{:?}", t.state()).to_uppercase(),
                        "reason": format!("{:?}", t.status.reason()),
                        "resources": t.resources,
                    })
                })
                .collect();
            json!({
                "agents": core.agents(),
                "frameworks": core.frameworks(),
                "roles": core.allocator().roles(),
                "tasks": tasks,
            })
        })
        .await;
    match state {
        Ok(state) => axum::Json(state).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn metrics(State(actor): State<ActorHandle>) -> Response {
    match actor.query(|core, metrics| metrics.render(core)).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
