//! The SNMP agent: SNMPv2c and SNMPv3 (USM authPriv) over UDP, serving MIB-II's
//! `system` group, snmpInPkts/snmpInBadCommunityNames and SSSONECTOR-MIB, and its
//! notifications (`trap`).

pub mod agent;
pub mod mib;
pub mod trap;
pub mod usm;
pub mod v3;
