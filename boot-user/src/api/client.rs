//! A small client of the REST API, over the unix socket or TCP (with the bearer token),
//! used by the CLI. One HTTP/1.1 connection per request: CLI commands make one or two.
use std::path::PathBuf;

use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the API is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, with the bearer token.
    Tcp {
        addr: String,
        token: Option<String>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the xboot API at {endpoint}: {message} (is `xboot serve` running? see --socket)")]
    Connect { endpoint: String, message: String },
    #[error("{message}{}{}", list(.errors), outcome_text(.outcome))]
    Api {
        status: StatusCode,
        message: String,
        errors: Vec<String>,
        /// A write the server could not confirm: `not_applied`, `unknown` (it may
        /// still be applied) or `partial`.
        outcome: Option<String>,
    },
    #[error("bad answer from the xboot API: {0}")]
    Protocol(String),
}

fn list(errors: &[String]) -> String {
    if errors.len() < 2 {
        return String::new();
    }
    errors.iter().map(|e| format!("\n  - {e}")).collect()
}

fn outcome_text(outcome: &Option<String>) -> String {
    outcome
        .as_deref()
        .map(|o| format!(" [outcome: {o}]"))
        .unwrap_or_default()
}

/// Percent-encodes a query value (node sets hold `[`, `]` and `,`).
pub fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Clone, Debug)]
pub struct Client {
    pub endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        self.request(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::DELETE, path, None).await
    }

    /// Sends one request; a non-2xx answer becomes [`ClientError::Api`] with its message.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let connect_err = |e: std::io::Error| ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            message: e.to_string(),
        };
        let proto = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        req = match &self.endpoint {
            Endpoint::Unix(_) => req.header("host", "xboot"),
            Endpoint::Tcp { addr, token } => {
                let r = req.header("host", addr.as_str());
                match token {
                    Some(t) => r.header("authorization", format!("Bearer {t}")),
                    None => r,
                }
            }
        };
        let bytes = body
            .map(|b| serde_json::to_vec(&b).expect("JSON serializes"))
            .unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| proto(&e))?;
        let resp = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                send(TokioIo::new(s), req).await?
            }
            Endpoint::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_err)?;
                send(TokioIo::new(s), req).await?
            }
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| proto(&e))?
            .to_bytes();
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| proto(&format!("{e}: {}", String::from_utf8_lossy(&body))))?
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(status.as_str())
            .to_string();
        let errors = value
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let outcome = value
            .get("outcome")
            .and_then(Value::as_str)
            .map(str::to_string);
        Err(ClientError::Api {
            status,
            message,
            errors,
            outcome,
        })
    }
}

async fn send<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}
