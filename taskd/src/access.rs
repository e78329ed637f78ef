//! Who may call what: the API token (`[api] token_file`, sent as the original REST's
//! `X-SmartX-Token` header) and the rule that decides, for one request, whether it passes.
//!
//! # The rule
//! Without a token file every request passes (a cluster that has not set one up yet). With one,
//! a request that changes state (any method but GET and HEAD, on either port) must carry a
//! token the file holds: none is 401, a wrong one 403. Reads (GET/HEAD: status, show, list,
//! runners, cluster, vip, health, metrics) pass unless `[api] protect_reads`, which puts them
//! under the same rule — except the liveness paths in [`ALWAYS_OPEN`], which reveal nothing and
//! must answer a load balancer or systemd that holds no token. [`decide`] is that rule alone, a
//! pure function the tests drive with every method and path; [`AccessPolicy`] applies it to a
//! request as the servers' guard (`runtime::rpc::Router::guard`), so no route can be added
//! without it.
//!
//! # Tokens
//! The file holds one or more tokens, one per line (blank lines and `#` comments ignored). The
//! first is the one this node sends (the dispatcher to the runners, the CLI to the dispatcher);
//! every one is accepted. A rotation therefore never locks a node out: add the new token as the
//! second line everywhere, then move it first, then remove the old one, restarting nodes one at
//! a time after each step. Each token is 32 to 256 visible ASCII characters (`cargo xtask
//! deploy` and `cluster up` write 64 hex digits: 256 random bits). The file must not be
//! readable by others (mode `0640`, group `zbs-taskd`): a token is a root-equivalent secret on
//! a node whose daemon writes block devices.
//!
//! Comparison is constant-time in the token's content (`subtle`), so a caller cannot find a
//! token byte by byte from response times; lengths are not secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::rpc::{Method, Request, Response};
use subtle::ConstantTimeEq;

/// The header that carries the token, as the original Task Center's REST API names it.
pub const TOKEN_HEADER: &str = "X-SmartX-Token";

/// Paths that answer without a token even with `protect_reads`: liveness, readiness and
/// leadership only (what a load balancer's health check asks), nothing about tasks, members or
/// addresses.
pub const ALWAYS_OPEN: &[&str] = &["/healthz", "/readyz", "/leader"];

/// The shortest and longest token accepted in a token file.
pub const TOKEN_LEN: std::ops::RangeInclusive<usize> = 32..=256;

/// A token file that cannot be used; the message names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("token file {path} is readable or writable by others (mode {mode:04o}): make it 0640 or 0600")]
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error("token file {path} holds no token")]
    Empty { path: PathBuf },
    #[error(
        "token file {path}, line {line}: a token is {min} to {max} visible ASCII characters without spaces",
        min = TOKEN_LEN.start(),
        max = TOKEN_LEN.end()
    )]
    BadToken { path: PathBuf, line: usize },
}

/// The tokens of a token file: the first is sent, all are accepted. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTokens {
    tokens: Vec<String>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} redacted)", self.tokens.len())
    }
}

impl ApiTokens {
    /// Reads and checks a token file (see the module doc for its format and mode).
    pub fn read(path: &Path) -> Result<ApiTokens, TokenFileError> {
        let read_error = |source| TokenFileError::Read { path: path.to_path_buf(), source };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            return Err(TokenFileError::OpenToOthers { path: path.to_path_buf(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        ApiTokens::parse(&text).map_err(|error| match error {
            ParseError::Empty => TokenFileError::Empty { path: path.to_path_buf() },
            ParseError::BadToken { line } => TokenFileError::BadToken { path: path.to_path_buf(), line },
        })
    }

    /// The tokens of a token file's text.
    pub fn parse(text: &str) -> Result<ApiTokens, ParseError> {
        let mut tokens = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !is_valid_token(line) {
                return Err(ParseError::BadToken { line: index + 1 });
            }
            tokens.push(line.to_string());
        }
        if tokens.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(ApiTokens { tokens })
    }

    /// The token this node sends.
    pub fn sent(&self) -> &str {
        &self.tokens[0]
    }

    /// Whether `presented` is one of the tokens; constant-time in their content, and every
    /// token is compared whatever the outcome.
    pub fn accepts(&self, presented: &str) -> bool {
        let mut accepted = subtle::Choice::from(0);
        for token in &self.tokens {
            accepted |= token.as_bytes().ct_eq(presented.as_bytes());
        }
        accepted.into()
    }
}

/// Why a token file's text is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    BadToken { line: usize },
}

/// Whether `token` may be a token: its length in [`TOKEN_LEN`], visible ASCII only (it goes in
/// an HTTP header and a shell variable).
pub fn is_valid_token(token: &str) -> bool {
    TOKEN_LEN.contains(&token.len()) && token.bytes().all(|byte| byte.is_ascii_graphic())
}

/// What the rule says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No token where one is needed: 401.
    Unauthenticated,
    /// A token that is not one of ours: 403.
    Forbidden,
}

/// Whether a request of `method` on `path` with the `presented` token passes (see the module
/// doc). `tokens` is `None` when no token file is configured.
pub fn decide(
    tokens: Option<&ApiTokens>,
    protect_reads: bool,
    method: Method,
    path: &str,
    presented: Option<&str>,
) -> Decision {
    let Some(tokens) = tokens else { return Decision::Allow };
    let is_read = matches!(method, Method::Get | Method::Head);
    if is_read && (!protect_reads || ALWAYS_OPEN.contains(&path)) {
        return Decision::Allow;
    }
    match presented {
        None => Decision::Unauthenticated,
        Some(token) if tokens.accepts(token) => Decision::Allow,
        Some(_) => Decision::Forbidden,
    }
}

/// The rule with its settings, for a server's guard.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    tokens: Option<Arc<ApiTokens>>,
    protect_reads: bool,
}

impl AccessPolicy {
    pub fn new(tokens: Option<Arc<ApiTokens>>, protect_reads: bool) -> AccessPolicy {
        AccessPolicy { tokens, protect_reads }
    }

    /// The guard's answer: `None` lets the request in, else the 401/403 to send. A refusal is
    /// logged with the caller's address, never with what it presented.
    pub fn refusal(&self, request: &Request) -> Option<Response> {
        let presented = request.header(TOKEN_HEADER);
        match decide(self.tokens.as_deref(), self.protect_reads, request.method(), request.path(), presented) {
            Decision::Allow => None,
            Decision::Unauthenticated => {
                tracing::warn!(peer = %request.peer_addr(), method = %request.method(), path = request.path(), "request without a token refused");
                Some(
                    Response::error(401, &format!("this request needs the cluster's API token in {TOKEN_HEADER}"))
                        .with_header("WWW-Authenticate", TOKEN_HEADER),
                )
            }
            Decision::Forbidden => {
                tracing::warn!(peer = %request.peer_addr(), method = %request.method(), path = request.path(), "request with a wrong token refused");
                Some(Response::error(403, &format!("the token in {TOKEN_HEADER} is not this cluster's")))
            }
        }
    }
}

/// A fresh token: 256 bits from the kernel's random source, as 64 hex digits.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes a token file with a fresh token at `path` unless one exists: created with `O_EXCL` and
/// mode 0640 (never readable by others, never a file swapped in), its group `group` when given
/// (the daemon's, `zbs-taskd`). True when it wrote one, false when the file was there.
pub fn create_token_file(path: &Path, group: Option<u32>) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(error) => return Err(error),
    };
    // The umask may have taken bits away; never added any.
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    writeln!(
        file,
        "# The zbs Task Center's API token (see [api] token_file): keep it secret, the same on every node."
    )?;
    writeln!(file, "{}", generate_token()?)?;
    file.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests;
