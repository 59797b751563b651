//! `mibs/SSSONECTOR-MIB.txt` is a valid SMIv2 module that says what the agent's
//! contract says: `smilint -l 6` prints nothing about it, and Net-SNMP's
//! `snmptranslate` loads it cleanly and resolves every name of the OID layout below to
//! its OID, syntax and access, with no name missing and none extra.
//!
//! The IETF base modules it imports are fetched by `.ci/base-mibs.sh` (Debian ships
//! none). Every tool is called with explicit search paths (`SMIPATH`, `-M`, `-m`) and
//! Net-SNMP's config files are kept out of reach (`SNMPCONFPATH`), because Debian's
//! `/etc/snmp/snmp.conf` says `mibs :`, which loads no module at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The module under test, relative to the repository.
const MIB: &str = "mibs/SSSONECTOR-MIB.txt";

/// The module's name, as Net-SNMP's `-m` wants it.
const MODULE: &str = "SSSONECTOR-MIB";

/// The module root: `{ enterprises 32473 1 }`. 32473 is the Private Enterprise Number
/// RFC 5612 (section 2) reserves for documentation, a placeholder until the project
/// registers its own.
const ROOT: &str = ".1.3.6.1.4.1.32473.1";

/// smilint's error level: 6 reports every error and warning except the level-7..9
/// hints about style (RFC 2578 conformance is levels 1..5, libsmi's extras level 6).
const SMILINT_LEVEL: &str = "6";

/// How `snmptranslate -Td` prints the textual conventions the module uses: it resolves
/// them to their base syntax (RFC 2579 section 2).
const DISPLAY_STRING: &str = "OCTET STRING (0..255)";
const TRUTH_VALUE: &str = "INTEGER {true(1), false(2)}";

/// What a name in the module is.
enum Kind {
    /// An OBJECT IDENTIFIER, MODULE-IDENTITY, table, entry, group or compliance.
    Node,
    /// An OBJECT-TYPE leaf with its SYNTAX (as `snmptranslate -Td` prints it),
    /// MAX-ACCESS and UNITS.
    Leaf(&'static str, &'static str, Option<&'static str>),
    /// A NOTIFICATION-TYPE with its OBJECTS.
    Notification(&'static str),
}

use Kind::{Leaf, Node, Notification};

const RO: &str = "read-only";
const NA: &str = "not-accessible";
const AFN: &str = "accessible-for-notify";
const INDEX: &str = "Unsigned32 (1..4294967295)";

/// The OID layout the agent implements: every name of the module, its OID below
/// [`ROOT`] and what it is. Changing a line here changes the contract with the agent.
const LAYOUT: &[(&str, &str, Kind)] = &[
    ("sssonectorMIB", "", Node),
    ("sssNotifications", ".0", Node),
    (
        "sssTunnelUp",
        ".0.1",
        Notification("sssPeerName, sssPeerRemote"),
    ),
    (
        "sssTunnelDown",
        ".0.2",
        Notification("sssPeerName, sssPeerRemote, sssNotifyReason"),
    ),
    (
        "sssEndpointDown",
        ".0.3",
        Notification("sssEndpointService, sssEndpointAddress"),
    ),
    (
        "sssEndpointUp",
        ".0.4",
        Notification("sssEndpointService, sssEndpointAddress"),
    ),
    (
        "sssBreakerOpened",
        ".0.5",
        Notification("sssEndpointService, sssEndpointAddress, sssEndpointBreakerState"),
    ),
    (
        "sssBreakerClosed",
        ".0.6",
        Notification("sssEndpointService, sssEndpointAddress, sssEndpointBreakerState"),
    ),
    (
        "sssCertExpiring",
        ".0.7",
        Notification("sssNotifyCertSubject, sssNotifyCertDaysLeft"),
    ),
    ("sssObjects", ".1", Node),
    // General
    ("sssGeneral", ".1.1", Node),
    ("sssVersion", ".1.1.1", Leaf(DISPLAY_STRING, RO, None)),
    (
        "sssMode",
        ".1.1.2",
        Leaf("INTEGER {server(1), client(2)}", RO, None),
    ),
    ("sssUptime", ".1.1.3", Leaf("TimeTicks", RO, None)),
    // Traffic
    ("sssTraffic", ".1.2", Node),
    ("sssBytesIn", ".1.2.1", Leaf("Counter64", RO, None)),
    ("sssBytesOut", ".1.2.2", Leaf("Counter64", RO, None)),
    ("sssPacketsIn", ".1.2.3", Leaf("Counter64", RO, None)),
    ("sssPacketsOut", ".1.2.4", Leaf("Counter64", RO, None)),
    ("sssWireBytesIn", ".1.2.5", Leaf("Counter64", RO, None)),
    ("sssWireBytesOut", ".1.2.6", Leaf("Counter64", RO, None)),
    ("sssDropsNoRoute", ".1.2.7", Leaf("Counter64", RO, None)),
    ("sssDropsQueueFull", ".1.2.8", Leaf("Counter64", RO, None)),
    (
        "sssDropsSourceMismatch",
        ".1.2.9",
        Leaf("Counter64", RO, None),
    ),
    ("sssDropsMalformed", ".1.2.10", Leaf("Counter64", RO, None)),
    ("sssDropsTunWrite", ".1.2.11", Leaf("Counter64", RO, None)),
    ("sssDropsThrottled", ".1.2.12", Leaf("Counter64", RO, None)),
    (
        "sssDropsDestinationDenied",
        ".1.2.13",
        Leaf("Counter64", RO, None),
    ),
    // Connections
    ("sssConnections", ".1.3", Node),
    ("sssConnActive", ".1.3.1", Leaf("Gauge32", RO, None)),
    ("sssConnTotal", ".1.3.2", Leaf("Counter64", RO, None)),
    ("sssConnPeak", ".1.3.3", Leaf("Gauge32", RO, None)),
    (
        "sssHandshakeFailures",
        ".1.3.4",
        Leaf("Counter64", RO, None),
    ),
    ("sssReconnects", ".1.3.5", Leaf("Counter64", RO, None)),
    // Peers
    ("sssPeerTable", ".1.4", Node),
    ("sssPeerEntry", ".1.4.1", Node),
    ("sssPeerIndex", ".1.4.1.1", Leaf(INDEX, NA, None)),
    ("sssPeerName", ".1.4.1.2", Leaf(DISPLAY_STRING, RO, None)),
    ("sssPeerRemote", ".1.4.1.3", Leaf(DISPLAY_STRING, RO, None)),
    (
        "sssPeerInnerAddress",
        ".1.4.1.4",
        Leaf(DISPLAY_STRING, RO, None),
    ),
    ("sssPeerBytesIn", ".1.4.1.5", Leaf("Counter64", RO, None)),
    ("sssPeerBytesOut", ".1.4.1.6", Leaf("Counter64", RO, None)),
    ("sssPeerPacketsIn", ".1.4.1.7", Leaf("Counter64", RO, None)),
    ("sssPeerPacketsOut", ".1.4.1.8", Leaf("Counter64", RO, None)),
    (
        "sssPeerDuration",
        ".1.4.1.9",
        Leaf("Unsigned32", RO, Some("seconds")),
    ),
    (
        "sssPeerCompression",
        ".1.4.1.10",
        Leaf(DISPLAY_STRING, RO, None),
    ),
    // Endpoints
    ("sssEndpointTable", ".1.5", Node),
    ("sssEndpointEntry", ".1.5.1", Node),
    ("sssEndpointIndex", ".1.5.1.1", Leaf(INDEX, NA, None)),
    (
        "sssEndpointService",
        ".1.5.1.2",
        Leaf(DISPLAY_STRING, RO, None),
    ),
    (
        "sssEndpointAddress",
        ".1.5.1.3",
        Leaf(DISPLAY_STRING, RO, None),
    ),
    (
        "sssEndpointHealthy",
        ".1.5.1.4",
        Leaf(TRUTH_VALUE, RO, None),
    ),
    (
        "sssEndpointBreakerState",
        ".1.5.1.5",
        Leaf("INTEGER {closed(1), open(2), halfOpen(3)}", RO, None),
    ),
    ("sssEndpointActive", ".1.5.1.6", Leaf("Gauge32", RO, None)),
    ("sssEndpointTotal", ".1.5.1.7", Leaf("Counter64", RO, None)),
    (
        "sssEndpointBytesIn",
        ".1.5.1.8",
        Leaf("Counter64", RO, None),
    ),
    (
        "sssEndpointBytesOut",
        ".1.5.1.9",
        Leaf("Counter64", RO, None),
    ),
    // Limiters
    ("sssLimiterTable", ".1.6", Node),
    ("sssLimiterEntry", ".1.6.1", Node),
    ("sssLimiterIndex", ".1.6.1.1", Leaf(INDEX, NA, None)),
    ("sssLimiterName", ".1.6.1.2", Leaf(DISPLAY_STRING, RO, None)),
    (
        "sssLimiterRate",
        ".1.6.1.3",
        Leaf("Unsigned32", RO, Some("kilobytes per second")),
    ),
    (
        "sssLimiterBurst",
        ".1.6.1.4",
        Leaf("Unsigned32", RO, Some("kilobytes")),
    ),
    (
        "sssLimiterThrottledBytes",
        ".1.6.1.5",
        Leaf("Counter64", RO, None),
    ),
    (
        "sssLimiterRejected",
        ".1.6.1.6",
        Leaf("Counter64", RO, None),
    ),
    // Certificates
    ("sssCertificates", ".1.7", Node),
    (
        "sssCertDaysToExpiry",
        ".1.7.1",
        Leaf("Integer32", RO, Some("days")),
    ),
    (
        "sssCaDaysToExpiry",
        ".1.7.2",
        Leaf("Integer32", RO, Some("days")),
    ),
    // Objects sent only in notifications
    ("sssNotifyObjects", ".1.9", Node),
    ("sssNotifyReason", ".1.9.1", Leaf(DISPLAY_STRING, AFN, None)),
    (
        "sssNotifyCertSubject",
        ".1.9.2",
        Leaf(DISPLAY_STRING, AFN, None),
    ),
    (
        "sssNotifyCertDaysLeft",
        ".1.9.3",
        Leaf("Integer32", AFN, Some("days")),
    ),
    // Conformance
    ("sssConformance", ".2", Node),
    ("sssGroups", ".2.1", Node),
    ("sssCompliances", ".2.2", Node),
    ("sssCompliance", ".2.2.1", Node),
    ("sssGeneralGroup", ".2.1.1", Node),
    ("sssTrafficGroup", ".2.1.2", Node),
    ("sssConnectionGroup", ".2.1.3", Node),
    ("sssPeerGroup", ".2.1.4", Node),
    ("sssEndpointGroup", ".2.1.5", Node),
    ("sssLimiterGroup", ".2.1.6", Node),
    ("sssNotifyObjectsGroup", ".2.1.7", Node),
    ("sssNotificationsGroup", ".2.1.8", Node),
    ("sssCertificateGroup", ".2.1.9", Node),
];

/// The repository's folder.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command for `tool`, which must be installed: a missing tool fails the test with
/// the package to install, it never skips it.
fn tool(tool: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: apt-get install -y --no-install-recommends {package} (or run .ci/test as root)"
    );
    let mut cmd = Command::new(tool);
    cmd.current_dir(repo());
    cmd
}

/// Runs `cmd` and returns its output, failing the test when it cannot start.
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The folder with the IETF base modules, fetched once per test run by
/// `.ci/base-mibs.sh` (which skips the download when they are already there).
fn base_mibs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target").join("base-mibs");
        let out = run(tool("bash", "bash").arg(".ci/base-mibs.sh").arg(&dir));
        assert!(
            out.status.success(),
            ".ci/base-mibs.sh {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for module in ["SNMPv2-SMI", "SNMPv2-TC", "SNMPv2-CONF", "SNMPv2-MIB"] {
            assert!(
                dir.join(format!("{module}.mib")).is_file(),
                ".ci/base-mibs.sh left no {module} in {}",
                dir.display()
            );
        }
        // Net-SNMP reports creating its persistent folders on stderr: make them now,
        // so that no test sees that message whichever runs first.
        std::fs::create_dir_all(persistent_dir(&dir).join("cert_indexes"))
            .expect("target/ is writable");
        dir
    })
}

/// Net-SNMP's persistent-state folder for the tests, next to the base modules, so
/// that they do not write to /var/lib/snmp.
fn persistent_dir(base: &Path) -> PathBuf {
    base.with_file_name("snmp-persistent")
}

/// `snmptranslate` reading only the base modules and ours, with no config file.
fn snmptranslate() -> Command {
    let base = base_mibs();
    let mut cmd = tool("snmptranslate", "snmp");
    cmd.env_remove("MIBS")
        .env_remove("MIBDIRS")
        // No snmp.conf in the base-mib folder: Net-SNMP reads no config file at all.
        .env("SNMPCONFPATH", base)
        .env("SNMP_PERSISTENT_DIR", persistent_dir(base))
        .arg("-M")
        .arg(format!("{}:mibs", base.display()))
        .args(["-m", MODULE]);
    cmd
}

/// Every line of `text` with surrounding blanks removed and empty lines dropped.
fn lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The value of the `-Td` clause `key` (such as `SYNTAX`), blanks collapsed.
fn clause(definition: &[String], key: &str) -> Option<String> {
    definition.iter().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        rest.starts_with(char::is_whitespace)
            .then(|| rest.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

#[test]
fn smilint_reports_nothing_at_level_6() {
    let base = base_mibs();
    let out = run(tool("smilint", "smitools")
        .env("SMIPATH", base)
        .args(["-s", "-l", SMILINT_LEVEL])
        .arg(MIB));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // smilint exits 0 even on errors: its verdict is what it prints. Anything at all,
    // error or warning, fails the test.
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "SMIPATH={} smilint -s -l {SMILINT_LEVEL} {MIB} ({}) printed:\n{stdout}{stderr}",
        base.display(),
        out.status
    );
}

#[test]
fn snmptranslate_loads_the_module_without_diagnostics() {
    let out = run(snmptranslate().arg("-Tz"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "snmptranslate -Tz ({}) printed diagnostics (Cannot find module, Unlinked OID, \
         Did not find, ...):\n{stderr}",
        out.status
    );
    // -Tz prints `"name"  "1.3.6..."` for every node it knows: ours are the ones below
    // the module root, and they must be exactly the layout's names.
    let mut ours: Vec<(String, String)> = lines(&out.stdout)
        .iter()
        .filter_map(|line| {
            let mut fields = line.split('"').filter(|f| !f.trim().is_empty());
            let name = fields.next()?.to_owned();
            let oid = format!(".{}", fields.next()?);
            (oid == ROOT || oid.starts_with(&format!("{ROOT}."))).then_some((name, oid))
        })
        .collect();
    ours.sort();
    let mut want: Vec<(String, String)> = LAYOUT
        .iter()
        .map(|(name, suffix, _)| ((*name).to_owned(), format!("{ROOT}{suffix}")))
        .collect();
    want.sort();
    let missing: Vec<_> = want.iter().filter(|w| !ours.contains(w)).collect();
    let extra: Vec<_> = ours.iter().filter(|o| !want.contains(o)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the module's names below {ROOT} differ from the layout:\n  \
         missing or misplaced: {missing:?}\n  not in the layout: {extra:?}"
    );
}

#[test]
fn every_name_resolves_to_its_oid_syntax_and_access() {
    let mut failures = Vec::new();
    for (name, suffix, kind) in LAYOUT {
        let want_oid = format!("{ROOT}{suffix}");
        let qualified = format!("{MODULE}::{name}");
        let out = run(snmptranslate().args(["-On", "-Td"]).arg(&qualified));
        let definition = lines(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !stderr.trim().is_empty() {
            failures.push(format!(
                "snmptranslate -On -Td {qualified} ({}): {}",
                out.status,
                stderr.trim()
            ));
            continue;
        }
        let got_oid = definition.first().map(String::as_str).unwrap_or("");
        if got_oid != want_oid {
            failures.push(format!("{name} resolves to {got_oid:?}, want {want_oid}"));
        }
        let mut expect = |key: &str, want: Option<&str>| {
            let got = clause(&definition, key);
            if got.as_deref() != want {
                failures.push(format!("{name}: {key} is {got:?}, want {want:?}"));
            }
        };
        match kind {
            Node => {}
            Leaf(syntax, access, units) => {
                expect("SYNTAX", Some(syntax));
                expect("MAX-ACCESS", Some(access));
                expect("UNITS", units.map(|u| format!("\"{u}\"")).as_deref());
                expect("STATUS", Some("current"));
            }
            Notification(objects) => {
                expect("OBJECTS", Some(&format!("{{ {objects} }}")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "SSSONECTOR-MIB disagrees with the OID layout:\n{}",
        failures.join("\n")
    );
}
