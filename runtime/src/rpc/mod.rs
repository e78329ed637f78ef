//! RPC servers over HTTP/1.1 with JSON bodies and fbthrift's ordered, idempotent start-up and tear-down; being built.
