//! Load balancing of a service's streams across its endpoints (issue 6).
//!
//! For now only the pure machines: [`strategy`] picks an endpoint for a new stream,
//! [`health`] turns health-check results into up/down verdicts. The Balancer actor,
//! which owns them, runs the checks and fails over, comes later.

pub mod health;
pub mod strategy;

// TEMPORARY stand-in for the Balancer actor being built on branch `balancer`.
#[allow(missing_docs, clippy::missing_docs_in_private_items)]
mod stub {
    use actix::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    #[derive(Debug, Default)]
    pub struct EndpointRow(AtomicU64, AtomicU64);
    impl EndpointRow {
        pub fn add_in(&self, n: u64) {
            self.0.fetch_add(n, Relaxed);
        }
        pub fn add_out(&self, n: u64) {
            self.1.fetch_add(n, Relaxed);
        }
    }
    #[derive(Debug)]
    pub struct Lease {
        pub address: String,
        pub row: Arc<EndpointRow>,
    }
    impl Lease {
        pub fn address(&self) -> &str {
            &self.address
        }
        pub fn row(&self) -> &Arc<EndpointRow> {
            &self.row
        }
    }
    pub struct Connected {
        pub socket: tokio::net::TcpStream,
        pub lease: Lease,
    }
    #[derive(Debug)]
    pub struct ConnectError {
        pub code: crate::ErrorCode,
        pub message: String,
    }
    #[derive(Message)]
    #[rtype(result = "Result<Connected, ConnectError>")]
    pub struct Connect;
    #[derive(Debug)]
    pub struct Balancer {
        pub address: String,
    }
    impl Actor for Balancer {
        type Context = Context<Self>;
    }
    impl actix::Supervised for Balancer {}
    #[derive(Clone)]
    pub struct Settings {
        pub address: String,
    }
    impl Settings {
        pub fn for_service(s: &sssonector_config::Service, _: &sssonector_config::Config) -> Self {
            Self {
                address: s
                    .endpoints
                    .first()
                    .map(|e| e.address.get().to_string())
                    .unwrap_or_default(),
            }
        }
    }
    impl Balancer {
        pub fn new(_: String, settings: Settings, _: Arc<()>, _: slog::Logger) -> Self {
            Self {
                address: settings.address,
            }
        }
    }
    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Reconfigure(pub Settings);
    impl Handler<Reconfigure> for Balancer {
        type Result = ();
        fn handle(&mut self, m: Reconfigure, _: &mut Context<Self>) {
            self.address = m.0.address;
        }
    }
    impl Handler<Connect> for Balancer {
        type Result = ResponseFuture<Result<Connected, ConnectError>>;
        fn handle(&mut self, _: Connect, _: &mut Context<Self>) -> Self::Result {
            let address = self.address.clone();
            Box::pin(async move {
                let socket = tokio::net::TcpStream::connect(&address)
                    .await
                    .map_err(|e| ConnectError {
                        code: crate::ErrorCode::Connect,
                        message: e.to_string(),
                    })?;
                Ok(Connected {
                    socket,
                    lease: Lease {
                        address,
                        row: Arc::default(),
                    },
                })
            })
        }
    }
}
pub use stub::*;
