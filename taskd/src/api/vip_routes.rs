//! The VIP routes of the dispatcher API, one VIP per service:
//!
//! - `GET  vips` — every VIP (`{"vips": [...]}`, configuration order);
//! - `GET  vip/{service}` — one service's VIP; `GET vip` — the service `default`'s (the form of
//!   before services; the first VIP's when there is no `default`);
//! - `POST vip/set` with `{"service", "address", "interface"}` or `{"service", "clear": true}`
//!   (`service` defaults to `default`, the form of before services), and
//!   `POST vip/{service}/set` with the same body without `service`.
//!
//! A service name is checked before anything else (`vip::check_service_name`: 400), an unknown
//! one is a 404, and a new VIP is checked against the file's table of its service (400) and
//! against the leader's interfaces (409) before it is stored.

use std::sync::Arc;

use runtime::rpc::{Method, Request, Response, ServerConfig, WorkerPool};
use serde::Deserialize;
use vip::{StoredVip, VipServer, DEFAULT_SERVICE};

use super::{answer, DispatcherAccess, PREFIX};

type Access = Arc<dyn DispatcherAccess>;

/// `POST /api/v2/task_center/vip/set`: a new VIP (`address` and `interface`) for `service`
/// (default `default`), or `clear` to go back to the configuration file's table of the service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipSet {
    pub service: Option<String>,
    pub address: Option<String>,
    pub interface: Option<String>,
    #[serde(default)]
    pub clear: bool,
}

impl VipSet {
    /// The service the body names, checked: 400 for a name that is not one.
    pub(crate) fn service(&self) -> Result<String, Response> {
        let service = self.service.clone().unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        vip::check_service_name(&service).map_err(|message| Response::error(400, &message))?;
        Ok(service)
    }

    /// The VIP to store (None for `clear`), checked against the file's table of the service; a
    /// 400 naming what is wrong.
    pub(crate) fn stored(self, base: &vip::VipConfig) -> Result<Option<StoredVip>, Response> {
        match (self.clear, self.address, self.interface) {
            (true, None, None) => Ok(None),
            (true, _, _) => Err(Response::error(400, "`clear` takes no `address` or `interface`")),
            (false, Some(address), Some(interface)) => {
                let stored = StoredVip::new(address, interface);
                stored.validate(base).map_err(|error| Response::error(400, &error.to_string()))?;
                Ok(Some(stored))
            }
            (false, _, _) => Err(Response::error(400, "give both `address` and `interface`, or `clear`: true")),
        }
    }
}

/// What `vip show` answers for one VIP: the VIP served now (on a follower, the leader's, read
/// fresh from the store: `VipServer::shown`), where it comes from, both sources, and the
/// leader's latest error with it.
fn vip_json(vip: &VipServer) -> serde_json::Value {
    let base = vip.base_config();
    let shown = vip.shown();
    let config = &shown.config;
    let source = if config.address == base.address && config.interface == base.interface { "config" } else { "stored" };
    serde_json::json!({
        "service": vip.service(),
        "address": shown.address(),
        "interface": config.interface,
        "label": config.effective_label().unwrap_or_default(),
        "source": source,
        "held": vip.is_active(),
        "error": vip.last_error(),
        "configured": { "address": base.address, "interface": base.interface },
        "stored": shown.stored,
        "store_error": shown.store_error,
    })
}

/// Checks that the leader can hold the new VIP (a 409 when not, nothing changed), stores it, and
/// hands it to the leader's VIP loop, which moves to it at its next `sync_interval_ms` tick:
/// after this answer, so that a client that asked through the old VIP gets it.
fn set_vip(vip: &VipServer, stored: Option<StoredVip>) -> Result<Response, Response> {
    let store = vip.store().ok_or_else(|| Response::error(503, "this node has no vip store"))?;
    let base = vip.base_config();
    let desired = stored.as_ref().map(|stored| stored.apply_to(base)).unwrap_or_else(|| base.clone());
    vip.check(&desired).map_err(|error| {
        Response::error(
            409,
            &format!(
                "the leader cannot hold {} on {} for the service {}: {error}; nothing changed",
                desired.address,
                desired.interface,
                vip.service()
            ),
        )
    })?;
    store.write(stored.as_ref()).map_err(|error| Response::error(503, &format!("cannot store the vip: {error}")))?;
    vip.note_stored(stored.clone());
    tracing::info!(
        service = vip.service(),
        address = %desired.address,
        interface = %desired.interface,
        "vip set through the api"
    );
    let source = if stored.is_some() { "stored" } else { "config" };
    Ok(Response::json(
        200,
        &serde_json::json!({
            "service": vip.service(),
            "address": desired.address,
            "interface": desired.interface,
            "source": source,
            "held": vip.is_active(),
            "applies_within_ms": desired.sync_interval_ms,
            "configured": { "address": base.address, "interface": base.interface },
            "stored": stored,
        }),
    ))
}

/// The VIP of `service` on this node: 400 for a name that is not one, 404 for none configured.
fn find(access: &dyn DispatcherAccess, service: Option<&str>) -> Result<Arc<VipServer>, Response> {
    let vips = access.vips();
    if vips.is_empty() {
        return Err(Response::error(404, "no [[vip]] is configured on this node"));
    }
    match service {
        None => vips
            .get(DEFAULT_SERVICE)
            .or_else(|| vips.iter().next().cloned())
            .ok_or_else(|| Response::error(404, "no [[vip]] is configured on this node")),
        Some(service) => {
            vip::check_service_name(service).map_err(|message| Response::error(400, &message))?;
            vips.get(service).ok_or_else(|| {
                let known: Vec<&str> = vips.iter().map(|vip| vip.service()).collect();
                Response::error(404, &format!("no VIP for the service {service:?} (configured: {})", known.join(", ")))
            })
        }
    }
}

/// Registers the VIP routes.
pub(super) fn vip_routes(config: ServerConfig, access: &Access, pool: &Arc<WorkerPool>) -> ServerConfig {
    let (a, vip_pool) = (access.clone(), pool.clone());
    let config = config.cpu_route(Method::Get, &format!("{PREFIX}/vips"), move |_request| {
        let servers: Vec<_> = a.vips().iter().cloned().collect();
        // The stored VIPs are read from ZooKeeper: blocking calls, on the worker pool.
        answer(
            vip_pool
                .run(move || serde_json::json!({ "vips": servers.iter().map(|vip| vip_json(vip)).collect::<Vec<_>>() }))
                .map(|json| Response::json(200, &json))
                .map_err(|error| Response::error(503, &error.to_string())),
        )
    });
    let show = |a: Access, vip_pool: Arc<WorkerPool>, with_service: bool| {
        move |request: &Request| {
            answer((|| {
                let vip = find(a.as_ref(), if with_service { request.param("service") } else { None })?;
                vip_pool
                    .run(move || vip_json(&vip))
                    .map(|json| Response::json(200, &json))
                    .map_err(|error| Response::error(503, &error.to_string()))
            })())
        }
    };
    let config = config.cpu_route(Method::Get, &format!("{PREFIX}/vip"), show(access.clone(), pool.clone(), false));
    let config =
        config.cpu_route(Method::Get, &format!("{PREFIX}/vip/{{service}}"), show(access.clone(), pool.clone(), true));
    let set = |a: Access, vip_pool: Arc<WorkerPool>, with_service: bool| {
        move |request: &Request| {
            answer((|| {
                let body: VipSet = request.json()?;
                let service = match (with_service, request.param("service")) {
                    (true, Some(path_service)) => {
                        if body.service.as_deref().is_some_and(|service| service != path_service) {
                            return Err(Response::error(400, "the body's `service` differs from the path's"));
                        }
                        path_service.to_string()
                    }
                    _ => body.service()?,
                };
                let vip = find(a.as_ref(), Some(&service))?;
                let stored = body.stored(vip.base_config())?;
                // Only the leader changes a VIP (a follower answers 421 with the leader's address).
                a.scheduler()?;
                vip_pool.run(move || set_vip(&vip, stored)).map_err(|error| Response::error(503, &error.to_string()))?
            })())
        }
    };
    let config = config.cpu_route(Method::Post, &format!("{PREFIX}/vip/set"), set(access.clone(), pool.clone(), false));
    config.cpu_route(Method::Post, &format!("{PREFIX}/vip/{{service}}/set"), set(access.clone(), pool.clone(), true))
}
