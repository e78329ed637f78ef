//! The one integration-test binary: every scenario against real components lives in a module here.

mod quorum;
mod zk_harness;
