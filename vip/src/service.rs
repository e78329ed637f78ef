//! Service names: which client-facing service a VIP is for (`iscsi`, `mgmt`, …). A name becomes a
//! ZooKeeper path segment (`/zbs/taskd/vip/<service>`), an HTTP path segment and a metric label,
//! so it is checked wherever it comes in: 1 to 32 bytes of `[a-z0-9_-]`, so no `/`, `.` or `..`
//! can make it escape the path it is put in.

/// The service of the old single `[vip]` table, of the `--vip-*` flags and of the API's forms
/// without a service.
pub const DEFAULT_SERVICE: &str = "default";

/// The longest service name.
pub const MAX_SERVICE_LEN: usize = 32;

/// Checks a service name: 1 to [`MAX_SERVICE_LEN`] bytes of lowercase ASCII letters, digits, `_`
/// and `-`. The error says what is wrong, quoting the name escaped.
pub fn check_service_name(service: &str) -> Result<(), String> {
    if service.is_empty() || service.len() > MAX_SERVICE_LEN {
        return Err(format!("service name {service:?} must be 1 to {MAX_SERVICE_LEN} bytes long"));
    }
    if let Some(bad) =
        service.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "service name {service:?} may only hold lowercase letters, digits, '_' and '-', not {bad:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
