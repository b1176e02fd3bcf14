//! The OpenAPI 3 document of the whole API (xboot's routes, Grendel's, the accounts'),
//! generated from the handlers' annotations (utoipa) and served at `/v1/openapi.json`.
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{accounts, grendel, handlers, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "xboot API",
        description = "xboot's inventory, boot and power API, with Grendel v0.2's and the SquareFactory fork's routes. On the TCP listener every route but sign-in and this document needs `Authorization: Bearer TOKEN`: read-only tokens may GET, operator tokens change the inventory and power, admin tokens manage accounts and restore dumps."
    ),
    paths(
        handlers::list_hosts, handlers::get_host, handlers::post_hosts, handlers::put_host,
        handlers::delete_host, handlers::delete_hosts, handlers::provision,
        handlers::unprovision, handlers::tag, handlers::untag, handlers::set_image,
        handlers::db_dump, handlers::host_events, handlers::events, handlers::list_images,
        handlers::get_image, handlers::put_image, handlers::delete_image,
        handlers::discovered, handlers::status, handlers::bmc_power,
        post_images, db_restore, openapi_json,
        grendel::nodes_list, grendel::nodes_find, grendel::nodes_add, grendel::nodes_delete,
        grendel::nodes_provision, grendel::nodes_tags, grendel::nodes_image,
        grendel::nodes_token, grendel::images_find, grendel::images_delete,
        grendel::bmc_power_os, grendel::signin, grendel::auth_token,
        grendel::host_add, grendel::host_list, grendel::host_find, grendel::host_delete,
        grendel::host_by_tags, grendel::host_tag, grendel::host_untag,
        grendel::host_provision, grendel::host_unprovision, grendel::bootimage_add,
        grendel::bootimage_list, grendel::bootimage_find, grendel::bootimage_delete,
        users::list_users, users::add_user, users::delete_user, users::list_tokens,
        users::create_token, users::revoke_token,
    ),
    components(schemas(accounts::UserView, accounts::TokenInfo)),
    security(("bearer" = [])),
    modifiers(&Auth),
)]
struct ApiDoc;

/// The bearer scheme, and the 401/403 answers of every route that needs a token.
struct Auth;

impl Modify for Auth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::T(utoipa::openapi::schema::Schema::Object(
                    ObjectBuilder::new().build(),
                ))))
                .build()
        };
        for item in api.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let open = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                if open {
                    continue;
                }
                for (code, what) in [
                    ("401", "missing, unknown or expired token"),
                    ("403", "the token's role does not allow this"),
                ] {
                    op.responses
                        .responses
                        .entry(code.into())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(what)
                                    .content("application/json", error())
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// The document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).expect("the document serializes"))
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "xboot", security(()),
    responses((status = 200, description = "this document", body = Object)))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(document().clone())
}

// Paths served by handlers in `grendel` that take both APIs' bodies.
#[utoipa::path(post, path = "/v1/images", tag = "xboot", request_body = handlers::Entries,
    responses((status = 200, body = Object), (status = 400, body = Object)))]
#[allow(dead_code)]
fn post_images() {}

#[utoipa::path(post, path = "/v1/db/restore", tag = "xboot", request_body = handlers::Entries,
    responses((status = 200, body = Object), (status = 400, body = Object)))]
#[allow(dead_code)]
fn db_restore() {}
