//! The live lab's web side: the page, the WebSocket, snapshot downloads and uploads.
//!
//! Loopback by default; with `--token` every route needs `?token=`. The WebSocket refuses a
//! browser page from another origin (403), caps the size of what a client sends, and answers a
//! bad command with an `error` message while the connection and the simulation go on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::messages::Outgoing;
use super::protocol::{check_name, Command, MAX_CLIENT_MESSAGE};
use super::{Hub, Listening, Reply, Request};
use crate::backend::DeviceReport;
use crate::error::{Error, Result};
use crate::interrupt::Interruption;

/// The largest upload (a state file).
const MAX_UPLOAD: usize = 64 << 20;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

type Params = Query<HashMap<String, String>>;

/// Serves `hub` until a signal; returns the signal.
pub(super) fn run(
    hub: Arc<Hub>,
    device: &DeviceReport,
    on_listening: &dyn Fn(&Listening),
) -> Result<Option<Interruption>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| Error::InvalidRun(format!("cannot start the server's runtime: {error}")))?;
    runtime.block_on(async move {
        let bind = hub.options.bind;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|error| Error::InvalidRun(format!("cannot listen on {bind}: {error}")))?;
        let address =
            listener.local_addr().map_err(|error| Error::InvalidRun(format!("no local address: {error}")))?;
        let token =
            hub.options.token.as_ref().map(|token| format!("/?token={token}")).unwrap_or_else(|| "/".into());
        on_listening(&Listening { address, url: format!("http://{address}{token}"), device: device.clone() });
        let app = router(hub.clone());
        let stop_hub = hub.clone();
        let stopped = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if crate::interrupt::pending().is_some() || stop_hub.shutdown.load(Ordering::Relaxed) {
                    break;
                }
            }
        };
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|error| Error::InvalidRun(format!("the server failed: {error}")))?;
        Ok(crate::interrupt::pending().map(|signal| Interruption { signal, step: 0, of: 0 }))
    })
}

fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }))
        .route("/ws", get(websocket))
        .route("/status", get(status))
        .route("/snapshots", axum::routing::post(upload))
        .route("/snapshots/{file}", get(download))
        .route("/runs/{run}/frame.png", get(run_frame))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(hub)
}

/// Whether the request carries the token (or none is needed).
fn authorized(hub: &Hub, params: &HashMap<String, String>) -> bool {
    match &hub.options.token {
        None => true,
        Some(token) => {
            params.get("token").is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
        }
    }
}

/// Compares without stopping at the first difference, so timing says nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({"error": message}).to_string())
        .into_response()
}

/// The newest status, for monitoring without connecting (a connection makes frames).
async fn status(State(hub): State<Arc<Hub>>, Query(params): Params) -> Response {
    if !authorized(&hub, &params) {
        return refuse(StatusCode::UNAUTHORIZED, "this lab needs its token");
    }
    ([(header::CONTENT_TYPE, "application/json")], hub.status_text()).into_response()
}

async fn index(State(hub): State<Arc<Hub>>, Query(params): Params) -> Response {
    if !authorized(&hub, &params) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this lab needs its token: open the URL atheria serve printed",
        );
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// Whether a browser's `Origin` names the host it was served from (no header: not a browser).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

async fn websocket(
    State(hub): State<Arc<Hub>>,
    Query(params): Params,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "a page from another origin may not drive this lab");
    }
    if !authorized(&hub, &params) {
        return refuse(StatusCode::UNAUTHORIZED, "this lab needs its token");
    }
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| client(socket, hub))
}

/// The most commands of one client waiting for their answers; more are answered `busy` at once,
/// so that every command gets exactly one reply however fast a client sends.
const MAX_IN_FLIGHT: usize = 256;

fn error_message(command: Option<&str>, error: &str) -> Message {
    Message::Text(Outgoing::error(command, error).text().into())
}

/// One client: its commands to the simulation, the newest frame and status to it, its replies
/// and the notices for every client.
async fn client(mut socket: WebSocket, hub: Arc<Hub>) {
    hub.clients.fetch_add(1, Ordering::Relaxed);
    // Room for every answer in flight and the notices of one recording: the simulation never
    // finds it full.
    let (reply, mut replies) = tokio::sync::mpsc::channel::<Reply>(MAX_IN_FLIGHT + 8);
    let mut in_flight = 0usize;
    let mut frames = hub.frames.clone();
    let mut status = hub.status.clone();
    let mut notices = hub.notices.subscribe();
    // Whether the simulation still publishes: once it has stopped, the client stays connected
    // and is told so (the notice, the status), rather than being hung up on.
    let (mut frames_live, mut status_live) = (true, true);
    status.borrow_and_update();
    let greeting = [hub.hello.clone(), hub.status_text()];
    let mut open = true;
    for text in greeting {
        open &= socket.send(Message::Text(text.into())).await.is_ok();
    }
    while open {
        let outgoing = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match Command::parse(&text) {
                    Ok(command) if in_flight >= MAX_IN_FLIGHT => Some(error_message(
                        Some(command.name()),
                        &format!("busy: {MAX_IN_FLIGHT} commands of this client are waiting; send more once they are answered"),
                    )),
                    Ok(command) => {
                        let name = command.name();
                        let request = Request { command, reply: reply.clone() };
                        if hub.requests.send(request).is_err() {
                            Some(error_message(Some(name), "the simulation has stopped"))
                        } else {
                            in_flight += 1;
                            None
                        }
                    }
                    Err(refusal) => Some(error_message(None, &refusal)),
                },
                Some(Ok(Message::Binary(_))) => Some(error_message(None, "commands are JSON text")),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(_)) => {
                    // Too large, or a broken connection: say why if the socket still takes it.
                    let refusal = format!("message refused (the limit is {MAX_CLIENT_MESSAGE} bytes)");
                    let _ = socket.send(error_message(None, &refusal)).await;
                    break;
                }
                Some(Ok(_)) => None,
            },
            Some(message) = replies.recv() => {
                if message.answers_command {
                    in_flight = in_flight.saturating_sub(1);
                }
                Some(Message::Text(message.text.into()))
            }
            notice = notices.recv() => match notice {
                Ok(text) => Some(Message::Text(text.into())),
                Err(_) => None,
            },
            changed = frames.changed(), if frames_live => match changed {
                Ok(()) => frames.borrow_and_update().clone().map(|frame| Message::Binary(Bytes::from(frame.as_ref().clone()))),
                Err(_) => {
                    frames_live = false;
                    None
                }
            },
            changed = status.changed(), if status_live => match changed {
                Ok(()) => {
                    status.borrow_and_update();
                    Some(Message::Text(hub.status_text().into()))
                }
                Err(_) => {
                    status_live = false;
                    Some(Message::Text(hub.status_text().into()))
                }
            },
        };
        if let Some(message) = outgoing {
            open = socket.send(message).await.is_ok();
        }
    }
    hub.clients.fetch_sub(1, Ordering::Relaxed);
}

/// A file of the snapshot directory: a name of letters, digits, `-`, `_` and one extension.
fn snapshot_file(file: &str) -> Option<(&str, &'static str)> {
    let (name, extension) = file.rsplit_once('.')?;
    check_name(name).ok()?;
    match extension {
        "safetensors" => Some((name, "application/octet-stream")),
        "gif" => Some((name, "image/gif")),
        _ => None,
    }
}

async fn download(State(hub): State<Arc<Hub>>, Path(file): Path<String>, Query(params): Params) -> Response {
    if !authorized(&hub, &params) {
        return refuse(StatusCode::UNAUTHORIZED, "this lab needs its token");
    }
    let Some((_, content_type)) = snapshot_file(&file) else {
        return refuse(StatusCode::BAD_REQUEST, "not a snapshot's name");
    };
    match std::fs::read(hub.options.snapshots.join(&file)) {
        Ok(bytes) => {
            ([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, "attachment")], bytes)
                .into_response()
        }
        Err(_) => refuse(StatusCode::NOT_FOUND, "no such snapshot"),
    }
}

/// `POST /snapshots?name=N`: a state file (ours, or a lab snapshot), validated like any state
/// file, stored as `N.safetensors` for `load_snapshot`.
async fn upload(State(hub): State<Arc<Hub>>, Query(params): Params, body: Bytes) -> Response {
    if !authorized(&hub, &params) {
        return refuse(StatusCode::UNAUTHORIZED, "this lab needs its token");
    }
    let name = params.get("name").cloned().unwrap_or_default();
    if let Err(refusal) = check_name(&name) {
        return refuse(StatusCode::BAD_REQUEST, &refusal);
    }
    let path = hub.options.snapshots.join(format!("{name}.safetensors"));
    let replace = params.get("replace").is_some_and(|value| value == "true");
    if path.exists() && !replace {
        return refuse(
            StatusCode::CONFLICT,
            &format!(
                "a snapshot named '{name}' exists: choose another name, or add replace=true to overwrite it"
            ),
        );
    }
    let stored = tokio::task::spawn_blocking(move || {
        let state =
            crate::io::state_file::parse_state(std::path::Path::new(&format!("upload {name}")), &body)?;
        crate::io::state_file::save_state(&path, &state).map(|()| (name, state.dims()))
    })
    .await;
    match stored {
        Ok(Ok((name, dims))) => {
            ([(header::CONTENT_TYPE, "application/json")], Outgoing::Uploaded { name, dims }.text())
                .into_response()
        }
        Ok(Err(error)) => refuse(StatusCode::BAD_REQUEST, &error.to_string()),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the upload failed"),
    }
}

/// The newest picture of a training run started from the page.
async fn run_frame(State(hub): State<Arc<Hub>>, Path(run): Path<String>, Query(params): Params) -> Response {
    if !authorized(&hub, &params) {
        return refuse(StatusCode::UNAUTHORIZED, "this lab needs its token");
    }
    let valid = run
        .strip_prefix("run-")
        .is_some_and(|stamp| !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit()));
    if !valid {
        return refuse(StatusCode::BAD_REQUEST, "not a run's name");
    }
    let frames = hub.options.runs.join(run).join(crate::app::train::FRAMES_DIR);
    let newest = std::fs::read_dir(&frames).ok().and_then(|entries| {
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("frame_") && name.ends_with(".png"))
            .max()
    });
    match newest.and_then(|name| std::fs::read(frames.join(name)).ok()) {
        Some(bytes) => ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], bytes)
            .into_response(),
        None => refuse(StatusCode::NOT_FOUND, "no picture yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_match_the_host() {
        let headers = |origin: Option<&str>, host: &str| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, host.parse().unwrap());
            if let Some(origin) = origin {
                map.insert(header::ORIGIN, origin.parse().unwrap());
            }
            map
        };
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")));
        assert!(same_origin(&headers(None, "127.0.0.1:8080")));
        assert!(!same_origin(&headers(Some("http://evil.example"), "127.0.0.1:8080")));
        assert!(!same_origin(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")));
    }

    #[test]
    fn snapshot_files_never_name_a_path() {
        assert_eq!(snapshot_file("state-1.safetensors").map(|(name, _)| name), Some("state-1"));
        assert!(snapshot_file("rec.gif").is_some());
        for bad in ["../x.safetensors", "a/b.safetensors", "x.sh", ".safetensors", "x"] {
            assert!(snapshot_file(bad).is_none(), "{bad}");
        }
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokem"));
    }
}
