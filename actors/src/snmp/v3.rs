//! SNMPv3 messages with the User-based Security Model, the agent being the
//! authoritative engine (RFC 3412 §7.2, RFC 3414 §3.1 and §3.2). Pure apart from the
//! engine's clock: [`Usm::open`] turns a datagram into a [`Request`] or says which
//! usmStats counter refused it and what report to send; [`Usm::seal`] builds the
//! authPriv response, and [`Usm::seal_trap`] a notification.
//!
//! Users must use authPriv: a request at a lower level is answered with an
//! usmStatsUnsupportedSecLevels report, so `snmpget -l authNoPriv` says why it fails.
//!
//! The MAC covers the whole message with its own field zero-filled (RFC 3414 §6.3.1).
//! rasn gives the field's value, not its place, so both directions locate it in the
//! encoded bytes: the security parameters are an OCTET STRING found verbatim in the
//! message, and the MAC is the last occurrence of its value inside them (only the
//! privacy parameters follow it). A wrong place can only fail verification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use arc_swap::ArcSwap;
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v1::Counter;
use rasn_smi::v2::{ApplicationSyntax, ObjectSyntax};
use rasn_snmp::v2::{Pdu, Pdus, Report, VarBind, VarBindValue};
use rasn_snmp::v3::{HeaderData, Message, ScopedPdu, ScopedPduData, USMSecurityParameters};
use sssonector_config::SnmpUser;

use super::usm::{self, Auth, Engine, LocalKeys, Salt, PRIV_PARAMS_LEN};

/// msgFlags bits (RFC 3412 §6.4).
const FLAG_AUTH: u8 = 0x01;
const FLAG_PRIV: u8 = 0x02;
const FLAG_REPORTABLE: u8 = 0x04;
/// msgSecurityModel of USM (RFC 3411).
const USM_MODEL: u32 = 3;
/// The largest message we accept, as msgMaxSize of what we send (RFC 3417 UDP limit).
pub const MAX_MESSAGE: u32 = 65_507;
/// Smallest msgMaxSize a sender may state (RFC 3412 §6.3).
const MIN_MAX_SIZE: u32 = 484;

/// usmStats (SNMP-USER-BASED-SM-MIB, 1.3.6.1.6.3.15.1.1): why USM refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// usmStatsUnsupportedSecLevels: the user does not work at the level asked.
    UnsupportedSecLevel = 1,
    /// usmStatsNotInTimeWindows: replay protection (boots or time off).
    NotInTimeWindow = 2,
    /// usmStatsUnknownUserNames.
    UnknownUserName = 3,
    /// usmStatsUnknownEngineIDs: also how a manager discovers our engine ID.
    UnknownEngineId = 4,
    /// usmStatsWrongDigests: the MAC does not verify (wrong password).
    WrongDigest = 5,
    /// usmStatsDecryptionErrors.
    DecryptionError = 6,
}

impl Refusal {
    /// The usmStats counter's OID, without the `.0` instance.
    pub fn oid(self) -> [u32; 10] {
        [1, 3, 6, 1, 6, 3, 15, 1, 1, self as u32]
    }

    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnsupportedSecLevel => "unsupported_sec_level",
            Refusal::NotInTimeWindow => "not_in_time_window",
            Refusal::UnknownUserName => "unknown_user",
            Refusal::UnknownEngineId => "unknown_engine_id",
            Refusal::WrongDigest => "wrong_digest",
            Refusal::DecryptionError => "decryption_error",
        }
    }
}

/// What became of a datagram USM did not accept.
#[derive(Debug)]
pub enum Rejected {
    /// Not a v3/USM message we can read: counted as a parse error, dropped.
    Malformed(&'static str),
    /// Refused by USM: counted; `report` is the message to send back, if any (only
    /// when the sender asked for reports).
    Refused {
        /// Which check failed.
        why: Refusal,
        /// The Report message.
        report: Option<Vec<u8>>,
    },
}

/// An authenticated, decrypted request.
#[derive(Debug)]
pub struct Request {
    /// msgID, echoed in the response.
    pub msg_id: Integer,
    /// The largest response the sender accepts.
    pub max_size: usize,
    /// msgUserName.
    pub user: Vec<u8>,
    /// contextEngineID, contextName and the PDU.
    pub scoped: ScopedPdu,
}

/// One user's localized keys.
struct User {
    auth: Auth,
    keys: LocalKeys,
}

/// The USM engine: our engine ID, boots and time, the users' keys (swapped whole on
/// reload) and the usmStats counters.
pub struct Usm {
    engine: Engine,
    users: ArcSwap<HashMap<Vec<u8>, User>>,
    salt: Salt,
    refused: [AtomicU32; 6],
    /// msgID of the next notification.
    next_msg_id: AtomicU32,
}

impl Usm {
    /// USM for `engine` and `users` (keys localized now: 1 MiB of hashing per
    /// password, RFC 3414 A.2).
    pub fn new(engine: Engine, users: &[SnmpUser]) -> Self {
        let usm = Self {
            engine,
            users: ArcSwap::from_pointee(HashMap::new()),
            salt: Salt::new(),
            refused: Default::default(),
            next_msg_id: AtomicU32::new(1),
        };
        usm.set_users(users);
        usm
    }

    /// Replaces the users, for a reload; requests in flight keep the old set.
    pub fn set_users(&self, users: &[SnmpUser]) {
        let engine_id = self.engine.id();
        let table = users
            .iter()
            .map(|u| {
                let auth = Auth::from(u.auth_protocol);
                let keys = LocalKeys::new(
                    auth,
                    u.auth_password.expose().as_bytes(),
                    u.priv_password.expose().as_bytes(),
                    engine_id,
                );
                (u.name.as_bytes().to_vec(), User { auth, keys })
            })
            .collect();
        self.users.store(std::sync::Arc::new(table));
    }

    /// The engine: ID, boots, time.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// usmStats counters, in [`Refusal`] order (1 to 6).
    pub fn refused(&self) -> [u32; 6] {
        std::array::from_fn(|i| self.refused[i].load(Relaxed))
    }

    /// Checks and opens a v3 message (RFC 3414 §3.2).
    ///
    /// # Errors
    /// [`Rejected`] says why and carries the report to send.
    pub fn open(&self, datagram: &[u8], msg: Message) -> Result<Request, Rejected> {
        if msg.version != Integer::from(3) {
            return Err(Rejected::Malformed("bad_version"));
        }
        let header = &msg.global_data;
        let flags = match header.flags.as_ref() {
            [f] => *f,
            _ => return Err(Rejected::Malformed("bad_flags")),
        };
        if header.security_model != Integer::from(USM_MODEL) {
            return Err(Rejected::Malformed("unknown_security_model"));
        }
        if flags & FLAG_PRIV != 0 && flags & FLAG_AUTH == 0 {
            return Err(Rejected::Malformed("bad_flags"));
        }
        let max_size = u32::try_from(&header.max_size)
            .ok()
            .filter(|n| (MIN_MAX_SIZE..=i32::MAX as u32).contains(n))
            .ok_or(Rejected::Malformed("bad_max_size"))?;
        let Ok(params) = rasn::ber::decode::<USMSecurityParameters>(&msg.security_parameters)
        else {
            return Err(Rejected::Malformed("bad_security_parameters"));
        };
        let reportable = flags & FLAG_REPORTABLE != 0;
        // The request ID, for reports, when it can be read (RFC 3412 §7.1 step 3).
        let request_id = match &msg.scoped_data {
            ScopedPduData::CleartextPdu(s) => request_id(&s.data),
            ScopedPduData::EncryptedPdu(_) => 0,
        };
        let refuse = |why: Refusal, signer: Option<&User>| {
            self.refused[why as usize - 1].fetch_add(1, Relaxed);
            let report = reportable.then(|| {
                self.report(
                    &msg.global_data.message_id,
                    &params,
                    why,
                    request_id,
                    signer,
                )
            });
            Err(Rejected::Refused {
                why,
                report: report.flatten(),
            })
        };
        if params.authoritative_engine_id.as_ref() != self.engine.id() {
            return refuse(Refusal::UnknownEngineId, None);
        }
        let users = self.users.load();
        let Some(user) = users.get(params.user_name.as_ref()) else {
            return refuse(Refusal::UnknownUserName, None);
        };
        if flags & (FLAG_AUTH | FLAG_PRIV) != FLAG_AUTH | FLAG_PRIV {
            return refuse(Refusal::UnsupportedSecLevel, None);
        }
        if !authentic(datagram, &msg.security_parameters, &params, user) {
            return refuse(Refusal::WrongDigest, None);
        }
        let boots = u32::try_from(&params.authoritative_engine_boots).unwrap_or(u32::MAX);
        let time = u32::try_from(&params.authoritative_engine_time).unwrap_or(u32::MAX);
        if !usm::in_time_window(&self.engine, boots, time) {
            // Signed, so the manager can trust our boots and time and resynchronise.
            return refuse(Refusal::NotInTimeWindow, Some(user));
        }
        let ScopedPduData::EncryptedPdu(data) = &msg.scoped_data else {
            return refuse(Refusal::DecryptionError, None);
        };
        let mut plain = data.to_vec();
        if usm::decrypt(
            &user.keys.privacy,
            boots,
            time,
            &params.privacy_parameters,
            &mut plain,
        )
        .is_err()
        {
            return refuse(Refusal::DecryptionError, None);
        }
        // CFB has no padding, but some managers pad to the block size: decode the
        // first value and ignore what follows it.
        let Ok((scoped, _)) = rasn::ber::decode_with_remainder::<ScopedPdu>(&plain) else {
            return refuse(Refusal::DecryptionError, None);
        };
        Ok(Request {
            msg_id: msg.global_data.message_id.clone(),
            max_size: max_size.min(MAX_MESSAGE) as usize,
            user: params.user_name.to_vec(),
            scoped,
        })
    }

    /// The authPriv response to `request` carrying `pdus`.
    pub fn seal(&self, request: &Request, pdus: Pdus) -> Option<Vec<u8>> {
        let users = self.users.load();
        let user = users.get(&request.user)?;
        let scoped = ScopedPdu {
            engine_id: request.scoped.engine_id.clone(),
            name: request.scoped.name.clone(),
            data: pdus,
        };
        self.seal_as(
            request.msg_id.clone(),
            FLAG_AUTH | FLAG_PRIV,
            &request.user,
            Some(user),
            scoped,
        )
    }

    /// An authPriv notification from `user` carrying `pdus` (we are the authoritative
    /// engine of a trap, RFC 3414 §1.5.1): the receiver must know our engine ID.
    pub fn seal_trap(&self, user: &str, pdus: Pdus) -> Option<Vec<u8>> {
        let users = self.users.load();
        let keys = users.get(user.as_bytes())?;
        let scoped = ScopedPdu {
            engine_id: OctetString::from(self.engine.id().to_vec()),
            name: OctetString::from_static(&[]),
            data: pdus,
        };
        let msg_id = Integer::from(self.next_msg_id.fetch_add(1, Relaxed) & 0x7fff_ffff);
        self.seal_as(
            msg_id,
            FLAG_AUTH | FLAG_PRIV,
            user.as_bytes(),
            Some(keys),
            scoped,
        )
    }

    /// A Report PDU for `why`: plain, or signed without privacy when `signer` is set
    /// (notInTimeWindows, RFC 3414 §3.2 step 7b).
    fn report(
        &self,
        msg_id: &Integer,
        params: &USMSecurityParameters,
        why: Refusal,
        request_id: i32,
        signer: Option<&User>,
    ) -> Option<Vec<u8>> {
        let count = self.refused[why as usize - 1].load(Relaxed);
        let oid: Vec<u32> = why.oid().iter().copied().chain([0]).collect();
        let scoped = ScopedPdu {
            engine_id: OctetString::from(self.engine.id().to_vec()),
            name: OctetString::from_static(&[]),
            data: counter_report(request_id, &oid, count),
        };
        let (flags, user) = match signer {
            Some(_) => (FLAG_AUTH, params.user_name.as_ref()),
            None => (0, &[][..]),
        };
        self.seal_as(msg_id.clone(), flags, user, signer, scoped)
    }

    /// Encodes a message from this (authoritative) engine: encrypted when `flags` has
    /// privacy, signed when it has authentication.
    fn seal_as(
        &self,
        msg_id: Integer,
        flags: u8,
        user_name: &[u8],
        user: Option<&User>,
        scoped: ScopedPdu,
    ) -> Option<Vec<u8>> {
        let (boots, time) = (self.engine.boots(), self.engine.time());
        let (scoped_data, privacy) = match user {
            Some(u) if flags & FLAG_PRIV != 0 => {
                let mut bytes = rasn::ber::encode(&scoped).ok()?;
                let salt = usm::encrypt(&u.keys.privacy, boots, time, self.salt.next(), &mut bytes);
                (
                    ScopedPduData::EncryptedPdu(bytes.into()),
                    OctetString::from(salt.to_vec()),
                )
            }
            _ => (
                ScopedPduData::CleartextPdu(scoped),
                OctetString::from_static(&[]),
            ),
        };
        let signer = user.filter(|_| flags & FLAG_AUTH != 0);
        let mac_len = signer.map_or(0, |u| u.auth.mac_len());
        let params = USMSecurityParameters {
            authoritative_engine_id: OctetString::from(self.engine.id().to_vec()),
            authoritative_engine_boots: Integer::from(boots),
            authoritative_engine_time: Integer::from(time),
            user_name: OctetString::from(user_name.to_vec()),
            authentication_parameters: vec![0u8; mac_len].into(),
            privacy_parameters: privacy,
        };
        let blob = rasn::ber::encode(&params).ok()?;
        let msg = Message {
            version: Integer::from(3),
            global_data: HeaderData {
                message_id: msg_id,
                max_size: Integer::from(MAX_MESSAGE),
                flags: OctetString::from(vec![flags]),
                security_model: Integer::from(USM_MODEL),
            },
            security_parameters: blob.clone().into(),
            scoped_data,
        };
        let mut bytes = rasn::ber::encode(&msg).ok()?;
        if let Some(u) = signer {
            // The MAC is followed only by the privacy parameters' TLV (short form).
            let tail = 2 + params.privacy_parameters.len();
            let at = find(&bytes, &blob)? + blob.len() - tail - mac_len;
            let mac = usm::sign(u.auth, &u.keys.auth, &bytes);
            bytes[at..at + mac_len].copy_from_slice(&mac);
        }
        Some(bytes)
    }
}

/// Whether the datagram's MAC verifies with `user`'s key.
fn authentic(datagram: &[u8], blob: &[u8], params: &USMSecurityParameters, user: &User) -> bool {
    let mac = params.authentication_parameters.as_ref();
    if mac.len() != user.auth.mac_len() || params.privacy_parameters.len() != PRIV_PARAMS_LEN {
        return false;
    }
    let Some(start) = find(datagram, blob) else {
        return false;
    };
    let Some(inner) = blob.windows(mac.len()).rposition(|w| w == mac) else {
        return false;
    };
    let mut zeroed = datagram.to_vec();
    zeroed[start + inner..start + inner + mac.len()].fill(0);
    usm::verify(user.auth, &user.keys.auth, &zeroed, mac)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A Report PDU carrying one counter, e.g. the usmStats one that refused a request
/// (RFC 3412 §7.1 step 3).
pub(crate) fn counter_report(request_id: i32, oid: &[u32], count: u32) -> Pdus {
    Pdus::Report(Report(Pdu {
        request_id,
        error_status: Pdu::ERROR_STATUS_NO_ERROR,
        error_index: 0,
        variable_bindings: vec![VarBind {
            name: ObjectIdentifier::new_unchecked(oid.to_vec().into()),
            value: VarBindValue::Value(ObjectSyntax::ApplicationWide(ApplicationSyntax::Counter(
                Counter(count),
            ))),
        }],
    }))
}

/// A request PDU's request-id; 0 for the others.
pub(crate) fn request_id(pdus: &Pdus) -> i32 {
    match pdus {
        Pdus::GetRequest(r) => r.0.request_id,
        Pdus::GetNextRequest(r) => r.0.request_id,
        Pdus::SetRequest(r) => r.0.request_id,
        Pdus::GetBulkRequest(r) => r.0.request_id,
        Pdus::InformRequest(r) => r.0.request_id,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rasn_snmp::v2::GetRequest;
    use sssonector_config::{AuthProtocol, PrivProtocol, Secret};

    use super::*;

    fn user(name: &str, auth: &str, privacy: &str) -> SnmpUser {
        SnmpUser {
            name: name.into(),
            auth_protocol: AuthProtocol::Sha256,
            auth_password: Secret::new(auth),
            priv_protocol: PrivProtocol::Aes,
            priv_password: Secret::new(privacy),
        }
    }

    fn agent() -> Usm {
        let engine = Engine::with_state(b"\x80\x00\x7e\xd9\x05test".to_vec(), 7, Instant::now());
        Usm::new(engine, &[user("nms", "auth-pass-1", "priv-pass-1")])
    }

    /// A manager that knows the agent's engine (ID, boots 7) but holds `auth` and
    /// `privacy` as the user's passwords.
    fn manager(agent: &Usm, auth: &str, privacy: &str) -> Usm {
        let engine = Engine::with_state(agent.engine().id().to_vec(), 7, Instant::now());
        Usm::new(engine, &[user("nms", auth, privacy)])
    }

    fn get(request_id: i32) -> Pdus {
        Pdus::GetRequest(GetRequest(Pdu {
            request_id,
            error_status: 0,
            error_index: 0,
            variable_bindings: vec![VarBind {
                name: ObjectIdentifier::new_unchecked(vec![1, 3, 6, 1, 2, 1, 1, 1, 0].into()),
                value: VarBindValue::Unspecified,
            }],
        }))
    }

    fn scoped(usm: &Usm, pdus: Pdus) -> ScopedPdu {
        ScopedPdu {
            engine_id: usm.engine().id().to_vec().into(),
            name: OctetString::from_static(&[]),
            data: pdus,
        }
    }

    /// A request as a manager that knows our engine sends it, sealed with `keys`'s
    /// credentials (which may differ from the agent's).
    fn request(agent: &Usm, keys: &Usm, flags: u8, pdus: Pdus) -> Vec<u8> {
        let users = keys.users.load();
        let u = users.get(&b"nms"[..]);
        keys.seal_as(Integer::from(42), flags, b"nms", u, scoped(agent, pdus))
            .expect("encodes and decodes")
    }

    fn open(agent: &Usm, bytes: &[u8]) -> Result<Request, Rejected> {
        let msg = rasn::ber::decode::<Message>(bytes).expect("a v3 message");
        agent.open(bytes, msg)
    }

    fn refusal(r: Result<Request, Rejected>) -> (Refusal, Option<Vec<u8>>) {
        match r {
            Err(Rejected::Refused { why, report }) => (why, report),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The report's usmStats binding and whether it was signed.
    fn report_of(bytes: &[u8]) -> (Vec<u32>, u8) {
        let msg = rasn::ber::decode::<Message>(bytes).expect("encodes and decodes");
        let ScopedPduData::CleartextPdu(s) = msg.scoped_data else {
            panic!("reports are not encrypted");
        };
        let Pdus::Report(r) = s.data else {
            panic!("not a report: {:?}", s.data);
        };
        (
            r.0.variable_bindings[0].name.to_vec(),
            msg.global_data.flags[0],
        )
    }

    const AUTH_PRIV: u8 = FLAG_AUTH | FLAG_PRIV | FLAG_REPORTABLE;

    #[test]
    fn an_authpriv_request_opens_and_its_response_verifies() {
        let usm = agent();
        let bytes = request(&usm, &usm, AUTH_PRIV, get(9));
        let req = open(&usm, &bytes).expect("accepted");
        assert_eq!(req.user, b"nms");
        assert_eq!(req.msg_id, Integer::from(42));
        assert_eq!(req.scoped.data, get(9));
        // The response is itself an authPriv message from this engine: it opens too.
        let response = usm.seal(&req, get(10)).expect("encodes and decodes");
        let back = open(&usm, &response).expect("response verifies");
        assert_eq!(back.scoped.data, get(10));
        assert_eq!(usm.refused(), [0; 6]);
    }

    #[test]
    fn discovery_gets_our_engine_id_boots_and_time_in_a_plain_report() {
        let usm = agent();
        let probe = Message {
            version: Integer::from(3),
            global_data: HeaderData {
                message_id: Integer::from(1),
                max_size: Integer::from(65_507),
                flags: OctetString::from(vec![FLAG_REPORTABLE]),
                security_model: Integer::from(USM_MODEL),
            },
            security_parameters: rasn::ber::encode(&USMSecurityParameters {
                authoritative_engine_id: OctetString::from_static(&[]),
                authoritative_engine_boots: Integer::from(0),
                authoritative_engine_time: Integer::from(0),
                user_name: OctetString::from_static(&[]),
                authentication_parameters: OctetString::from_static(&[]),
                privacy_parameters: OctetString::from_static(&[]),
            })
            .expect("encodes and decodes")
            .into(),
            scoped_data: ScopedPduData::CleartextPdu(ScopedPdu {
                engine_id: OctetString::from_static(&[]),
                name: OctetString::from_static(&[]),
                data: get(5),
            }),
        };
        let bytes = rasn::ber::encode(&probe).expect("encodes and decodes");
        let (why, report) = refusal(open(&usm, &bytes));
        assert_eq!(why, Refusal::UnknownEngineId);
        let report = report.expect("reportable");
        let msg = rasn::ber::decode::<Message>(&report).expect("encodes and decodes");
        let params = rasn::ber::decode::<USMSecurityParameters>(&msg.security_parameters)
            .expect("encodes and decodes");
        assert_eq!(params.authoritative_engine_id.as_ref(), usm.engine().id());
        assert_eq!(params.authoritative_engine_boots, Integer::from(7));
        let (oid, flags) = report_of(&report);
        assert_eq!(oid, [1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0]);
        assert_eq!(flags, 0);
        assert_eq!(usm.refused()[3], 1);
    }

    #[test]
    fn a_wrong_password_is_a_wrong_digest() {
        let usm = agent();
        let impostor = manager(&usm, "not-the-password", "priv-pass-1");
        let bytes = request(&usm, &impostor, AUTH_PRIV, get(1));
        let (why, report) = refusal(open(&usm, &bytes));
        assert_eq!(why, Refusal::WrongDigest);
        assert_eq!(report_of(&report.expect("encodes and decodes")).0[9], 5);
    }

    #[test]
    fn a_flipped_bit_in_the_ciphertext_fails_the_digest() {
        let usm = agent();
        let bytes = request(&usm, &usm, AUTH_PRIV, get(1));
        // Flip one bit in the encrypted scoped PDU (the message's last octets).
        let mut tampered = bytes.clone();
        let last = tampered.len() - 3;
        tampered[last] ^= 0x10;
        let (why, _) = refusal(open(&usm, &tampered));
        assert_eq!(why, Refusal::WrongDigest);
    }

    #[test]
    fn a_wrong_privacy_password_cannot_decrypt() {
        let usm = agent();
        let other = manager(&usm, "auth-pass-1", "other-privacy");
        let bytes = request(&usm, &other, AUTH_PRIV, get(1));
        let (why, _) = refusal(open(&usm, &bytes));
        assert_eq!(why, Refusal::DecryptionError);
    }

    #[test]
    fn unknown_users_and_lower_levels_are_refused_with_reports() {
        let usm = agent();
        let mut msg = rasn::ber::decode::<Message>(&request(&usm, &usm, AUTH_PRIV, get(1)))
            .expect("encodes and decodes");
        let mut params = rasn::ber::decode::<USMSecurityParameters>(&msg.security_parameters)
            .expect("encodes and decodes");
        params.user_name = OctetString::from_static(b"stranger");
        msg.security_parameters = rasn::ber::encode(&params)
            .expect("encodes and decodes")
            .into();
        let bytes = rasn::ber::encode(&msg).expect("encodes and decodes");
        assert_eq!(refusal(open(&usm, &bytes)).0, Refusal::UnknownUserName);

        let auth_only = request(&usm, &usm, FLAG_AUTH | FLAG_REPORTABLE, get(1));
        let (why, report) = refusal(open(&usm, &auth_only));
        assert_eq!(why, Refusal::UnsupportedSecLevel);
        assert_eq!(report_of(&report.expect("encodes and decodes")).0[9], 1);
    }

    #[test]
    fn an_old_boot_count_is_outside_the_time_window_and_the_report_is_signed() {
        let usm = agent();
        // The agent restarted since the manager learnt boots 7: it is at 8 now.
        let restarted = Usm::new(
            Engine::with_state(usm.engine().id().to_vec(), 8, Instant::now()),
            &[user("nms", "auth-pass-1", "priv-pass-1")],
        );
        let bytes = request(&usm, &usm, AUTH_PRIV, get(1));
        let (why, report) = refusal(open(&restarted, &bytes));
        assert_eq!(why, Refusal::NotInTimeWindow);
        let (oid, flags) = report_of(&report.expect("encodes and decodes"));
        assert_eq!(oid[9], 2);
        assert_eq!(flags, FLAG_AUTH, "signed, not encrypted, not reportable");
    }

    #[test]
    fn a_request_without_the_reportable_flag_gets_no_report() {
        let usm = agent();
        let impostor = manager(&usm, "not-the-password", "priv-pass-1");
        let bytes = request(&usm, &impostor, FLAG_AUTH | FLAG_PRIV, get(1));
        let (_, report) = refusal(open(&usm, &bytes));
        assert!(report.is_none());
    }

    #[test]
    fn users_swap_on_reload() {
        let usm = agent();
        usm.set_users(&[user("nms", "rotated-auth", "rotated-priv")]);
        let old = manager(&usm, "auth-pass-1", "priv-pass-1");
        let bytes = request(&usm, &old, AUTH_PRIV, get(1));
        assert_eq!(refusal(open(&usm, &bytes)).0, Refusal::WrongDigest);
        let bytes = request(&usm, &usm, AUTH_PRIV, get(1));
        assert!(open(&usm, &bytes).is_ok());
    }

    #[test]
    fn a_trap_is_sealed_authpriv_from_our_engine() {
        let usm = agent();
        let bytes = usm.seal_trap("nms", get(3)).expect("encodes and decodes");
        let opened = open(&usm, &bytes).expect("verifies with the user's keys");
        assert_eq!(opened.scoped.data, get(3));
        assert!(usm.seal_trap("nobody", get(3)).is_none());
    }
}
