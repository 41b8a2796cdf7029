//! A tiny stand-in for Mint that answers what a test scripts, for answers the simulator does not
//! give (yet): an HTML page as a result file, a truncated ZIP with a matching `Content-Length`.
//! It also records every request's method, path and headers, so a test can check what was sent.
//!
//! The token endpoint (`POST /token`) always issues `odd-token` for 600 s; every other request
//! takes the next scripted answer, or `404` when the script is empty.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mint_client::MintConfig;
use secrecy::SecretString;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: u16, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: content_type
                .map(|t| vec![("content-type", t.to_owned())])
                .unwrap_or_default(),
            body: body.into(),
        }
    }
}

/// What a request looked like.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Answer>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct OddMint {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl OddMint {
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, _body: Bytes| {
                let state = state.clone();
                async move { answer(&state, method, uri, headers) }
            }
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    /// Queues answers for the next API requests.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Every request seen so far (token requests included).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A client configuration for this server (fast retries, short pauses after a 429 and no
    /// lowered limits: the budget's adaptation is tested against the simulator; environment `odd`).
    pub fn config(&self) -> MintConfig {
        MintConfig::new(
            format!("http://{}/mint", self.addr),
            format!("http://{}/token", self.addr),
            "odd",
            SecretString::from("odd-secret"),
        )
        .environment("odd")
        .retry(crate::helpers::fast_retry())
        .budget(mint_client::BudgetConfig {
            adaptive: mint_client::AdaptiveConfig {
                enabled: false,
                default_pause: std::time::Duration::from_millis(10),
                max_pause: std::time::Duration::from_millis(50),
                ..mint_client::AdaptiveConfig::default()
            },
            ..mint_client::BudgetConfig::default()
        })
    }
}

impl Drop for OddMint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(state: &State, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers,
    });
    if uri.path() == "/token" {
        return (
            [("content-type", "application/json")],
            r#"{"access_token":"odd-token","token_type":"Bearer","expires_in":600}"#,
        )
            .into_response();
    }
    let Some(next) = state.script.lock().unwrap().pop_front() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = Response::new(axum::body::Body::from(next.body));
    *response.status_mut() = StatusCode::from_u16(next.status).unwrap();
    for (name, value) in next.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
