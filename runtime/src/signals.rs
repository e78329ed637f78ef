//! Signal handling that only sets an atomic flag, for the supervisor to read.
