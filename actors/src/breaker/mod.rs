//! Circuit breakers, one per endpoint (issue 6).
//!
//! For now only the pure machine: [`machine`] decides closed / open / half-open. The
//! Breaker actor, which owns one and serves `ctl breakers` and `breaker.reset`, comes
//! later.

pub mod machine;
