//! Leader election against a real ZooKeeper: members in this process and as separate processes,
//! with stops, kills, pauses, session expiry, priorities and corrupt data. Every scenario records
//! each member's events with wall-clock stamps and asserts on them (never two leaders at once).

mod election;
mod faults;
mod fixture;
mod session;
