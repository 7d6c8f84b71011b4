//! `scripts/demo.sh` run as a user would (dev profile, three loopback ports the test picks): it
//! prints the merged fabric and stops everything it started.

use std::process::{Command, Stdio};
use std::time::Duration;

use sunfish_tests::{free_port, workspace_root};

/// How long the whole demo may take (it waits at most 30 s per step itself).
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

/// Three consecutive free loopback ports; returns the first.
fn three_free_ports() -> u16 {
    for _ in 0..20 {
        let p = free_port();
        let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if p != 0 && p < u16::MAX - 2 && bindable(p + 1) && bindable(p + 2) {
            return p;
        }
    }
    panic!("no three consecutive free ports on 127.0.0.1");
}

fn has(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// The demo exits 0 after printing fabric `CXL` with `FabricSharedWith`, both aggregation
/// sources `Enabled`, and every boundary port of CXL1 linked to its CXL2 peer (and back); no
/// process it started answers afterwards.
#[test]
fn demo_prints_the_merged_fabric_and_cleans_up() {
    for tool in ["curl", "python3", "bash"] {
        if !has(tool) {
            eprintln!("SKIP demo_prints_the_merged_fabric_and_cleans_up: {tool} not found");
            return;
        }
    }
    let port = three_free_ports();
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/demo.sh"));
    let profile_dir = std::env::current_exe().ok().and_then(|e| e.parent()?.parent().map(|p| p.to_path_buf()));
    if !profile_dir.as_ref().is_some_and(|d| d.ends_with("release")) {
        cmd.arg("--debug");
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SUNFISH__") || k.starts_with("SUNFISH_AGENT__") || k.starts_with("SUNFISH_DEMO") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SUNFISH_DEMO_PORT", port.to_string()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("running demo.sh: {e}"));
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DEMO_TIMEOUT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("demo.sh: {e}")),
        Err(_) => {
            // The script's trap stops the services it started.
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            panic!("demo.sh did not finish within {DEMO_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo.sh exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("\"FabricSharedWith\""), "{stdout}");
    assert!(stdout.contains("\"UUID\": \"f47fc9d0-ecd3-5b55-8377-b539d57f4b54\""), "{stdout}");
    assert_eq!(stdout.matches(" Enabled ").count(), 2, "both aggregation sources Enabled:\n{stdout}");
    for n in 1..=4 {
        for (from, to) in [("CXL1", "CXL2"), ("CXL2", "CXL1")] {
            let line = format!("-> /redfish/v1/Fabrics/CXL/Switches/{to}/Ports/F{n}");
            let found = stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{from}/Ports/F{n} ")) && l.ends_with(&line));
            assert!(found, "{from}/Ports/F{n} not linked to {to}/Ports/F{n}:\n{stdout}");
        }
    }
    for p in port..port + 3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "something still listens on 127.0.0.1:{p} after the demo"
        );
    }
}
