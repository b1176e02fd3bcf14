//! Authentication of the TCP listener: a bearer token (`Authorization: Bearer T`, or
//! Grendel's `Authorization` cookie holding `Bearer T`) that is `api.token` (admin) or
//! an account token ([`super::accounts`]), and the role each route needs. The unix
//! socket is not behind this: its file permissions guard it.
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::accounts::{now_secs, AuthError, Principal, Role};
use super::{ApiError, ApiState};

/// The role a request needs; None: open to anyone (the API description, sign-in).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let path = path.trim_end_matches('/');
    if path == "/v1/openapi.json" || path == "/v1/auth/signin" {
        return None;
    }
    let admin = ["/v1/users", "/v1/tokens"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        || path == "/v1/auth/token"
        || path == "/v1/db/restore";
    if admin {
        return Some(Role::Admin);
    }
    // Boot tokens let their holder fetch a node's boot files and mark it booted.
    if path.starts_with("/v1/nodes/token/") {
        return Some(Role::Operator);
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::ReadOnly);
    }
    Some(Role::Operator)
}

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is case-insensitive
/// (RFC 9110 11.1), and spaces may separate it from the token.
pub fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token of a request: the header, else Grendel's `Authorization` cookie.
fn request_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        return v.to_str().ok().and_then(bearer_token).map(str::to_string);
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "Authorization")
        .and_then(|(_, v)| {
            let v = percent_encoding::percent_decode_str(v).decode_utf8().ok()?;
            bearer_token(&v).map(str::to_string)
        })
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who `token` is: `api.token` (admin), or an account token.
pub fn authenticate(st: &ApiState, token: &str) -> Result<Principal, AuthError> {
    if let Some(t) = st.shared.config.api.token.as_deref() {
        if !t.is_empty() && constant_time_eq(token.as_bytes(), t.as_bytes()) {
            return Ok(Principal {
                name: "api.token".into(),
                role: Role::Admin,
            });
        }
    }
    st.accounts.authenticate(token, now_secs())
}

/// Why a TCP listener is refused at start when nothing could authenticate on it.
pub fn no_account_message(addr: std::net::SocketAddr) -> String {
    format!(
        "api.listen ({addr}): no API account or token exists, so nothing could use the TCP API; \
create one first (with the server stopped, or through its unix socket): \
`xboot user add NAME --role admin` (then sign in: POST /v1/auth/signin) or \
`xboot token create --role operator --name NAME` (prints a bearer token); \
or set api.token"
    )
}

/// The middleware: 401 without a valid token, 403 when its role is not enough.
pub async fn require(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let Some(need) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let principal = match request_token(&req) {
        None => {
            return unauthorized("missing bearer token (Authorization: Bearer TOKEN)");
        }
        Some(t) => match authenticate(&st, &t) {
            Ok(p) => p,
            Err(e) => return unauthorized(&e.to_string()),
        },
    };
    if principal.role < need {
        tracing::info!(
            "api: {} ({}) refused {} {}: needs {need}",
            principal.name,
            principal.role,
            req.method(),
            req.uri().path()
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token's role ({}) does not allow {} {}: it needs {need}",
                principal.role,
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_route() {
        let r = |m: Method, p: &str| required_role(&m, p);
        assert_eq!(r(Method::GET, "/v1/openapi.json"), None);
        assert_eq!(r(Method::POST, "/v1/auth/signin"), None);
        assert_eq!(r(Method::GET, "/v1/hosts"), Some(Role::ReadOnly));
        assert_eq!(r(Method::GET, "/v1/nodes/find"), Some(Role::ReadOnly));
        assert_eq!(r(Method::GET, "/v1/nodes/token/boot"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/v1/hosts"), Some(Role::Operator));
        assert_eq!(
            r(Method::PATCH, "/v1/nodes/provision"),
            Some(Role::Operator)
        );
        assert_eq!(r(Method::POST, "/v1/db/restore"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/v1/users"), Some(Role::Admin));
        assert_eq!(r(Method::DELETE, "/v1/tokens/abc"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/v1/auth/token"), Some(Role::Admin));
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
