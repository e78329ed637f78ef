//! `may`'s IO pool as the servers need it: unpinned workers, stacks of at least `IO_STACK_SIZE`.

use std::sync::Once;

/// Stack of every `may` coroutine (connections run handlers on theirs), in bytes.
pub const IO_STACK_SIZE: usize = 128 * 1024;

/// Configures `may`'s worker pool for the servers, once per process: workers are not pinned
/// to CPUs (the machines are shared), and coroutine stacks are at least `IO_STACK_SIZE`. Call
/// it early (before anything spawns a `may` coroutine); `Server::setup` calls it too.
pub fn configure_io_pool() {
    static CONFIGURE: Once = Once::new();
    CONFIGURE.call_once(|| {
        let config = may::config();
        config.set_worker_pin(false);
        let words = IO_STACK_SIZE / std::mem::size_of::<usize>();
        if config.get_stack_size() < words {
            config.set_stack_size(words);
        }
    });
}
