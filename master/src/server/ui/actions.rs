//! What a page changes: logging in and out, a role's weight and quota, an
//! agent's drain, a job's cancel, hold and release. Every change needs the
//! session's CSRF token and goes through the gRPC services' own calls as
//! the viewer, so the same rules refuse it and the same audit records it.

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_server::Jobs;
use wasmos_proto::v1::operator_server::Operator;

use super::session::{self, Viewer};
use super::{Refused, Shared, Ui, as_viewer, error_page, html, page_viewer};
use crate::resources::Resources;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginQuery {
    /// Why the last session ended, if it did.
    pub ended: String,
}

pub async fn login_page(State(ui): Shared, Query(asked): Query<LoginQuery>) -> Response {
    if !ui.sessions.needs_login() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, &asked.ended)
}

fn login_form(status: StatusCode, message: &str) -> Response {
    let body = html! {
        @if !message.is_empty() { p.error { (message) } }
        form.login method="post" action="/ui/login" {
            label {
                "Token "
                input type="password" name="token" autocomplete="off" required autofocus;
            }
            button type="submit" { "Log in" }
        }
        p.hint {
            "Any token the master issued: an admin's (in the master's work directory as "
            code { "admin.token" } "), or one from " code { "wasmos token create" } ". "
            "The page keeps it on the master, never in the browser."
        }
    };
    (status, html::page("Log in", None, 0, body)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn log_in(
    State(ui): Shared,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    match ui.sessions.log_in(&form.token) {
        Ok((id, who)) => {
            tracing::info!("{} logged in to the web UI from {peer}", who.describe());
            (
                [(header::SET_COOKIE, session::set_cookie(&id))],
                Redirect::to("/"),
            )
                .into_response()
        }
        Err(status) => {
            // Refused like a bad credential on the gRPC port: audited, and
            // throttled per source address.
            let status = ui
                .operator
                .audit
                .refused_credential(status, Some(peer.ip()));
            login_form(super::http_status(&status), status.message())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Csrf {
    csrf: String,
}

pub async fn log_out(
    State(ui): Shared,
    headers: HeaderMap,
    form: Result<Form<Csrf>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return Refused::Forged.into_response();
    };
    if !ui.sessions.csrf_matches(&headers, form.csrf()) {
        return Refused::Forged.into_response();
    }
    ui.sessions.log_out(&headers);
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// A form that carries the session's CSRF token.
trait CarriesCsrf {
    fn csrf(&self) -> &str;
}

impl CarriesCsrf for Csrf {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CarriesCsrf for RoleForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The viewer of a change and its form, once the form's CSRF token is
/// checked (a body that is no form has none).
fn changer<T: CarriesCsrf>(
    ui: &Ui,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<(Viewer, T), Refused> {
    let Ok(Form(form)) = form else {
        return Err(Refused::Forged);
    };
    let viewer = page_viewer(ui, headers)?;
    if !ui.sessions.csrf_matches(headers, form.csrf()) {
        return Err(Refused::Forged);
    }
    Ok((viewer, form))
}

/// Back to the page the change was made on, or the reason it failed.
fn done(viewer: &Viewer, result: Result<(), tonic::Status>, back: &str) -> Response {
    match result {
        Ok(()) => Redirect::to(back).into_response(),
        Err(status) => error_page(Some(viewer), &status),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoleForm {
    csrf: String,
    weight: String,
    quota: String,
}

pub async fn role_change(
    State(ui): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<RoleForm>, FormRejection>,
) -> Response {
    let (viewer, form) = match changer(&ui, &headers, form) {
        Ok(changer) => changer,
        Err(refused) => return refused.into_response(),
    };
    let result = async {
        let weight = match form.weight.trim() {
            "" => None,
            w => Some(w.parse::<f64>().map_err(|_| {
                tonic::Status::invalid_argument(format!("weight `{w}` is not a number"))
            })?),
        };
        let quota = match form.quota.trim() {
            "" => None,
            q => {
                Some(v1::Resources::from(&Resources::parse(q).map_err(|e| {
                    tonic::Status::invalid_argument(e.to_string())
                })?))
            }
        };
        let request = v1::UpdateRoleRequest {
            role: name,
            weight,
            quota,
        };
        ui.operator
            .update_role(as_viewer(&viewer, request))
            .await
            .map(drop)
    }
    .await;
    done(&viewer, result, "/ui/roles")
}

pub async fn agent_change(
    State(ui): Shared,
    headers: HeaderMap,
    Path((id, change)): Path<(String, String)>,
    form: Result<Form<Csrf>, FormRejection>,
) -> Response {
    let (viewer, _) = match changer(&ui, &headers, form) {
        Ok(changer) => changer,
        Err(refused) => return refused.into_response(),
    };
    let result = match change.as_str() {
        "drain" => ui
            .operator
            .drain_agent(as_viewer(&viewer, v1::DrainAgentRequest { agent_id: id }))
            .await
            .map(drop),
        "undrain" => ui
            .operator
            .undrain_agent(as_viewer(&viewer, v1::UndrainAgentRequest { agent_id: id }))
            .await
            .map(drop),
        other => Err(tonic::Status::not_found(format!(
            "an agent has no change `{other}`: drain or undrain"
        ))),
    };
    done(&viewer, result, "/ui/agents")
}

pub async fn job_change(
    State(ui): Shared,
    headers: HeaderMap,
    Path((id, change)): Path<(String, String)>,
    form: Result<Form<Csrf>, FormRejection>,
) -> Response {
    let (viewer, _) = match changer(&ui, &headers, form) {
        Ok(changer) => changer,
        Err(refused) => return refused.into_response(),
    };
    let back = format!("/ui/jobs/{}", html::encode(&id));
    let request = as_viewer(
        &viewer,
        v1::JobRequest {
            job_id: id,
            detail: false,
        },
    );
    let result = match change.as_str() {
        "cancel" => ui.jobs.cancel(request).await.map(drop),
        "hold" => ui.jobs.hold(request).await.map(drop),
        "release" => ui.jobs.release(request).await.map(drop),
        other => Err(tonic::Status::not_found(format!(
            "a job has no change `{other}`: cancel, hold or release"
        ))),
    };
    done(&viewer, result, &back)
}
