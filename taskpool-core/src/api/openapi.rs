//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// `{"error":{"code","message"}}`, the body of every 4xx and 5xx.
pub use taskpool_api::error::ErrorBody as ErrorSchema;

#[derive(OpenApi)]
#[openapi(
    info(title = "Taskpool task API", description = "One task list across every Camunda engine: the tasks you may see, and actions on them."),
    paths(
        super::tasks::list, super::tasks::one, super::tasks::counts,
        super::tasks::attribute_names, super::tasks::attribute_values,
        super::stream::tasks,
        super::processes::list, super::processes::start, super::processes::start_in,
        super::me,
    ),
    components(schemas(ErrorSchema, taskpool_api::error::ErrorDetail)),
    modifiers(&Security, &Actions),
    security(("bearer" = []), ("gateway" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        taskpool_api::openapi::add_bearer(openapi, Some("JWT"));
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "gateway",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-User",
                "The user, set by a trusted gateway (with X-Groups), when the server trusts identity headers",
            ))),
        );
    }
}

/// The task actions: one handler serves them all, so their operations come from their list.
struct Actions;

impl Modify for Actions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        super::actions::document(openapi);
    }
}

/// The OpenAPI 3.1 document of this API.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
