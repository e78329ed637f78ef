//! The routing table: handlers registered per method and path pattern (literal segments and
//! `{name}` parameters), each marked to run on the IO coroutine or on the CPU worker pool, and
//! an optional guard that every found route's request passes before its handler runs (the
//! daemon's authentication: one place, so no route can be added without it).

use std::collections::HashMap;
use std::sync::Arc;

use super::http::{Method, Request, Response};

/// What a route runs: a plain function of the request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync + 'static>;

/// Asked before a found route's handler runs: `Some(response)` answers the request with it
/// instead (a refusal); `None` lets the handler run. Runs on the connection's IO coroutine, so
/// it must be quick and never block.
pub type Guard = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync + 'static>;

/// Where a route's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the connection's `may` coroutine (the IO pool): for quick handlers, or handlers
    /// that park (runtime `sleep`, `SyncPoint`, `CoMutex`) rather than compute.
    Io,
    /// On the shared worker pool of `ThreadContext`s, the connection coroutine waiting for
    /// the answer: for CPU-heavy handlers that would stall the IO pool.
    Cpu,
}

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) handler: Handler,
    pub(crate) placement: Placement,
}

#[derive(Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Clone)]
struct Pattern {
    text: String,
    segments: Vec<Segment>,
    methods: HashMap<Method, Route>,
}

/// The result of looking a request up.
pub(crate) enum Lookup<'a> {
    Found {
        route: &'a Route,
        params: HashMap<String, String>,
        /// The registered pattern (`/tasks/{task_id}`), a bounded label for metrics.
        pattern: &'a str,
    },
    /// The path exists, not with this method; the allowed methods go in an `Allow` header.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// Method + path → handler.
#[derive(Clone, Default)]
pub struct Router {
    exact: HashMap<String, usize>,
    patterns: Vec<Pattern>,
    guard: Option<Guard>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` for `method` on `path` (e.g. `/tasks/{task_id}`), run on the IO pool.
    /// A later registration of the same method and path replaces the earlier one.
    pub fn route<F>(&mut self, method: Method, path: &str, handler: F) -> &mut Router
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.add(method, path, Arc::new(handler), Placement::Io)
    }

    /// Like `route`, with the handler run on the CPU worker pool.
    pub fn cpu_route<F>(&mut self, method: Method, path: &str, handler: F) -> &mut Router
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.add(method, path, Arc::new(handler), Placement::Cpu)
    }

    /// Sets the guard every found route's request passes first (see [`Guard`]); a later call
    /// replaces it. Unknown paths and methods are answered 404/405 without asking it.
    pub fn guard<G>(&mut self, guard: G) -> &mut Router
    where
        G: Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    {
        self.guard = Some(Arc::new(guard));
        self
    }

    /// The guard's answer for `request`: `Some` refuses it.
    pub(crate) fn refusal(&self, request: &Request) -> Option<Response> {
        self.guard.as_ref().and_then(|guard| guard(request))
    }

    /// Registers an already shared handler with an explicit placement.
    pub fn add(&mut self, method: Method, path: &str, handler: Handler, placement: Placement) -> &mut Router {
        let route = Route { handler, placement };
        if let Some(&index) = self.exact.get(path) {
            self.patterns[index].methods.insert(method, route);
            return self;
        }
        let segments = split(path)
            .map(|segment| match segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(segment.to_string()),
            })
            .collect();
        let mut methods = HashMap::new();
        methods.insert(method, route);
        self.exact.insert(path.to_string(), self.patterns.len());
        self.patterns.push(Pattern { text: path.to_string(), segments, methods });
        self
    }

    /// How many (method, path) pairs are registered.
    pub fn len(&self) -> usize {
        self.patterns.iter().map(|pattern| pattern.methods.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub(crate) fn lookup(&self, method: Method, path: &str) -> Lookup<'_> {
        // A literal path is found without walking the patterns.
        if let Some(&index) = self.exact.get(path) {
            let pattern = &self.patterns[index];
            if pattern.segments.iter().all(|segment| matches!(segment, Segment::Literal(_))) {
                return match pattern.methods.get(&method) {
                    Some(route) => Lookup::Found { route, params: HashMap::new(), pattern: &pattern.text },
                    None => Lookup::MethodNotAllowed { allowed: allowed(pattern) },
                };
            }
        }
        let request_segments: Vec<&str> = split(path).collect();
        let mut allowed_methods = Vec::new();
        for pattern in &self.patterns {
            let Some(params) = match_pattern(&pattern.segments, &request_segments) else { continue };
            match pattern.methods.get(&method) {
                Some(route) => return Lookup::Found { route, params, pattern: &pattern.text },
                None => allowed_methods.extend(allowed(pattern)),
            }
        }
        if allowed_methods.is_empty() {
            Lookup::NotFound
        } else {
            allowed_methods.sort_by_key(|method| method.as_str());
            allowed_methods.dedup();
            Lookup::MethodNotAllowed { allowed: allowed_methods }
        }
    }

    /// The registered path patterns, for logs.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|pattern| pattern.text.as_str())
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

fn allowed(pattern: &Pattern) -> Vec<Method> {
    let mut methods: Vec<Method> = pattern.methods.keys().copied().collect();
    methods.sort_by_key(|method| method.as_str());
    methods
}

fn match_pattern(segments: &[Segment], request: &[&str]) -> Option<HashMap<String, String>> {
    if segments.len() != request.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (segment, value) in segments.iter().zip(request) {
        match segment {
            Segment::Literal(literal) if literal == value => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => {
                params.insert(name.clone(), (*value).to_string());
            }
        }
    }
    Some(params)
}
