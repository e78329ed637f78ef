//! One look at a watched process's port: a connect, and when the kernel accepts it, the connection
//! held until it ends. Shared by the crash detector (the leader's dispatcher port) and the
//! leader's watch over its runners (each runner's port); what a look proves is `verdict.rs`'s.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::verdict::Probe;

/// How long a held connection's read waits before the watcher asks whether to keep holding it.
const HOLD_POLL: Duration = Duration::from_millis(50);

/// How long a connect may take before it counts as no answer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Connects to `address` and holds the connection until it ends (`Ended`), or until
/// `keep_holding` (asked every [`HOLD_POLL`]) says no (`Answered`). A refused connect is
/// `Refused`; any other failure `NoAnswer`.
pub(crate) fn look(address: SocketAddr, mut keep_holding: impl FnMut() -> bool) -> Probe {
    let mut stream = match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(_) => return Probe::NoAnswer,
    };
    if stream.set_read_timeout(Some(HOLD_POLL)).is_err() {
        return Probe::Answered;
    }
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Probe::Ended,
            // The server sends nothing unasked; whatever it is, the process lives.
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !keep_holding() {
                    return Probe::Answered;
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Probe::Ended,
        }
    }
}
