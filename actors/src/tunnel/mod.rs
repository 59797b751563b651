//! The tunnel between two daemons. `tls` builds the mutually authenticated rustls
//! configurations both ends use; `codec` is the frame format spoken inside the TLS
//! stream (protocol version 1); `session` is the Hello/Accept handshake and the
//! server's decision; `handshake` its I/O; `hub` the per-packet path between the TUN
//! device and the sessions; `stats` the counters; `access` the access-control
//! decisions (allow lists, layer-3 destinations); `refusal` what a refused peer is
//! told and what the audit log is told; `write_queue` the buffers waiting for a
//! socket.

pub mod access;
pub mod busy;
pub mod codec;
pub mod compress;
pub mod handshake;
pub mod hub;
pub mod record;
pub mod refusal;
pub mod session;
pub mod stats;
pub mod tls;
pub mod write_queue;
