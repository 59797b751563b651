//! Two daemons in two namespaces joined by a veth pair: a server offering one
//! layer-4 service and a client `c1` offering it locally on [`SERVICE`]. The services
//! and rate-limit tests build on it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::netns::{Lab, Netns};
use super::{cert_init, Control, Daemon};

/// How long a daemon may take to say it is ready.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// The server certificate's name.
pub const SERVER_NAME: &str = "sssonector-test";
/// The server's tunnel port.
pub const PORT: u16 = 8443;
/// The server's address on the veth pair.
pub const SERVER_UNDERLAY: &str = "192.168.1.1";
/// The client's address on the veth pair.
pub const CLIENT_UNDERLAY: &str = "192.168.1.2";
/// The server's inner (TUN) address.
pub const SERVER_INNER: &str = "10.77.0.1";
/// Where the client offers the service, in its namespace.
pub const SERVICE: &str = "127.0.0.1:7001";

/// A running server and client; the daemons stop when it drops.
pub struct Pair {
    /// Fields drop in order: the daemons stop before their namespaces go.
    pub server: Daemon,
    pub client: Daemon,
    pub dir: tempfile::TempDir,
    pub srv: Netns,
    pub cli: Netns,
    name: String,
    client_interface: String,
}

impl Pair {
    /// Starts the server in `srv` with the service `name` whose entry continues with
    /// `service` (the YAML after `name: <name>, `), then the client in a namespace
    /// of its own; `server_extra` and `client_extra` are appended YAML. Returns once
    /// the server has the client's session.
    pub fn start(
        lab: &Lab,
        srv: Netns,
        name: &str,
        service: &str,
        server_extra: &str,
        client_extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        cert_init(dir.path(), SERVER_NAME, &["c1"]);
        let cli = lab.netns("cli");
        lab.veth(&srv, SERVER_UNDERLAY, &cli, CLIENT_UNDERLAY);
        let server_yaml = server_yaml(&lab.ifname("ts"), name, service, server_extra);
        let server = write(dir.path(), "server.yaml", &server_yaml);
        let client_interface = lab.ifname("tc");
        let client_yaml = client_yaml(&client_interface, name, client_extra);
        let client = write(dir.path(), "c1.yaml", &client_yaml);
        let mut server_d = Daemon::start_in(srv.name(), &server);
        server_d.wait_for("listening", WAIT);
        let mut client_d = Daemon::start_in(cli.name(), &client);
        client_d.wait_for("tunnel up", WAIT);
        server_d.find_or_wait("session started", &[("peer", "c1")], WAIT);
        Self {
            server: server_d,
            client: client_d,
            dir,
            srv,
            cli,
            name: name.to_owned(),
            client_interface,
        }
    }

    /// `command` with `args` on the `who` daemon (`server` or `c1`).
    pub fn ctl(&self, who: &str, command: &str, args: Value) -> Value {
        let mut c = Control::connect(&self.dir.path().join(format!("{who}.sock")));
        c.call(1, command, args)
    }

    /// Like [`ctl`](Self::ctl), and panics unless the reply is ok; returns its data.
    pub fn ctl_ok(&self, who: &str, command: &str, args: Value) -> Value {
        let reply = self.ctl(who, command, args);
        assert_eq!(reply["ok"], true, "{command} on {who}: {reply}");
        reply["data"].clone()
    }

    /// Rewrites the server's service entry (the YAML after `name: <name>, `) and
    /// reloads it.
    pub fn reload_server(&self, service: &str) {
        let path = self.dir.path().join("server.yaml");
        let text = std::fs::read_to_string(&path).expect("server config");
        let line = text
            .lines()
            .find(|l| l.starts_with("services:"))
            .expect("services line")
            .to_owned();
        let text = text.replace(&line, &services_line(&self.name, service));
        std::fs::write(&path, text).expect("server config written");
        self.ctl_ok("server", "reload", json!({}));
    }

    /// Rewrites the client's config with `client_extra` and reloads it.
    pub fn reload_client(&self, client_extra: &str) {
        let yaml = client_yaml(&self.client_interface, &self.name, client_extra);
        write(self.dir.path(), "c1.yaml", &yaml);
        self.ctl_ok("c1", "reload", json!({}));
    }

    /// The server's audit trail so far, one JSON value per record.
    pub fn server_audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("server-audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// Both daemons' logs, for failure messages.
    pub fn logs(&mut self) -> String {
        format!(
            "server:\n{}\nclient:\n{}",
            self.server.log(),
            self.client.log()
        )
    }
}

fn services_line(name: &str, service: &str) -> String {
    format!("services: [ {{ name: {name}, {service} }} ]")
}

/// A server on `interface` with the service `name` (entry continued by `service`)
/// and `extra` appended; its control socket is `server.sock`.
pub fn server_yaml(interface: &str, name: &str, service: &str, extra: &str) -> String {
    let services = services_line(name, service);
    format!(
        "mode: server\n\
         network: {{ interface: {interface}, address: {SERVER_INNER}/24 }}\n\
         tunnel: {{ listen_port: {PORT}, cert_file: server.crt, key_file: server.key, \
         ca_file: ca.crt, keepalive: 1s }}\n\
         security: {{ allowed_clients: [c1], audit_log: server-audit.jsonl }}\n\
         {services}\n\
         control: {{ socket: server.sock }}\n\
         logging: {{ level: info, format: json }}\n{extra}"
    )
}

/// The client `c1` on `interface`, offering `name` on [`SERVICE`], with `extra`
/// appended; its control socket is `c1.sock`.
pub fn client_yaml(interface: &str, name: &str, extra: &str) -> String {
    format!(
        "mode: client\n\
         network: {{ interface: {interface}, address: 10.77.0.2/24 }}\n\
         tunnel: {{ servers: [ {{ address: \"{SERVER_UNDERLAY}:{PORT}\" }} ], \
         server_name: {SERVER_NAME}, cert_file: c1.crt, key_file: c1.key, \
         ca_file: ca.crt, keepalive: 1s }}\n\
         services: [ {{ name: {name}, listen: \"{SERVICE}\" }} ]\n\
         control: {{ socket: c1.sock }}\n\
         logging: {{ level: info, format: json }}\n{extra}"
    )
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}
