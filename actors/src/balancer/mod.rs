//! Load balancing of a service's streams across its endpoints (issue 6).
//!
//! For now only the pure machines: [`strategy`] picks an endpoint for a new stream,
//! [`health`] turns health-check results into up/down verdicts. The Balancer actor,
//! which owns them, runs the checks and fails over, comes later.

pub mod health;
pub mod strategy;
