//! The tunnel between two daemons. `tls` builds the mutually authenticated rustls
//! configurations both ends use; the frame codec and session handshake join it with
//! the layer-3 tunnel.

pub mod tls;
