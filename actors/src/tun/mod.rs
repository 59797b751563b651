//! The TUN device: created from `network` (name, address, MTU, routes), brought up,
//! and removed with everything added to it when the daemon stops.
//!
//! The device is opened with offloads (`IFF_VNET_HDR` and `TUNSETOFFLOAD` for TCP
//! segmentation and checksums) through `tun-rs`, chosen over the `tun` crate because
//! it has them: the kernel then hands out TCP superpackets of up to 64 KiB per read
//! and takes them per write, which removes most per-packet system calls and wakeups
//! from the data path. A kernel that refuses offloads gets a plain device.
//!
//! [`TunAdapter`] is the actor owning the device and its routes. It starts the hub's
//! reader task and, when stopped, cancels it, deletes the routes it added and closes
//! the device, which makes the kernel remove the interface.

use std::process::Command;
use std::sync::Arc;

use actix::prelude::*;
use ipnet::IpNet;
use slog::{error, info, warn, Logger};
use sssonector_config::Network;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::drain::DrainToken;
use crate::error::ErrorCode;
use crate::tunnel::busy::BusyPoll;
use crate::tunnel::hub::{self, Hub};
use crate::tunnel::stats::Stats;

/// Why the TUN device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// `network.address` is missing (validation normally catches this).
    #[error("network.address is not set")]
    NoAddress,
    /// An interface of that name exists already.
    #[error("interface {0} exists already: choose another network.interface")]
    NameTaken(String),
    /// The kernel refused (permissions, no /dev/net/tun, bad name).
    #[error("cannot create interface {name}: {source}{hint}")]
    Create {
        /// The interface.
        name: String,
        /// What the kernel said.
        source: std::io::Error,
        /// Advice for the usual cause.
        hint: &'static str,
    },
    /// A route could not be added.
    #[error("cannot add route {net} via {name}: {message}")]
    Route {
        /// The network.
        net: IpNet,
        /// The interface.
        name: String,
        /// What `ip route` said.
        message: String,
    },
}

/// An open TUN device.
pub struct Tun {
    /// The device.
    pub device: Arc<AsyncDevice>,
    /// Its name.
    pub name: String,
    /// Its address and prefix.
    pub address: IpNet,
    /// Whether it has offloads (`virtio_net_hdr` on every read and write).
    pub offload: bool,
}

/// Creates and brings up the interface `network` describes. Must run inside the
/// tokio runtime that will drive the device.
///
/// # Errors
/// [`TunError`] (`E_TUN`) when the name is taken or the kernel refuses.
pub fn open(network: &Network) -> Result<Tun, TunError> {
    let address = *network
        .address
        .as_ref()
        .map(|a| a.get())
        .ok_or(TunError::NoAddress)?;
    let name = network.interface.clone();
    if std::path::Path::new("/sys/class/net").join(&name).exists() {
        return Err(TunError::NameTaken(name));
    }
    let mtu = u16::try_from(network.mtu).unwrap_or(u16::MAX);
    let build = |offload: bool| {
        let b = DeviceBuilder::new()
            .name(&name)
            .mtu(mtu)
            .offload(offload)
            .enable(false);
        let b = match address {
            IpNet::V4(n) => b.ipv4(n.addr(), n.prefix_len(), None),
            IpNet::V6(n) => b.ipv6(n.addr(), n.prefix_len()),
        };
        b.build_async()
    };
    let (device, offload) = match build(true) {
        Ok(d) => (d, true),
        Err(first) => match build(false) {
            Ok(d) => (d, false),
            Err(_) => {
                let hint = match first.raw_os_error() {
                    Some(1) => " (needs root or CAP_NET_ADMIN)",
                    Some(2) | Some(19) => " (no /dev/net/tun: load the tun module)",
                    Some(16) => " (the name is in use)",
                    _ => "",
                };
                return Err(TunError::Create {
                    name,
                    source: first,
                    hint,
                });
            }
        },
    };
    no_link_local(&name);
    device.enabled(true).map_err(|source| TunError::Create {
        name: name.clone(),
        source,
        hint: "",
    })?;
    Ok(Tun {
        device: Arc::new(device),
        name,
        address,
        offload,
    })
}

/// Turns off IPv6 link-local addresses on `name` before it comes up: the kernel would
/// otherwise send duplicate address detection, router solicitations and MLD reports
/// from one into the tunnel, which no session routes (counted as `no_route` drops at
/// every start). Routing by inner address needs no link-local address. Best effort:
/// a kernel without IPv6 has no such setting.
fn no_link_local(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1");
}

/// Adds (or replaces) a route to `net` through `name`.
///
/// # Errors
/// [`TunError::Route`] with what `ip` said.
pub fn add_route(name: &str, net: IpNet) -> Result<(), TunError> {
    let out = Command::new("ip")
        .args(["route", "replace", &net.trunc().to_string(), "dev", name])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(TunError::Route {
            net,
            name: name.to_string(),
            message: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }),
        Err(e) => Err(TunError::Route {
            net,
            name: name.to_string(),
            message: format!("cannot run ip: {e}"),
        }),
    }
}

fn delete_route(name: &str, net: IpNet) {
    let _ = Command::new("ip")
        .args(["route", "del", &net.trunc().to_string(), "dev", name])
        .output();
}

/// The actor owning the TUN device, its routes and the hub's reader task.
pub struct TunAdapter {
    hub: Arc<Hub>,
    name: String,
    routes: Vec<IpNet>,
    runtime: Handle,
    cancel: CancellationToken,
    /// The reader task was spawned: a restart (which runs `started` again) must not
    /// spawn a second one.
    reading: bool,
    log: Logger,
    _drain: Option<DrainToken>,
}

impl TunAdapter {
    /// Opens the device for `network` on `runtime` and builds the hub around it.
    ///
    /// # Errors
    /// `E_TUN` when the device or a route cannot be set up.
    pub fn new(
        network: &Network,
        runtime: Handle,
        stats: Arc<Stats>,
        busy: Arc<BusyPoll>,
        log: Logger,
        drain: Option<DrainToken>,
    ) -> crate::Result<Self> {
        let tun = {
            let _enter = runtime.enter();
            open(network)?
        };
        info!(log, "interface up";
            "interface" => &tun.name, "address" => %tun.address,
            "mtu" => network.mtu, "offload" => tun.offload);
        let mut added = Vec::new();
        for net in network.routes.iter().map(|r| *r.get()) {
            add_route(&tun.name, net)?;
            added.push(net);
        }
        let hub = Arc::new(Hub::new(tun.device, tun.offload, stats, busy));
        Ok(Self {
            hub,
            name: tun.name,
            routes: added,
            runtime,
            cancel: CancellationToken::new(),
            reading: false,
            log,
            _drain: drain,
        })
    }

    /// The hub, for the Listener or Dialer.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }
}

impl Actor for TunAdapter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.reading, true) {
            return;
        }
        let hub = self.hub.clone();
        let cancel = self.cancel.clone();
        let task = self.runtime.spawn(hub::tun_reader(hub, cancel));
        let log = self.log.clone();
        ctx.spawn(
            async move {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        error!(log, "tun read failed"; "code" => ErrorCode::Tun, "error" => %e)
                    }
                    Err(e) => error!(log, "tun reader ended"; "code" => ErrorCode::Internal, "error" => %e),
                }
            }
            .into_actor(self),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.cancel.cancel();
        for net in self.routes.drain(..) {
            delete_route(&self.name, net);
        }
        info!(self.log, "interface down"; "interface" => &self.name);
    }
}

/// Nothing to rebuild: the reader task runs on the data runtime, the routes stay.
impl Supervised for TunAdapter {}

crate::supervise::panic_on_fault!(TunAdapter);

/// Stop the adapter (the daemon is stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for TunAdapter {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Apply a new route list (reload): adds the new, deletes the gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRoutes(pub Vec<IpNet>);

impl Handler<SetRoutes> for TunAdapter {
    type Result = ();
    fn handle(&mut self, msg: SetRoutes, _: &mut Context<Self>) {
        for net in self.routes.clone() {
            if !msg.0.contains(&net) {
                delete_route(&self.name, net);
                self.routes.retain(|n| *n != net);
            }
        }
        for net in msg.0 {
            if self.routes.contains(&net) {
                continue;
            }
            match add_route(&self.name, net) {
                Ok(()) => self.routes.push(net),
                Err(e) => {
                    warn!(self.log, "route not added"; "code" => ErrorCode::Tun, "error" => %e)
                }
            }
        }
    }
}
