//! Counts process exits in a small memory-mapped file so a daemon can tell it has exited too often recently.
pub struct ExitCounter;
