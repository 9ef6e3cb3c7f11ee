//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::model::*;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Clawdspace API", description = "Sandboxed Linux spaces on your own servers. Every path under /api except /api/health and /api/openapi.json, and /metrics, needs `Authorization: Bearer <key>` or `?key=<key>`. Streaming exec: GET /api/spaces/{name}/exec/ws; terminal: GET /api/spaces/{name}/terminal (WebSockets, see docs/API.md)."),
    paths(
        routes::health,
        routes::spaces::list,
        routes::spaces::create,
        routes::spaces::get,
        routes::spaces::destroy,
        routes::spaces::stop,
        routes::spaces::start,
        routes::spaces::exec,
        routes::git::push,
        routes::stats::stats,
        routes::stats::observability,
        routes::audit::list,
        routes::audit::metrics,
        routes::files::list,
        routes::files::read,
        routes::files::write,
        routes::files::put,
        routes::files::get,
        routes::files::stat,
        routes::files::delete,
        routes::files::archive_get,
        routes::files::archive_put,
        routes::files::volumes,
        routes::files::remove_volume,
        routes::system::system,
        routes::system::capabilities,
        routes::nodes::list,
        routes::nodes::placement,
        routes::relay::relay,
        routes::ports::open,
        routes::ports::list,
        routes::ports::revoke,
        routes::templates::list,
        routes::templates::get,
        routes::templates::put,
        routes::templates::delete,
    ),
    components(schemas(CreateSpaceBody, ExecBody, GitPushBody, GitPushResult, CommandSpec, SpaceJson, SpaceEnvelope, SpaceList, Message, ErrorJson, Health, ExecResult,
        SystemInfo, QuarantinedJson, MemoryInfo, DiskInfo, RuntimeCounters, SystemCapabilities, Capabilities, NodesJson, NodeJson, NodeCapabilities, PlacementJson, routes::ports::PortBody, routes::ports::PortJson, routes::ports::PortList, routes::ports::PreviewJson,
        routes::stats::StatsEnvelope, routes::stats::SpaceStatsJson, SpaceVolume,
        routes::stats::ObservabilityEnvelope, routes::stats::ObservabilityJson,
        routes::stats::WorkspaceDiskJson, routes::stats::TopProcessJson,
        routes::audit::AuditList, routes::audit::AuditEventJson,
        routes::files::FileEntryJson, routes::files::FileListJson, routes::files::FileContentJson,
        routes::files::PutFileBody, routes::files::FileStatJson, routes::files::VolumeJson,
        routes::files::VolumeList, TemplateList, TemplateSummaryJson, TemplateYaml, PutTemplateBody, TemplateEnvelope)),
    modifiers(&Security),
    security(("bearer" = []), ("key" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "key",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("key"))),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
