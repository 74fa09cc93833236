//! The web UI the master serves on its HTTP port: `/` and `/ui/...`.
//!
//! Pages are HTML rendered here (`maud`, every value escaped), readable
//! with scripts off; one small script of our own refreshes a page's
//! `<main>` in place and follows a running task's output. Nothing is read
//! from `/state`: task tables come from [`Core::task_page`], which copies
//! one page only, and everything else goes through the same services the
//! gRPC port serves ([`OperatorService`], [`JobsService`]) as the viewer's
//! principal, so a page sees and changes exactly what that principal's
//! gRPC calls would, and every change is audited the same way.
//!
//! [`Core::task_page`]: crate::core::Core::task_page

mod actions;
mod api;
pub mod history;
mod html;
mod pages;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tonic::Code;

use super::connections::GatedListener;
use super::handle::ActorHandle;
use super::jobs::JobsService;
use super::operator::OperatorService;
use super::tls_listener::TlsListener;
use super::trust::Caller;
use history::History;
use session::{NoViewer, Sessions, Viewer};

/// What every handler of the UI shares.
pub struct Ui {
    pub actor: ActorHandle,
    pub operator: Arc<OperatorService>,
    pub jobs: Arc<JobsService>,
    pub sessions: Sessions,
    pub history: Arc<History>,
}

type Shared = State<Arc<Ui>>;

/// The Content-Security-Policy of every response: our own script and
/// stylesheet only, nothing inline, no frames, forms post only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/ui", get(|| async { Redirect::to("/") }))
        .route("/ui/login", get(actions::login_page).post(actions::log_in))
        .route("/ui/logout", post(actions::log_out))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/{change}", post(actions::job_change))
        .route("/ui/tasks", get(pages::tasks))
        .route("/ui/tasks/{id}", get(pages::task))
        .route("/ui/tasks/{id}/files", get(pages::files))
        .route("/ui/tasks/{id}/file", get(api::file))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/agents/{id}/{change}", post(actions::agent_change))
        .route("/ui/roles", get(pages::roles))
        .route("/ui/roles/{name}", post(actions::role_change))
        .route("/ui/usage", get(pages::usage))
        .route("/ui/api/overview", get(api::overview))
        .route("/ui/api/tasks", get(api::tasks))
        .route("/ui/api/tasks/{id}/log", get(api::log))
        .route("/ui/assets/ui.css", get(css))
        .route("/ui/assets/ui.js", get(js))
        .layer(middleware::from_fn_with_state(ui.clone(), known_host))
        .layer(middleware::from_fn(secure_headers))
        .with_state(ui)
}

/// On a master without logins (`wasmos local`), pages are only served to
/// requests addressed to an IP address or `localhost`: a site that points
/// its own name at 127.0.0.1 (DNS rebinding) must not get a page, and with
/// it the CSRF token that allows changes.
async fn known_host(State(ui): Shared, request: Request, next: Next) -> Response {
    if !ui.sessions.needs_login() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !is_address(host) {
            let message = format!(
                "this master serves its UI at its address (e.g. http://127.0.0.1:PORT/), not at `{host}`\n"
            );
            return (StatusCode::MISDIRECTED_REQUEST, message).into_response();
        }
    }
    next.run(request).await
}

/// True for `127.0.0.1:5051`, `[::1]:5051`, `localhost:5051` and the like.
fn is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Headers every answer carries: what the browser may run, and that it
/// must not guess content types or frame the page.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css", include_str!("assets/ui.css"))
}

async fn js() -> Response {
    asset("text/javascript", include_str!("assets/ui.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Why a request has no viewer, answered as it asks: a page goes to the
/// login page, a JSON call gets 401, a change without the session's CSRF
/// token 403.
pub enum Refused {
    Page(NoViewer),
    Api(NoViewer),
    Forged,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Page(NoViewer::LogIn) => Redirect::to("/ui/login").into_response(),
            Refused::Page(NoViewer::Ended(why)) => {
                Redirect::to(&format!("/ui/login?ended={}", html::encode(&why))).into_response()
            }
            Refused::Api(no) => {
                let why = match no {
                    NoViewer::LogIn => "log in at /ui/login".to_string(),
                    NoViewer::Ended(why) => why,
                };
                let body = axum::Json(serde_json::json!({ "error": why }));
                (StatusCode::UNAUTHORIZED, body).into_response()
            }
            Refused::Forged => (
                StatusCode::FORBIDDEN,
                "refused: the form's CSRF token is missing or not this session's; \
                 reload the page and try again\n",
            )
                .into_response(),
        }
    }
}

/// The viewer of a page.
fn page_viewer(ui: &Ui, headers: &HeaderMap) -> Result<Viewer, Refused> {
    ui.sessions.viewer(headers).map_err(Refused::Page)
}

/// The viewer of a JSON call.
fn api_viewer(ui: &Ui, headers: &HeaderMap) -> Result<Viewer, Refused> {
    ui.sessions.viewer(headers).map_err(Refused::Api)
}

/// A service call made as `viewer`, as the gRPC gate would hand it over.
fn as_viewer<T>(viewer: &Viewer, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .extensions_mut()
        .insert(Caller::Principal(viewer.who.clone()));
    request
}

/// The HTTP status a service's refusal reads as.
fn http_status(status: &tonic::Status) -> StatusCode {
    match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A page that says why a request failed.
fn error_page(viewer: Option<&Viewer>, status: &tonic::Status) -> Response {
    let body = maud::html! { p.error { (status.message()) } };
    (
        http_status(status),
        html::page("Cannot do that", viewer, 0, body),
    )
        .into_response()
}

/// The address a request came from (for the audit of a refused login):
/// what `ConnectInfo` hands over from the master's own listeners.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, GatedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GatedListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Starts the sampler the overview's chart reads.
pub fn spawn_sampler(actor: ActorHandle, history: Arc<History>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(history::EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            history.sample(&actor).await;
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_addresses_and_localhost_are_known_hosts() {
        for host in [
            "127.0.0.1:5051",
            "127.0.0.1",
            "[::1]:5051",
            "localhost:80",
            "10.0.0.7:5051",
        ] {
            assert!(super::is_address(host), "{host}");
        }
        for host in [
            "evil.example:5051",
            "evil.example",
            "",
            "127.0.0.1.nip.io:5051",
        ] {
            assert!(!super::is_address(host), "{host}");
        }
    }
}
