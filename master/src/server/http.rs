//! The master's HTTP port: `/health`, `/state` (JSON), `/metrics`
//! (Prometheus text).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::handle::ActorHandle;
use super::masters::Masters;
use super::trust::Trust;

/// What the HTTP port reads: the actor's state, and the masters.
#[derive(Clone)]
pub struct HttpState {
    pub actor: ActorHandle,
    pub masters: Masters,
}

/// `/health` is open; `/state` and `/metrics` need an admin or read-only
/// token on a TLS master (`trust`), as the Operator's lists do, except
/// `/metrics` when `metrics_public` (allowed on loopback addresses only).
pub fn router(state: HttpState, trust: Option<Arc<Trust>>, metrics_public: bool) -> Router {
    let guard = move |trust: Option<Arc<Trust>>| {
        middleware::from_fn(move |request: Request, next: Next| {
            let trust = trust.clone();
            async move {
                if let Some(trust) = trust {
                    let header = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    match trust.principal(header) {
                        Ok(who) if who.sees_all() => {}
                        Ok(who) => {
                            let message = format!(
                                "this page needs an admin or read-only token; {} is neither\n",
                                who.describe()
                            );
                            return (StatusCode::FORBIDDEN, message).into_response();
                        }
                        Err(status) => {
                            let message = if header.is_empty() {
                                "this page needs an admin or read-only token: Authorization: Bearer <token>"
                            } else {
                                status.message()
                            };
                            return (StatusCode::UNAUTHORIZED, format!("{message}\n"))
                                .into_response();
                        }
                    }
                }
                next.run(request).await
            }
        })
    };
    let state_page = Router::new()
        .route("/state", get(state_page))
        .route_layer(guard(trust.clone()));
    let metrics = Router::new().route("/metrics", get(metrics));
    let metrics = if metrics_public {
        metrics
    } else {
        metrics.route_layer(guard(trust))
    };
    Router::new()
        .route("/health", get(health))
        .merge(state_page)
        .merge(metrics)
        .with_state(state)
}

async fn health(State(state): State<HttpState>) -> Response {
    match state.actor.query(|_, _| ()).await {
        Ok(()) => "ok\n".into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn state_page(State(http): State<HttpState>) -> Response {
    let state = http
        .actor
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
                        "principal": t.owner,
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
        Ok(mut state) => {
            state["masters"] = http.masters.json().await;
            axum::Json(state).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state
        .actor
        .query(|core, metrics| metrics.render(core))
        .await
    {
        Ok(mut text) => {
            state.masters.render_metrics(&mut text);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
