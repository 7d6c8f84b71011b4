//! `examples/custom_agent.rs` built and run as a program: the custom hardware manager's effect
//! is visible over HTTP, and the agent stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const MEDIA: &str = "/redfish/v1/Chassis/MemoryAppliance/Memory/Media1";
const CHASSIS: &str = "/redfish/v1/Chassis/MemoryAppliance";

/// `target/<profile>/examples/custom_agent`, (re)built by cargo first (a no-op when fresh).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/example-<hash> → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "sunfish-agent", "--example", "custom_agent"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(cmd.current_dir(root).status().unwrap().success(), "building the example failed");
    let bin = profile_dir.join("examples/custom_agent");
    assert!(bin.is_file(), "{} missing after build", bin.display());
    bin
}

/// The running example; killed when dropped.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example on `127.0.0.1:0`; returns it and its base URL (from `listening on`).
fn start() -> (Example, String) {
    let mut cmd = Command::new(example_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("SUNFISH_AGENT") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("SUNFISH_AGENT__SERVER__LISTEN", "127.0.0.1:0").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = Example(cmd.spawn().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("example: {line}");
            if let Some(url) = line.split("listening on ").nth(1).and_then(|s| s.split_whitespace().next()) {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx.recv_timeout(WAIT).expect("the example's `listening on` line");
    (child, url)
}

async fn send(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The example's appliance rounds a PATCHed `VolatileSizeLimitMiB` down to 1024 MiB blocks and
/// answers (and stores) the result, refuses more than the capacity with 400 and nothing
/// stored, reports the locate LED it lit as a change of its chassis, and exits 0 on SIGTERM.
#[tokio::test]
async fn custom_agent_example_applies_writes_through_its_device() {
    let (mut child, base) = start();
    let http = reqwest::Client::builder().no_proxy().timeout(WAIT).build().unwrap();
    let patch = reqwest::Method::PATCH;
    let (status, body) =
        send(&http, patch.clone(), format!("{base}{MEDIA}"), Some(json!({"VolatileSizeLimitMiB": 5000}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["VolatileSizeLimitMiB"], 4096, "{body}");
    assert_eq!(body["CapacityMiB"], 131072, "the device's answer lost the rest of the module: {body}");
    let (_, stored) = send(&http, reqwest::Method::GET, format!("{base}{MEDIA}"), None).await;
    assert_eq!(stored["VolatileSizeLimitMiB"], 4096, "{stored}");

    let (status, body) =
        send(&http, patch, format!("{base}{MEDIA}"), Some(json!({"VolatileSizeLimitMiB": 1_000_000}))).await;
    assert_eq!(status, 400, "{body}");
    let (_, stored) = send(&http, reqwest::Method::GET, format!("{base}{MEDIA}"), None).await;
    assert_eq!(stored["VolatileSizeLimitMiB"], 4096, "a refused write changed the module: {stored}");

    let deadline = Instant::now() + WAIT;
    loop {
        let (_, chassis) = send(&http, reqwest::Method::GET, format!("{base}{CHASSIS}"), None).await;
        if chassis["LocationIndicatorActive"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the hardware-side change never arrived: {chassis}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the example did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the example exited with {status}");
}
