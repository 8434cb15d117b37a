//! `GET /v1/openapi.json`: the client API as an OpenAPI document, generated from the handlers'
//! annotations and the wire types of `taskpool-api`.

use axum::Json;
use utoipa::{Modify, OpenApi};

/// `{"error":{"code","message"}}`, the body of every 4xx and 5xx.
pub use taskpool_api::error::ErrorBody as ErrorSchema;

#[derive(OpenApi)]
#[openapi(
    info(title = "raft-bus", description = "A three-node Raft event store and command router: append, read and subscribe to events; send commands to handlers; the cluster."),
    paths(
        super::events::append, super::events::read_events, super::events::read_stream,
        super::events::subscribe,
        super::commands::send, super::commands::result, super::commands::subscribe_handler,
        super::cluster::info, super::cluster::add_learner, super::cluster::change_membership,
    ),
    components(schemas(ErrorSchema, taskpool_api::error::ErrorDetail)),
    modifiers(&Security),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        taskpool_api::openapi::add_bearer(openapi, None);
    }
}

/// The OpenAPI 3.1 document of the client API.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
