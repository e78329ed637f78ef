//! Tests of service-name checking.

use proptest::prelude::*;

use super::*;

#[test]
fn ordinary_names_pass() {
    for name in ["default", "iscsi", "mgmt-ui", "nfs_v4", "a", &"x".repeat(MAX_SERVICE_LEN)] {
        assert_eq!(check_service_name(name), Ok(()), "{name}");
    }
}

#[test]
fn names_that_could_escape_a_path_are_refused() {
    for name in ["", "..", ".", "a/b", "../vip", "ISCSI", "a b", "é", "a\0b", &"x".repeat(MAX_SERVICE_LEN + 1)] {
        assert!(check_service_name(name).is_err(), "{name:?} passed");
    }
}

proptest! {
    /// Whatever passes is a single path segment of the allowed alphabet.
    #[test]
    fn a_name_that_passes_is_one_safe_segment(name in ".{0,40}") {
        if check_service_name(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= MAX_SERVICE_LEN);
            prop_assert!(!name.contains('/') && !name.contains('.'));
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
        }
    }
}
