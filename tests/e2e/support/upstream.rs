//! A real HTTP upstream for tests: every request is answered with a JSON echo of what arrived
//! (method, URI, headers, body, which server answered), plus `/slow?ms=N`, `/big?mb=N`,
//! `/healthz`, a WebSocket echo at `/ws`, a Latin-1 cookie at `*/set-latin1-cookie`, and HTML
//! pages for real-browser tests at `*.html` (a form at `*form.html`). Each server has its own
//! runtime thread, so `kill` really closes every socket.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request};
use axum::response::{IntoResponse, Json};
use axum::routing::{any, get};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running test upstream.
pub struct TestUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has answered (health checks excluded).
    pub hits: Arc<AtomicUsize>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestUpstream {
    /// Starts an upstream on a free port that names itself `id` in responses.
    pub fn start(id: &str) -> TestUpstream {
        Self::start_on(0, id)
    }

    /// Starts an upstream on `port` (0: any free one), e.g. to restore a killed one.
    pub fn start_on(port: u16, id: &str) -> TestUpstream {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind test upstream");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let id = id.to_owned();
        let hits2 = hits.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let app = router(id, hits2);
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    let _ = stop_rx.recv();
                    let _ = tx.send(());
                });
                tokio::select! {
                    _ = axum::serve(listener, app) => {},
                    _ = rx => {},
                }
            });
            // Dropping the runtime cancels every connection task and closes its socket.
            drop(rt);
        });
        TestUpstream {
            addr,
            hits,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:port`
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server and closes every connection to it.
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn router(id: String, hits: Arc<AtomicUsize>) -> axum::Router {
    let id2 = id.clone();
    let hits2 = hits.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/slow",
            get(move |Query(q): Query<HashMap<String, u64>>| {
                let id = id2.clone();
                hits2.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        q.get("ms").copied().unwrap_or(1000),
                    ))
                    .await;
                    Json(serde_json::json!({ "server": id, "slow": true }))
                }
            }),
        )
        .route(
            "/big",
            get(|Query(q): Query<HashMap<String, usize>>| async move {
                vec![b'x'; q.get("mb").copied().unwrap_or(1) << 20]
            }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .fallback(any(move |req: Request| {
            let id = id.clone();
            hits.fetch_add(1, Ordering::SeqCst);
            async move {
                if req.uri().path().ends_with(".html") {
                    html_page(&req).into_response()
                } else if req.uri().path().ends_with("/set-latin1-cookie") {
                    // What any upstream or sibling subdomain may set: a raw Latin-1 byte,
                    // which browsers store and send back as it is.
                    let cookie =
                        axum::http::HeaderValue::from_bytes(b"pref=caf\xe9; Path=/").unwrap();
                    ([(axum::http::header::SET_COOKIE, cookie)], "set").into_response()
                } else {
                    echo_request(&id, req).await.into_response()
                }
            }
        }))
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(t) = msg
            && socket
                .send(Message::Text(format!("echo: {t}").into()))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// A page for real-browser tests: who the upstream was told the user is, and a sign-out button.
fn html_page(req: &Request) -> axum::response::Html<String> {
    let user = req
        .headers()
        .get("x-auth-request-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody");
    let email = req
        .headers()
        .get("x-auth-request-email")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    // A form posting to the echo next to it (`preserve_post` tests).
    let form = if req.uri().path().ends_with("form.html") {
        "<form id=\"order\" method=\"post\" action=\"submit?from=form\"><input id=\"title\" name=\"title\">\
<textarea id=\"comment\" name=\"comment\"></textarea><input type=\"hidden\" name=\"csrf\" value=\"app-token-1\">\
<button id=\"send\" type=\"submit\" name=\"submit\" value=\"send\">Send</button></form>"
    } else {
        ""
    };
    axum::response::Html(format!(
        "<!doctype html><html><head><title>Test app</title></head><body><h1 id=\"user\">{}</h1><p id=\"email\">{}</p>\
<p id=\"path\">{}</p>{form}<form method=\"post\" action=\"/oauth2/logout\"><button id=\"logout\" type=\"submit\">Sign out</button></form></body></html>",
        esc(user),
        esc(email),
        esc(req.uri().path())
    ))
}

async fn echo_request(id: &str, req: Request) -> Json<serde_json::Value> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Json(serde_json::json!({
        "server": id,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}
