//! Unit tests of the task database's pure parts: cache key encoding, list filters, sizes.
