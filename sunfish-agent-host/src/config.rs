//! The host file: the supervisor's own agent sections (`[server]`, `[agent]`, `[auth]`, ...:
//! its Redfish view and its registration upstream, as in an agent's file), `[host]`
//! (supervision settings) and one `[[instances]]` table per agent instance of this host.
//! `conf/agent-host.toml` documents every key; a test loads it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sunfish_agent::AgentConfig;
use sunfish_core::StartupError;

/// A whole host file.
#[derive(Debug, Clone)]
pub struct HostFile {
    /// The supervisor's own agent configuration (everything but `[host]` and `[[instances]]`).
    pub supervisor: AgentConfig,
    /// `[host]`.
    pub host: HostSection,
    /// `[[instances]]`, by name.
    pub instances: BTreeMap<String, InstanceSpec>,
}

/// `[host]`: see `conf/agent-host.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostSection {
    /// The `sunfish-agent` binary; default: beside this binary, else `sunfish-agent` on PATH.
    pub agent_binary: Option<PathBuf>,
    /// Where each child's generated configuration and log go; default: a private temporary
    /// directory removed at exit.
    pub state_dir: Option<PathBuf>,
    /// A child told to stop gets SIGTERM, then SIGKILL after this many milliseconds.
    pub grace_ms: u64,
    /// Wait before the first restart of a child that exited; doubles per quick exit.
    pub backoff_initial_ms: u64,
    /// Longest wait between restarts.
    pub backoff_max_ms: u64,
    /// A run at least this long counts as stable: the backoff starts again from the first wait.
    pub stable_after_ms: u64,
    /// The window of the stability figure (share of it the child was up), in seconds.
    pub stability_window_s: u64,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            agent_binary: None,
            state_dir: None,
            grace_ms: 5000,
            backoff_initial_ms: 1000,
            backoff_max_ms: 30_000,
            stable_after_ms: 10_000,
            stability_window_s: 600,
        }
    }
}

impl HostSection {
    /// `grace_ms` as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
    /// `backoff_initial_ms` as a duration (at least 10 ms).
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms.max(10))
    }
    /// `backoff_max_ms` as a duration (at least the first wait).
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms).max(self.backoff_initial())
    }
    /// `stable_after_ms` as a duration.
    pub fn stable_after(&self) -> Duration {
        Duration::from_millis(self.stable_after_ms)
    }
    /// `stability_window_s` as a duration (at least 1 s).
    pub fn stability_window(&self) -> Duration {
        Duration::from_secs(self.stability_window_s.max(1))
    }
}

/// Target state of an instance.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Keep it running.
    #[default]
    Up,
    /// Keep it stopped.
    Down,
}

impl Target {
    /// `up` / `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// Parses `up` / `down`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Target::Up),
            "down" => Some(Target::Down),
            _ => None,
        }
    }
}

/// One `[[instances]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// The agent's name (its ConnectionMethod name upstream, `--name`).
    pub name: String,
    /// Its listen address (`--listen`); keep it fixed so a restarted child is the same agent.
    pub listen: SocketAddr,
    /// The initial target state.
    #[serde(default)]
    pub target: Target,
    /// Its upstream (`--upstream`); default: the supervisor's `agent.upstream`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The child's agent configuration: the sections and keys of an agent's file
    /// (`hardware`, `storage`, `agent.roots`, ...), written to the file given to it.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Parts {
    #[serde(default)]
    host: HostSection,
    #[serde(default)]
    instances: Vec<InstanceSpec>,
}

impl HostFile {
    /// Reads and checks `file`.
    ///
    /// # Errors
    /// [`StartupError::Config`] naming the file and the key at fault: unreadable, bad TOML,
    /// unknown keys, duplicate instance names or listen addresses, an instance config that is
    /// not a valid agent configuration.
    pub fn load(file: &Path) -> Result<Self, StartupError> {
        let at = |e: &dyn std::fmt::Display| StartupError::Config(format!("{}: {e}", file.display()));
        let text = std::fs::read_to_string(file).map_err(|e| at(&e))?;
        let mut table: toml::Table = text.parse().map_err(|e| at(&e))?;
        let mut parts = toml::Table::new();
        for key in ["host", "instances"] {
            if let Some(v) = table.remove(key) {
                parts.insert(key.into(), v);
            }
        }
        let parts: Parts = parts.try_into().map_err(|e| at(&e))?;
        // The supervisor's own sections, as an agent's file (its environment is not read: the
        // children inherit it, and SUNFISH_AGENT__ variables are meant for them).
        let own = serde_json::to_value(&table).map_err(|e| at(&e))?;
        let mut supervisor = AgentConfig::load_layers(None, [], Some(&own)).map_err(|e| at(&e))?;
        // The view is not fetched from anywhere: central configuration is for the children.
        supervisor.agent.central_config = sunfish_agent::config::CentralMode::Off;
        let mut instances = BTreeMap::new();
        let mut listens = BTreeMap::new();
        for spec in parts.instances {
            spec.check().map_err(|e| at(&e))?;
            if let Some(other) = listens.insert(spec.listen, spec.name.clone()) {
                return Err(at(&format!("instances {} and {other} both listen on {}", spec.name, spec.listen)));
            }
            if spec.listen == supervisor.server.listen {
                return Err(at(&format!("instance {} listens on the supervisor's own address", spec.name)));
            }
            let name = spec.name.clone();
            if instances.insert(name.clone(), spec).is_some() {
                return Err(at(&format!("instance {name} is listed twice")));
            }
        }
        Ok(HostFile { supervisor, host: parts.host, instances })
    }
}

impl InstanceSpec {
    /// Checks the name and that `config` is an agent configuration.
    ///
    /// # Errors
    /// The reason, naming the instance.
    pub fn check(&self) -> Result<(), String> {
        sunfish_core::ResourcePath::root()
            .child(&self.name)
            .map_err(|e| format!("instances name {:?}: {e}", self.name))?;
        let cfg = self.agent_config().map_err(|e| format!("instance {}: {e}", self.name))?;
        cfg.agent.validate(&cfg.outbound).map_err(|e| format!("instance {}: {e}", self.name))?;
        Ok(())
    }

    /// The child's configuration as `sunfish-agent` will load it (without its flags).
    ///
    /// # Errors
    /// Unknown keys and bad values.
    pub fn agent_config(&self) -> Result<AgentConfig, StartupError> {
        let v: Value = serde_json::to_value(&self.config).map_err(|e| StartupError::Config(e.to_string()))?;
        AgentConfig::load_layers(None, [], Some(&v))
    }

    /// The child's file: `config` as TOML.
    pub fn file_text(&self) -> String {
        toml::to_string(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("host.toml");
        std::fs::write(&f, text).unwrap();
        (dir, f)
    }

    /// `conf/agent-host.toml` loads: three instances, the supervisor's own view settings.
    #[test]
    fn shipped_host_file_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent-host.toml");
        let h = HostFile::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.instances.len(), 3);
        assert_eq!(h.host, HostSection::default());
        assert_eq!(h.supervisor.agent.name, "host1");
        assert!(h.instances.values().all(|i| i.target == Target::Up));
        assert_eq!(h.instances["CXL-APPL"].agent_config().unwrap().hardware.manager, "mockup");
    }

    /// Unknown keys, in the host's sections or in an instance's agent config, are named;
    /// duplicates are refused.
    #[test]
    fn bad_files_are_refused() {
        let (_d, f) = write("[host]\ngrace = 1\n");
        assert!(HostFile::load(&f).unwrap_err().to_string().contains("grace"));
        let (_d, f) = write(
            "[[instances]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n[instances.config.hardware]\nmanger = \"x\"\n",
        );
        let e = HostFile::load(&f).unwrap_err().to_string();
        assert!(e.contains("instance A") && e.contains("manger"), "{e}");
        let (_d, f) = write(
            "[[instances]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n[[instances]]\nname = \"A\"\nlisten = \"127.0.0.1:2\"\n",
        );
        assert!(HostFile::load(&f).unwrap_err().to_string().contains("twice"));
        let (_d, f) = write(
            "[[instances]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\n[[instances]]\nname = \"B\"\nlisten = \"127.0.0.1:1\"\n",
        );
        assert!(HostFile::load(&f).unwrap_err().to_string().contains("both listen"));
        let (_d, f) = write("[serverr]\nlisten = \"127.0.0.1:1\"\n");
        assert!(HostFile::load(&f).unwrap_err().to_string().contains("serverr"));
    }

    /// An instance's config becomes the child's TOML file, which loads as the same config.
    #[test]
    fn child_file_round_trips() {
        let (_d, f) = write(
            "[[instances]]\nname = \"A\"\nlisten = \"127.0.0.1:1\"\ntarget = \"down\"\n[instances.config.agent]\nroots = [\"/redfish/v1/Fabrics/CXL\"]\n[instances.config.hardware.options]\nlatency_ms = 5\n",
        );
        let h = HostFile::load(&f).unwrap();
        let a = &h.instances["A"];
        assert_eq!(a.target, Target::Down);
        let dir = tempfile::tempdir().unwrap();
        let child = dir.path().join("a.toml");
        std::fs::write(&child, a.file_text()).unwrap();
        let loaded = AgentConfig::load_with_env(Some(&child), []).unwrap();
        assert_eq!(loaded, a.agent_config().unwrap());
        assert_eq!(loaded.agent.roots, ["/redfish/v1/Fabrics/CXL"]);
    }
}
