//! xboot's account routes: `/v1/users` and `/v1/tokens` (admin on TCP; the unix socket's
//! permissions guard them there, which is how `xboot user` / `xboot token` reach a
//! running server).
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accounts::{Role, TokenInfo, UserView};
use super::grendel::{account_error, parse_expire};
use super::{ApiError, ApiState};

type ApiResult<T> = Result<T, ApiError>;

fn body<T: serde::de::DeserializeOwned>(b: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

#[utoipa::path(get, path = "/v1/users", tag = "accounts",
    responses((status = 200, body = Vec<UserView>)))]
pub async fn list_users(State(st): State<ApiState>) -> Json<Vec<UserView>> {
    Json(st.accounts.users())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    /// read-only, operator or admin.
    pub role: String,
    /// Change an existing user's password and role instead of refusing.
    #[serde(default)]
    pub replace: bool,
}

#[utoipa::path(post, path = "/v1/users", tag = "accounts", request_body = NewUser,
    responses((status = 200, body = UserView), (status = 400, body = Object),
        (status = 409, body = Object)))]
pub async fn add_user(State(st): State<ApiState>, b: Bytes) -> ApiResult<Json<UserView>> {
    let u: NewUser = body(&b)?;
    let role: Role = u.role.parse().map_err(account_error)?;
    let accounts = st.accounts.clone();
    tokio::task::spawn_blocking(move || {
        accounts.add_user(&u.username, &u.password, role, u.replace)
    })
    .await
    .map_err(ApiError::internal)?
    .map(Json)
    .map_err(account_error)
}

#[utoipa::path(delete, path = "/v1/users/{name}", tag = "accounts",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object)))]
pub async fn delete_user(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    st.accounts.delete_user(&name).map_err(account_error)?;
    Ok(Json(serde_json::json!({ "deleted": [name] })))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "accounts",
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_tokens(State(st): State<ApiState>) -> Json<Vec<TokenInfo>> {
    Json(st.accounts.tokens())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label: who or what uses the token.
    #[serde(default)]
    pub name: String,
    /// read-only, operator or admin.
    pub role: String,
    /// Lifetime (`8h`, `30d`), or `infinite` / absent for none.
    #[serde(default)]
    pub expire: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The secret: shown this once, never stored.
    pub token: String,
    pub info: TokenInfo,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "accounts", request_body = NewToken,
    responses((status = 200, body = CreatedToken), (status = 400, body = Object)))]
pub async fn create_token(State(st): State<ApiState>, b: Bytes) -> ApiResult<Json<CreatedToken>> {
    let t: NewToken = body(&b)?;
    let role: Role = t.role.parse().map_err(account_error)?;
    let ttl = parse_expire(&t.expire)?;
    let (token, info) = st
        .accounts
        .create_token(&t.name, role, ttl, None)
        .map_err(account_error)?;
    Ok(Json(CreatedToken { token, info }))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "the token's id (12 hex digits)")),
    responses((status = 200, body = TokenInfo), (status = 404, body = Object)))]
pub async fn revoke_token(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    st.accounts
        .revoke_token(&id)
        .map(Json)
        .map_err(account_error)
}
