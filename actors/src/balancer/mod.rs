//! Load balancing of a service's streams across its endpoints (issue 6).
//!
//! For now only the pure machine: [`strategy`] picks an endpoint for a new stream.
//! The Balancer actor, which owns it, runs the health checks and fails over, comes
//! later.

pub mod strategy;
