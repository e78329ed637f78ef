//! Tests of the error policy: which errors are permanent, and the retry state machine.

use std::io;
use std::time::Duration;

use super::{VipError, VipVerdict};
use crate::VipConfig;

fn transient() -> VipError {
    VipError::NetLink { context: "add 10.0.0.100/24 to eth0".into(), source: io::Error::from_raw_os_error(libc::EBUSY) }
}

#[test]
fn configuration_and_privilege_errors_are_permanent() {
    assert!(VipError::BadRequest("vip.address: x".into()).is_permanent());
    assert!(VipError::NotFound("interface eth9 does not exist".into()).is_permanent());
    let denied = VipError::Socket {
        context: "open the AF_PACKET socket for ARP",
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    assert!(denied.is_permanent());
    let denied = VipError::NetLink { context: "add".into(), source: io::Error::from_raw_os_error(libc::EACCES) };
    assert!(denied.is_permanent());

    assert!(!transient().is_permanent());
    assert!(!VipError::Interface("interface eth0 is administratively down".into()).is_permanent());
    let arp = VipError::ArpBroadcastFailed {
        interface: "eth0".into(),
        vip: "10.0.0.100".parse().expect("ip"),
        source: io::Error::from_raw_os_error(libc::ENETDOWN),
    };
    assert!(!arp.is_permanent());
    let socket =
        VipError::Socket { context: "open the rtnetlink socket", source: io::Error::from_raw_os_error(libc::EMFILE) };
    assert!(!socket.is_permanent());
}

#[test]
fn transient_failures_back_off_then_step_down() {
    let mut config = VipConfig::new("10.0.0.100/24", "eth0");
    config.transient_failure_limit = 5;
    config.retry_backoff_ms = 100;
    config.sync_interval_ms = 300;
    let mut retry = config.retry_policy();
    let failed: Result<(), VipError> = Err(transient());
    let ms = Duration::from_millis;
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(100)));
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(200)));
    // Capped at the sync interval.
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(300)));
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(300)));
    assert_eq!(retry.failures_in_a_row(), 4);
    assert_eq!(retry.record(&failed), VipVerdict::StepDown);

    // One success forgets the streak.
    retry.reset();
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(100)));
    assert_eq!(retry.record(&Ok(())), VipVerdict::Healthy);
    assert_eq!(retry.failures_in_a_row(), 0);
    assert_eq!(retry.record(&failed), VipVerdict::RetryAfter(ms(100)));

    // A permanent error stops the service at once, whatever the streak.
    let permanent: Result<(), VipError> = Err(VipError::NotFound("interface eth9 does not exist".into()));
    assert_eq!(retry.record(&permanent), VipVerdict::StopService);
}
