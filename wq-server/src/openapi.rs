//! The OpenAPI document served at `/api/openapi.json`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{error, health, jobs, metrics, queues, view};

/// The API's OpenAPI 3.1 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "wq", description = "Durable WhatsApp message queues: the application and admin API."),
    paths(
        jobs::enqueue, jobs::enqueue_batch, jobs::list, jobs::get, jobs::position, jobs::cancel,
        queues::list, queues::get, queues::pause, queues::resume, queues::retry_dead,
        queues::purge_dead, queues::sessions, queues::pause_session, queues::resume_session,
        queues::blocked, queues::unblock, queues::skip,
        health::health, health::ready, metrics::scrape,
    ),
    components(schemas(
        error::ErrorBody, view::JobView, view::LeaseView, view::AttemptView, view::CountsView,
        view::QueueView, view::SessionView, view::EnqueueBody, view::BatchBody,
        view::EnqueuedView, view::JobPage, view::DeadSelection, view::Affected,
        view::PositionView, view::BlockedGroup, health::Health, health::StoreHealth,
        health::WorkersHealth,
    )),
    modifiers(&BearerToken),
    security(("token" = [])),
)]
pub struct ApiDoc;

/// Every `/api/` call takes `Authorization: Bearer <token>`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The paths of the `whatsapp` feature.
#[cfg(feature = "whatsapp")]
#[derive(OpenApi)]
#[openapi(
    paths(crate::messages::send),
    components(schemas(crate::messages::MessageBody))
)]
struct MessagesDoc;

/// The whole document: [`ApiDoc`] and the paths of the enabled features.
pub fn document() -> utoipa::openapi::OpenApi {
    let doc = ApiDoc::openapi();
    #[cfg(feature = "whatsapp")]
    let doc = {
        let mut doc = doc;
        doc.merge(MessagesDoc::openapi());
        doc
    };
    doc
}
