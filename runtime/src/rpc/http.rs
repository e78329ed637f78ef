//! HTTP/1.1 framing for the RPC servers: `Request` and `Response` with JSON helpers, the size
//! limits, parsing a request out of a connection's buffer (with `httparse`) and writing a
//! response. No `unwrap` on network data: every malformed input becomes an `HttpError` that
//! knows its 4xx status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An HTTP method the router knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 9110 says); `None` for any other.
    pub fn parse(token: &str) -> Option<Method> {
        Some(match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line plus headers, in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// How many header fields; more gets 431.
    pub max_headers: usize,
    /// The body, in bytes (`Content-Length`); more gets 413.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_header_bytes: 16 * 1024, max_headers: 64, max_body_bytes: 1024 * 1024 }
    }
}

/// A complete request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) params: HashMap<String, String>,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) received_at: Instant,
    pub(crate) keep_alive: bool,
    pub(crate) server: Option<super::handle::ServerHandle>,
}

impl Request {
    pub fn method(&self) -> Method {
        self.method
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The value of a `key=value` pair of the query string (no percent-decoding).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == key).then_some(value)
        })
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// A `{name}` segment of the route pattern that matched this request.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// When the server had read the whole request.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The server that received the request: a handler can `stop()` it from here.
    pub fn server(&self) -> Option<&super::handle::ServerHandle> {
        self.server.as_ref()
    }

    /// The body parsed as JSON, or a ready 400 response that says what is wrong with it.
    ///
    /// # Errors
    ///
    /// A 400 [`Response`] naming what is wrong when the body is not JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body)
            .map_err(|error| Response::error(400, &format!("invalid JSON request body: {error}")))
    }
}

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// `value` serialised as the JSON body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status).with_header("Content-Type", "application/json").with_body(body),
            Err(error) => Response::error(500, &format!("cannot serialise the response: {error}")),
        }
    }

    /// `{"error": message}` with `status`: how every error of the framework is answered.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message, "status": status });
        Response::new(status).with_header("Content-Type", "application/json").with_body(body.to_string().into_bytes())
    }

    /// A plain-text body.
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(text.into().into_bytes())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The bytes on the wire: status line, headers (with `Content-Length` and `Connection`
    /// set by the server), body. A response to `HEAD` keeps its length but drops its body.
    pub(crate) fn encode(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(self.body.len().to_string().as_bytes());
        out.extend_from_slice(if keep_alive {
            b"\r\nConnection: keep-alive\r\n\r\n"
        } else {
            b"\r\nConnection: close\r\n\r\n"
        });
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Why bytes from a client are not a request; each maps to the 4xx (or 5xx) it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("request headers larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("more than {limit} request header fields")]
    TooManyHeaders { limit: usize },
    #[error("request body of {length} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge { length: usize, limit: usize },
    #[error("the connection closed after {received} of {expected} body bytes (truncated request)")]
    TruncatedBody { received: usize, expected: usize },
    #[error("the connection closed in the middle of the request headers")]
    TruncatedHeaders,
    #[error("the request was not complete within the request timeout")]
    Timeout,
    #[error("the request line and headers were not complete within the header timeout")]
    HeaderTimeout,
    #[error("unsupported HTTP method {0:?}")]
    UnknownMethod(String),
    #[error("chunked request bodies are not supported; send Content-Length")]
    ChunkedBody,
    #[error("unsupported HTTP version 1.{0}")]
    Version(u8),
}

impl HttpError {
    /// The status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::TruncatedBody { .. } | HttpError::TruncatedHeaders => 400,
            HttpError::HeadersTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::Timeout | HttpError::HeaderTimeout => 408,
            HttpError::UnknownMethod(_) | HttpError::ChunkedBody => 501,
            HttpError::Version(_) => 400,
        }
    }

    pub(crate) fn response(&self) -> Response {
        Response::error(self.status(), &self.to_string())
    }
}

/// What `parse` found at the start of a connection's buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed. `head_complete` is set once the request line and headers are all
    /// here (only the body is missing); `expects_continue` when, moreover, nothing of the body
    /// is here and the client waits for `100 Continue` before sending it.
    Partial { head_complete: bool, expects_continue: bool },
    /// A whole request, which used the first `consumed` bytes of the buffer.
    Complete { request: Box<Request>, consumed: usize },
}

/// Parses one request from the front of `buffer`.
pub(crate) fn parse(buffer: &[u8], limits: &Limits, peer_addr: SocketAddr) -> Result<Parsed, HttpError> {
    let mut header_slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut header_slots);
    let header_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(header_len)) => header_len,
        Ok(httparse::Status::Partial) => {
            if buffer.len() > limits.max_header_bytes {
                return Err(HttpError::HeadersTooLarge { limit: limits.max_header_bytes });
            }
            return Ok(Parsed::Partial { head_complete: false, expects_continue: false });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders { limit: limits.max_headers }),
        Err(error) => return Err(HttpError::Malformed(error.to_string())),
    };
    if header_len > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge { limit: limits.max_header_bytes });
    }
    let method_token = parsed.method.unwrap_or("");
    let method =
        Method::parse(method_token).ok_or_else(|| HttpError::UnknownMethod(method_token.chars().take(32).collect()))?;
    let version = parsed.version.unwrap_or(1);
    if version > 1 {
        return Err(HttpError::Version(version));
    }
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    let mut declared_length: Option<usize> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expects_continue = false;
    for header in parsed.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = content_length(header.value)?;
            if declared_length.is_some_and(|previous| previous != length) {
                return Err(HttpError::Malformed("conflicting Content-Length headers".to_string()));
            }
            declared_length = Some(length);
            // All ASCII digits, so the lossy conversion loses nothing.
            headers.push((header.name.to_string(), String::from_utf8_lossy(header.value).into_owned()));
            continue;
        }
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::Malformed(format!("header {} is not UTF-8", header.name)))?
            .trim();
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::ChunkedBody);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("expect") {
            expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
        headers.push((header.name.to_string(), value.to_string()));
    }
    let body_len = declared_length.unwrap_or(0);
    if body_len > limits.max_body_bytes {
        return Err(HttpError::BodyTooLarge { length: body_len, limit: limits.max_body_bytes });
    }
    let total = header_len + body_len;
    if buffer.len() < total {
        return Ok(Parsed::Partial {
            head_complete: true,
            expects_continue: expects_continue && buffer.len() == header_len,
        });
    }
    let keep_alive = if version == 0 { connection_keep_alive } else { !connection_close };
    Ok(Parsed::Complete {
        request: Box::new(Request {
            method,
            path,
            query,
            headers,
            body: buffer[header_len..total].to_vec(),
            params: HashMap::new(),
            peer_addr,
            received_at: Instant::now(),
            keep_alive,
            server: None,
        }),
        consumed: total,
    })
}

/// For a buffer that ended early: the error that says what was missing.
pub(crate) fn truncation_error(buffer: &[u8], limits: &Limits) -> HttpError {
    let mut header_slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut header_slots);
    match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(header_len)) => {
            let expected = parsed
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| content_length(header.value).ok())
                .unwrap_or(0);
            HttpError::TruncatedBody { received: buffer.len().saturating_sub(header_len), expected }
        }
        _ => HttpError::TruncatedHeaders,
    }
}

/// A `Content-Length` value as RFC 9110 §8.6 writes it, `1*DIGIT`, and nothing else: no sign,
/// no inner or non-ASCII space, no list, no hex, no empty value, no overflow. Rust's
/// `usize::from_str` takes `+5`, and `str::trim` took away Unicode spaces, so that two parsers
/// on a request's way could disagree on where its body ends (request smuggling). The optional
/// spaces and tabs around a field value are not part of it (RFC 9110 §5.5): `httparse` has
/// already removed them.
pub(crate) fn content_length(value: &[u8]) -> Result<usize, HttpError> {
    let malformed = || HttpError::Malformed(format!("bad Content-Length {:?}", String::from_utf8_lossy(value)));
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    value
        .iter()
        .try_fold(0usize, |length, digit| length.checked_mul(10)?.checked_add(usize::from(digit - b'0')))
        .ok_or_else(malformed)
}
