//! The session handshake that follows TLS: the client's `Hello`, the server's `Accept`
//! or `Reject`, and the server's decision between them. Pure: no I/O, no clock.
//!
//! The payloads are JSON inside the codec's Hello/Accept/Reject frames, so a newer
//! peer can add fields an older one ignores. A client asks for its inner address (its
//! `network.address`); the server accepts it only when it lies inside the server's
//! subnet, is neither the server's own nor the subnet's network or broadcast address,
//! is allowed for the client's certificate name (`security.client_addresses`) and is
//! not held by another live session.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::codec;
use super::compress::Algorithm;
use crate::error::ErrorCode;

/// The client's opening message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks ([`codec::VERSION`]).
    pub version: u8,
    /// The inner address the client wants (its `network.address`).
    pub address: IpAddr,
    /// What the client can do.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Optional features a peer supports; the session uses those both sides have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Takes `Gso` frames: its TUN device accepts offloaded superpackets.
    #[serde(default)]
    pub gso: bool,
    /// Compression algorithms it can decode, by name (`lz4`, `zstd`).
    #[serde(default)]
    pub compression: Vec<String>,
    /// The largest frame payload it reads, in bytes; protocol version 1's limit
    /// ([`codec::MAX_PAYLOAD`]) when not said.
    #[serde(default = "max_payload")]
    pub max_payload: u32,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            gso: false,
            compression: Vec::new(),
            max_payload: max_payload(),
        }
    }
}

fn max_payload() -> u32 {
    codec::MAX_PAYLOAD as u32
}

/// The payload of the largest `Gso` frame: a 64 KiB IP packet and its header. A
/// peer that reads less gets plain packets.
pub const GSO_PAYLOAD: u32 = codec::VNET_HDR as u32 + 65_535;

/// The server's acceptance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// Protocol version of the session.
    pub version: u8,
    /// The address the client now holds.
    pub address: IpAddr,
    /// The server's own inner address.
    pub server_address: IpAddr,
    /// Whether both sides send `Gso` frames.
    pub gso: bool,
    /// The compression both sides use, if any.
    #[serde(default)]
    pub compression: Option<String>,
    /// The largest frame payload either side sends: the smaller of what both read.
    #[serde(default = "max_payload")]
    pub max_payload: u32,
}

/// The server's refusal: a stable code the client logs, and a reason for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// A stable error code, e.g. `E_ADDRESS_IN_USE`.
    pub code: String,
    /// What was wrong.
    pub reason: String,
}

/// Why the server refuses a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// Said for people, and sent to the client.
    pub reason: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: String) -> Self {
        Self { code, reason }
    }

    /// The `Reject` payload for the client.
    pub fn to_reject(&self) -> Reject {
        Reject {
            code: self.code.as_str().to_string(),
            reason: self.reason.clone(),
        }
    }
}

/// What the server allows, from its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The server's own address and the subnet clients live in.
    pub subnet: IpNet,
    /// Addresses each certificate name may claim; a name without an entry may claim
    /// any free address of the subnet.
    pub by_name: BTreeMap<String, Vec<IpNet>>,
    /// Whether this server's TUN takes offloaded superpackets.
    pub gso: bool,
    /// The compression this server uses with clients that offer it.
    pub compression: Option<Algorithm>,
    /// The TUN MTU: a client must read frames carrying packets this large.
    pub mtu: u32,
}

impl Policy {
    /// Accepts or refuses `hello` from the certificate `name`; `in_use` tells whether
    /// an address is held by a live session.
    ///
    /// # Errors
    /// A [`Refusal`] with `E_PROTOCOL` for another protocol version or frames too
    /// small for packets of the MTU, `E_BAD_ADDRESS`
    /// for an address outside the subnet, reserved, or not allowed for `name`, and
    /// `E_ADDRESS_IN_USE` for one another session holds.
    pub fn decide(
        &self,
        hello: &Hello,
        name: &str,
        in_use: impl Fn(IpAddr) -> bool,
    ) -> Result<Accept, Refusal> {
        if hello.version != codec::VERSION {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!(
                    "protocol version {} not supported, this server speaks {}",
                    hello.version,
                    codec::VERSION
                ),
            ));
        }
        let max_payload = hello.capabilities.max_payload.min(max_payload());
        if max_payload < self.mtu {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!(
                    "frames of {max_payload} bytes cannot carry packets of the MTU, {}",
                    self.mtu
                ),
            ));
        }
        let addr = hello.address;
        let bad = |why: &str| {
            Err(Refusal::new(
                ErrorCode::BadAddress,
                format!("inner address {addr} {why}"),
            ))
        };
        if !self.subnet.contains(&addr) {
            return bad(&format!("is outside the subnet {}", self.subnet.trunc()));
        }
        if addr == self.subnet.addr() {
            return bad("is the server's own");
        }
        let reserved = addr == self.subnet.network()
            || (matches!(addr, IpAddr::V4(_))
                && self.subnet.prefix_len() < 31
                && addr == self.subnet.broadcast());
        if reserved {
            return bad("is the subnet's network or broadcast address");
        }
        if let Some(allowed) = self.by_name.get(name) {
            if !allowed.iter().any(|net| net.contains(&addr)) {
                return bad(&format!("is not allowed for {name:?}"));
            }
        }
        if in_use(addr) {
            return Err(Refusal::new(
                ErrorCode::AddressInUse,
                format!("inner address {addr} is held by another session"),
            ));
        }
        Ok(Accept {
            version: codec::VERSION,
            address: addr,
            server_address: self.subnet.addr(),
            gso: self.gso && hello.capabilities.gso && max_payload >= GSO_PAYLOAD,
            compression: self
                .compression
                .filter(|a| {
                    hello
                        .capabilities
                        .compression
                        .iter()
                        .any(|n| n == a.as_str())
                })
                .map(|a| a.as_str().to_string()),
            max_payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            subnet: "10.9.0.1/24".parse().expect("cidr"),
            by_name: BTreeMap::from([(
                "pinned".to_string(),
                vec!["10.9.0.50/32".parse().expect("cidr")],
            )]),
            gso: true,
            compression: Some(Algorithm::Lz4),
            mtu: 1500,
        }
    }

    fn hello(addr: &str, gso: bool) -> Hello {
        Hello {
            version: codec::VERSION,
            address: addr.parse().expect("ip"),
            capabilities: Capabilities {
                gso,
                ..Capabilities::default()
            },
        }
    }

    #[test]
    fn a_free_address_in_the_subnet_is_accepted_with_common_capabilities() {
        let p = policy();
        let a = p
            .decide(&hello("10.9.0.2", true), "c1", |_| false)
            .expect("accepted");
        assert_eq!(a.address, "10.9.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!(a.server_address, "10.9.0.1".parse::<IpAddr>().expect("ip"));
        assert!(a.gso);
        let a = p
            .decide(&hello("10.9.0.2", false), "c1", |_| false)
            .expect("accepted");
        assert!(!a.gso, "gso only when both sides take it");
    }

    #[test]
    fn compression_is_used_only_when_the_client_offers_the_servers_algorithm() {
        let p = policy();
        let offer = |names: &[&str]| {
            let mut h = hello("10.9.0.2", true);
            h.capabilities.compression = names.iter().map(|n| n.to_string()).collect();
            p.decide(&h, "c1", |_| false).expect("accepted").compression
        };
        assert_eq!(offer(&["lz4"]), Some("lz4".to_string()));
        assert_eq!(offer(&["zstd", "lz4"]), Some("lz4".to_string()));
        assert_eq!(offer(&["zstd"]), None);
        assert_eq!(offer(&[]), None);
        let none = Policy {
            compression: None,
            ..policy()
        };
        let mut h = hello("10.9.0.2", true);
        h.capabilities.compression = vec!["lz4".into()];
        assert_eq!(
            none.decide(&h, "c1", |_| false).expect("ok").compression,
            None
        );
    }

    #[test]
    fn the_frame_size_is_the_smaller_and_small_frames_mean_no_superpackets() {
        let p = policy();
        let with = |max: u32| {
            let mut h = hello("10.9.0.2", true);
            h.capabilities.max_payload = max;
            p.decide(&h, "c1", |_| false)
        };
        let a = with(u32::MAX).expect("accepted");
        assert_eq!((a.max_payload, a.gso), (max_payload(), true));
        let a = with(GSO_PAYLOAD).expect("accepted");
        assert_eq!((a.max_payload, a.gso), (GSO_PAYLOAD, true));
        let a = with(16_384).expect("accepted");
        assert_eq!((a.max_payload, a.gso), (16_384, false));
        assert_eq!(with(1499).expect_err("refused").code, ErrorCode::Protocol);
        // A Hello that says nothing reads version 1's frames.
        let h: Hello =
            serde_json::from_str(r#"{"version":1,"address":"10.9.0.3"}"#).expect("parses");
        assert_eq!(h.capabilities.max_payload, max_payload());
    }

    #[test]
    fn refusals_carry_their_codes() {
        let p = policy();
        let table = [
            ("10.8.0.2", "c1", ErrorCode::BadAddress),
            ("10.9.0.1", "c1", ErrorCode::BadAddress),
            ("10.9.0.0", "c1", ErrorCode::BadAddress),
            ("10.9.0.255", "c1", ErrorCode::BadAddress),
            ("10.9.0.2", "pinned", ErrorCode::BadAddress),
            ("10.9.0.7", "c1", ErrorCode::AddressInUse),
        ];
        for (addr, name, code) in table {
            let got = p
                .decide(&hello(addr, true), name, |a| a.to_string() == "10.9.0.7")
                .expect_err("refused");
            assert_eq!(got.code, code, "{addr} for {name}: {}", got.reason);
        }
        assert!(p
            .decide(&hello("10.9.0.50", true), "pinned", |_| false)
            .is_ok());
        let mut old = hello("10.9.0.2", true);
        old.version = 9;
        let got = p.decide(&old, "c1", |_| false).expect_err("refused");
        assert_eq!(got.code, ErrorCode::Protocol);
    }

    #[test]
    fn hello_json_ignores_unknown_fields_and_defaults_capabilities() {
        let h: Hello = serde_json::from_str(r#"{"version":1,"address":"10.9.0.3","future":true}"#)
            .expect("parses");
        assert_eq!(h.capabilities, Capabilities::default());
    }
}
