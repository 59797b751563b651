//! The tunnel between two daemons. `tls` builds the mutually authenticated rustls
//! configurations both ends use; `codec` is the frame format spoken inside the TLS
//! stream (protocol version 1).

pub mod codec;
pub mod tls;
