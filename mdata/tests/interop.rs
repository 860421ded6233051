//! Real clients against our server: Debian's cloud-init (its own SmartOS datasource
//! clients, over the socket and over a serial line) and our mdata-* tools.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// Debian's python, where Debian's cloud-init package is installed.
const PYTHON: &str = "/usr/bin/python3";

fn python(script: &str, arg: &Path) -> serde_json::Value {
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(arg)
        .output()
        .expect("run /usr/bin/python3 (install the packages of tests/deps/mdata.txt: tests/setup)");
    assert!(
        out.status.success(),
        "cloud-init client failed (is Debian's cloud-init installed? tests/setup):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const CLOUD_INIT_SESSION: &str = r#"
import json, sys
from cloudinit.sources import DataSourceSmartOS as ds
c = CLIENT
c.open_transport()
r = {}
r["uuid"] = c.get("sdc:uuid")
r["hostname"] = c.get("sdc:hostname", strip=True)
r["dc"] = c.get("sdc:datacenter_name")
r["keys"] = c.get("root_authorized_keys")
r["missing"] = c.get("no-such-key")
nics = c.get_json("sdc:nics")
r["net"] = ds.convert_smartos_network_data(network_data=nics,
    dns_servers=c.get_json("sdc:resolvers"), routes=c.get_json("sdc:routes"))
r["put"] = c.put("color", "blue sky")
r["after_put"] = c.get("color")
r["list"] = c.list()
r["delete"] = c.delete("color")
r["after_delete"] = c.get("color")
r["sdc_put"] = c.put("sdc:uuid", "mine")
c.close_transport()
print(json.dumps(r))
"#;

fn check_cloud_init_session(r: &serde_json::Value) {
    assert_eq!(r["uuid"], UUID);
    assert_eq!(r["hostname"], "web01");
    assert_eq!(r["dc"], "skerry");
    assert_eq!(r["keys"], "ssh-ed25519 AAAAC3Nz test@skerry");
    assert_eq!(r["missing"], serde_json::Value::Null);
    let net = &r["net"]["config"];
    assert_eq!(net[0]["name"], "net0");
    assert_eq!(net[0]["mac_address"], "02:08:20:6a:1c:2f");
    assert_eq!(net[0]["subnets"][0]["address"], "10.88.0.10/24");
    assert_eq!(net[0]["subnets"][0]["gateway"], "10.88.0.1");
    assert_eq!(net[1]["address"], serde_json::json!(["10.88.0.1"]));
    assert_eq!(r["put"], "OK");
    assert_eq!(r["after_put"], "blue sky");
    assert_eq!(
        r["list"],
        serde_json::json!(["color", "role", "root_authorized_keys"])
    );
    assert_eq!(r["delete"], "OK");
    assert_eq!(r["after_delete"], serde_json::Value::Null);
    // cloud-init reads only SUCCESS answers; a refused put comes back as None.
    assert_eq!(r["sdc_put"], serde_json::Value::Null);
}

#[test]
fn cloud_init_socket_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(&dir.path().join("metadata.json"));
    let sock = serve_socket(dir.path(), store.clone());
    let script = CLOUD_INIT_SESSION.replace("CLIENT", "ds.JoyentMetadataSocketClient(sys.argv[1])");
    check_cloud_init_session(&python(&script, &sock));
    assert_eq!(store.lock().unwrap().get("sdc:uuid").as_deref(), Some(UUID));
}

#[test]
fn cloud_init_serial_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(&dir.path().join("metadata.json"));
    let (tty, _slave) = serve_pty(store);
    // The legacy serial client is the one cloud-init uses on KVM/bhyve: it flushes the
    // line, expects "invalid command" to a newline, negotiates, and lists keys first.
    let script = CLOUD_INIT_SESSION.replace(
        "CLIENT",
        "ds.JoyentMetadataLegacySerialClient(sys.argv[1], timeout=5, smartos_type='kvm')",
    );
    check_cloud_init_session(&python(&script, &tty));
}

fn tool(name: &str, args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Output {
    let exe = match name {
        "get" => env!("CARGO_BIN_EXE_mdata-get"),
        "put" => env!("CARGO_BIN_EXE_mdata-put"),
        "list" => env!("CARGO_BIN_EXE_mdata-list"),
        _ => env!("CARGO_BIN_EXE_mdata-delete"),
    };
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn expect(out: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(code), stdout, stderr)
    );
}

fn our_tools(env: &[(&str, &Path)]) {
    expect(&tool("get", &["sdc:hostname"], env, None), 0, "web01\n", "");
    expect(
        &tool("get", &["nope"], env, None),
        1,
        "",
        "No metadata for 'nope'\n",
    );
    expect(&tool("put", &["color", "blue"], env, None), 0, "", "");
    expect(
        &tool("put", &["motd"], env, Some("line 1\n.line 2\n")),
        0,
        "",
        "",
    );
    expect(&tool("get", &["color"], env, None), 0, "blue\n", "");
    expect(
        &tool("get", &["motd"], env, None),
        0,
        "line 1\n.line 2\n",
        "",
    );
    expect(
        &tool("list", &[], env, None),
        0,
        "color\nmotd\nrole\nroot_authorized_keys\n",
        "",
    );
    expect(&tool("delete", &["color"], env, None), 0, "", "");
    expect(
        &tool("get", &["color"], env, None),
        1,
        "",
        "No metadata for 'color'\n",
    );
    expect(
        &tool("put", &["sdc:uuid", "x"], env, None),
        2,
        "",
        "Error putting metadata for key 'sdc:uuid': Cannot update the \"sdc\" Namespace.\n",
    );
    // mdata-client would wait forever here (SmartOS drops its frame); we answer.
    expect(
        &tool("get", &[""], env, None),
        2,
        "",
        "Error getting metadata for key '': Invalid GET Request\n",
    );
    let exe = env!("CARGO_BIN_EXE_mdata-get");
    expect(
        &tool("get", &[], env, None),
        3,
        "",
        &format!("mdata-get: Usage: {exe} <keyname>\n"),
    );
}

#[test]
fn our_tools_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = serve_socket(dir.path(), store_at(&dir.path().join("metadata.json")));
    our_tools(&[("MDATA_SOCKET", &sock)]);
}

#[test]
fn our_tools_over_a_serial_line() {
    let dir = tempfile::tempdir().unwrap();
    let (tty, _slave) = serve_pty(store_at(&dir.path().join("metadata.json")));
    let no_socket = dir.path().join("no.sock");
    our_tools(&[("MDATA_SOCKET", &no_socket), ("MDATA_SERIAL_DEVICE", &tty)]);
}

#[test]
fn guest_puts_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metadata.json");
    let sock = serve_socket(dir.path(), store_at(&file));
    expect(
        &tool("put", &["color", "green"], &[("MDATA_SOCKET", &sock)], None),
        0,
        "",
        "",
    );
    expect(
        &tool("delete", &["role"], &[("MDATA_SOCKET", &sock)], None),
        0,
        "",
        "",
    );
    // A new server (a restarted monitor) reads the same file with the same manifest.
    let sock2 = serve_socket(dir.path(), store_at(&file));
    expect(
        &tool("get", &["color"], &[("MDATA_SOCKET", &sock2)], None),
        0,
        "green\n",
        "",
    );
    expect(
        &tool("get", &["role"], &[("MDATA_SOCKET", &sock2)], None),
        1,
        "",
        "No metadata for 'role'\n",
    );
}

/// A host that only speaks version 1 (as old SmartOS did): our tools fall back to
/// plain lines for GET and refuse PUT, as mdata-client does.
#[test]
fn our_tools_fall_back_to_version_1() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v1.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut w = conn.try_clone().unwrap();
            for line in BufReader::new(conn).lines() {
                let answer = match line.unwrap().as_str() {
                    "GET motd" => "SUCCESS\n..dotted\nplain\n.\n",
                    "NEGOTIATE V2" => "FAILURE\n",
                    "" => "invalid command\n",
                    _ => "NOTFOUND\n",
                };
                w.write_all(answer.as_bytes()).unwrap();
            }
        }
    });
    let env: &[(&str, &Path)] = &[("MDATA_SOCKET", &sock)];
    expect(
        &tool("get", &["motd"], env, None),
        0,
        ".dotted\nplain\n",
        "",
    );
    expect(
        &tool("get", &["other"], env, None),
        1,
        "",
        "No metadata for 'other'\n",
    );
    expect(
        &tool("put", &["a", "b"], env, None),
        2,
        "",
        "ERROR: host does not support PUT\n",
    );
    expect(
        &tool("delete", &["a"], env, None),
        2,
        "",
        "ERROR: host does not support DELETE\n",
    );
}

/// cloud-init's whole SmartOS datasource (as in an lx zone), not only its client:
/// what it makes of our metadata is what a cloud-init image provisions itself with.
/// (With no user-script or user-data in the metadata it writes only under its temp
/// cloud_dir; it would remove SmartOS's /var/db/mdata-user-data, absent off SmartOS.)
#[test]
fn cloud_init_datasource_reads_instance_identity_keys_and_network() {
    let dir = tempfile::tempdir().unwrap();
    let sock = serve_socket(dir.path(), store_at(&dir.path().join("metadata.json")));
    let script = r#"
import json, sys, tempfile
from cloudinit import helpers
from cloudinit.sources import DataSourceSmartOS as ds
ds.DataSourceSmartOS.smartos_type = ds.SMARTOS_ENV_LX_BRAND
tmp = tempfile.mkdtemp()
cfg = {"datasource": {"SmartOS": {"metadata_sockfile": sys.argv[1]}}}
d = ds.DataSourceSmartOS(cfg, None, helpers.Paths({"cloud_dir": tmp, "run_dir": tmp}))
ok = d._get_data()
print(json.dumps({"ok": ok, "id": d.get_instance_id(), "md": {k: d.metadata.get(k) for k in
    ("local-hostname", "public-keys", "availability_zone", "hostname")},
    "net": d.network_config}))
"#;
    let r = python(script, &sock);
    assert_eq!(r["ok"], true);
    assert_eq!(r["id"], UUID);
    // cloud-init takes the hostname from the customer key `hostname`, else sdc:hostname.
    assert_eq!(r["md"]["local-hostname"], "web01");
    assert_eq!(r["md"]["public-keys"], "ssh-ed25519 AAAAC3Nz test@skerry");
    assert_eq!(r["md"]["availability_zone"], "skerry");
    let nic = &r["net"]["config"][0];
    assert_eq!(
        (&nic["name"], &nic["mac_address"]),
        (&"net0".into(), &"02:08:20:6a:1c:2f".into())
    );
    assert_eq!(nic["subnets"][0]["address"], "10.88.0.10/24");
    assert_eq!(nic["mtu"], 1500);
}
