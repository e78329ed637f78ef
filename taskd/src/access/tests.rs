//! The access rule for every method, path and token, and the token file's format and mode.

use std::os::unix::fs::PermissionsExt;

use proptest::prelude::*;

use super::*;

const GOOD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OLD: &str = "fedcba9876543210fedcba9876543210";

fn tokens() -> ApiTokens {
    ApiTokens::parse(&format!("# rotated on 2026-12-03\n{GOOD}\n\n{OLD}\n")).expect("valid")
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Get),
        Just(Method::Head),
        Just(Method::Post),
        Just(Method::Put),
        Just(Method::Delete),
        Just(Method::Patch),
        Just(Method::Options),
    ]
}

proptest! {
    /// Without a token file everything passes, whatever is presented.
    #[test]
    fn no_token_file_lets_everything_in(method in method(), path in "/[a-z/_]{0,40}", presented in proptest::option::of("[ -~]{0,80}"), protect in any::<bool>()) {
        prop_assert_eq!(decide(None, protect, method, &path, presented.as_deref()), Decision::Allow);
    }

    /// With one, a request that is not a read passes only with one of the file's tokens: none
    /// is 401, anything else 403 — whatever the path, the liveness paths included.
    #[test]
    fn changes_need_a_token_of_the_file(method in method().prop_filter("not a read", |m| !matches!(m, Method::Get | Method::Head)), path in "/[a-z/_]{0,40}", presented in "[ -~]{0,80}", protect in any::<bool>()) {
        let tokens = tokens();
        prop_assert_eq!(decide(Some(&tokens), protect, method, &path, None), Decision::Unauthenticated);
        prop_assert_eq!(decide(Some(&tokens), protect, method, &path, Some(GOOD)), Decision::Allow);
        prop_assert_eq!(decide(Some(&tokens), protect, method, &path, Some(OLD)), Decision::Allow);
        let expected = if presented == GOOD || presented == OLD { Decision::Allow } else { Decision::Forbidden };
        prop_assert_eq!(decide(Some(&tokens), protect, method, &path, Some(&presented)), expected);
    }

    /// Reads pass without `protect_reads`; with it they need a token like changes do, except
    /// the liveness paths.
    #[test]
    fn reads_are_open_unless_protected(read in prop_oneof![Just(Method::Get), Just(Method::Head)], path in "/[a-z/_]{0,40}") {
        let tokens = tokens();
        prop_assert_eq!(decide(Some(&tokens), false, read, &path, None), Decision::Allow);
        let protected = decide(Some(&tokens), true, read, &path, None);
        let expected = if ALWAYS_OPEN.contains(&path.as_str()) { Decision::Allow } else { Decision::Unauthenticated };
        prop_assert_eq!(protected, expected);
        prop_assert_eq!(decide(Some(&tokens), true, read, &path, Some("wrong-token-wrong-token-wrong-token")), if expected == Decision::Allow { Decision::Allow } else { Decision::Forbidden });
    }

    /// A token that differs from ours in any one byte, or is a prefix or extension of it, is refused.
    #[test]
    fn near_misses_are_refused(index in 0..GOOD.len(), byte in 0x21u8..0x7f, cut in 0..GOOD.len()) {
        let tokens = tokens();
        let mut changed = GOOD.as_bytes().to_vec();
        prop_assume!(changed[index] != byte);
        changed[index] = byte;
        prop_assert!(!tokens.accepts(std::str::from_utf8(&changed).unwrap()));
        prop_assert!(!tokens.accepts(&GOOD[..cut]));
        let longer = format!("{GOOD}x");
        prop_assert!(!tokens.accepts(&longer));
    }
}

#[test]
fn the_first_token_is_sent_and_healthz_stays_open() {
    assert_eq!(tokens().sent(), GOOD);
    assert_eq!(decide(Some(&tokens()), true, Method::Get, "/healthz", None), Decision::Allow);
    assert_eq!(decide(Some(&tokens()), true, Method::Post, "/healthz", None), Decision::Unauthenticated);
    assert_eq!(format!("{:?}", tokens()), "ApiTokens(2 redacted)", "a token never reaches a log line");
}

#[test]
fn token_files_are_checked_for_shape_and_mode() {
    assert_eq!(ApiTokens::parse("# nothing\n\n"), Err(ParseError::Empty));
    assert_eq!(ApiTokens::parse("short\n"), Err(ParseError::BadToken { line: 1 }));
    assert_eq!(
        ApiTokens::parse(&format!("{GOOD}\nwith space in it 0123456789abcdef0123\n")),
        Err(ParseError::BadToken { line: 2 })
    );
    assert_eq!(ApiTokens::parse(&"a".repeat(257)), Err(ParseError::BadToken { line: 1 }));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{GOOD}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = ApiTokens::read(&path).expect_err("world-readable");
    assert!(matches!(error, TokenFileError::OpenToOthers { mode: 0o644, .. }), "{error}");
    assert!(error.to_string().contains("0640"), "{error}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(ApiTokens::read(&path).expect("0640 is fine").sent(), GOOD);
    let missing = ApiTokens::read(&dir.path().join("missing")).expect_err("missing");
    assert!(matches!(missing, TokenFileError::Read { .. }), "{missing}");
}

#[test]
fn a_created_token_file_is_private_fresh_and_never_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    assert!(create_token_file(&path, None).expect("create"));
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let first = ApiTokens::read(&path).expect("the daemon accepts what it wrote");
    assert_eq!(first.sent().len(), 64);
    assert!(!create_token_file(&path, None).expect("exists"), "an existing token is kept");
    assert_eq!(ApiTokens::read(&path).expect("read").sent(), first.sent());
    let other = dir.path().join("other");
    create_token_file(&other, None).expect("create");
    assert_ne!(ApiTokens::read(&other).expect("read").sent(), first.sent(), "every token is fresh");
}
