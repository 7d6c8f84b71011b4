//! A custom agent for a made-up CXL memory appliance (docs/AGENTS.md walks through it).
//!
//! The appliance accepts `PATCH {"VolatileSizeLimitMiB": n}` on its memory modules
//! (`/redfish/v1/Chassis/<appliance>/Memory/<module>`): it refuses more than the module's
//! `CapacityMiB`, rounds down to its 1024 MiB block size, and lights the appliance's locate LED,
//! a change it reports by itself. Every other write is applied as sent.
//!
//! Run it over the project's appliance tree; configuration as for `sunfish-agent`
//! (conf/agent.toml keys, a file given as the only argument, `SUNFISH_AGENT__SECTION__KEY`):
//!
//! ```text
//! SUNFISH_AGENT__SERVER__LISTEN=127.0.0.1:5003 cargo run -p sunfish-agent --example custom_agent
//! curl -X PATCH -H 'Content-Type: application/json' -d '{"VolatileSizeLimitMiB": 5000}' \
//!     http://127.0.0.1:5003/redfish/v1/Chassis/MemoryAppliance/Memory/Media1
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sunfish_agent::AgentConfig;
use sunfish_core::hardware::{ChangeSink, HardwareChange, HardwareManager};
use sunfish_core::{merge_patch, Core, Error, Operation, Result, StartupError, WriteOp};
use tokio::sync::OnceCell;

/// The appliance's allocation granularity.
const BLOCK_MIB: u64 = 1024;

/// The "hardware": here only the channel for changes it makes by itself.
#[derive(Default)]
struct Appliance {
    changes: OnceCell<ChangeSink>,
}

#[async_trait]
impl HardwareManager for Appliance {
    async fn apply(&self, core: &Core, op: &WriteOp) -> Result<Option<Value>> {
        let limit = op.payload.as_ref().and_then(|p| p.get("VolatileSizeLimitMiB"));
        let (Operation::Patch, Some(limit)) = (op.operation, limit) else {
            return Ok(None); // anything else: applied as sent
        };
        let mut module = core.get(&op.path).await?.value().into_owned();
        let capacity = module["CapacityMiB"].as_u64().unwrap_or(0);
        let wanted = limit.as_u64().filter(|n| *n <= capacity).ok_or_else(|| {
            Error::property_value("VolatileSizeLimitMiB", format!("must be a whole number up to {capacity}"))
        })?;
        let mut delta = op.payload.clone().unwrap_or_default();
        delta["VolatileSizeLimitMiB"] = Value::from(wanted / BLOCK_MIB * BLOCK_MIB);
        merge_patch(&mut module, &delta);
        // The appliance lights its locate LED while a module is reconfigured.
        if let (Some(sink), Some(chassis)) = (self.changes.get(), op.path.parent().and_then(|m| m.parent())) {
            let mut appliance = core.get(&chassis).await?.value().into_owned();
            appliance["LocationIndicatorActive"] = Value::Bool(true);
            sink.report(HardwareChange::Changed(chassis, appliance));
        }
        Ok(Some(module)) // the whole resource as the device now has it: this is stored
    }

    async fn start(&self, _core: &Core, changes: ChangeSink) -> Result<()> {
        let _ = self.changes.set(changes);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), StartupError> {
    let file = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let mut cfg = AgentConfig::load(file.as_deref())?;
    if cfg.storage.seed == "builtin" {
        cfg.storage.seed = concat!(env!("CARGO_MANIFEST_DIR"), "/mockups/cxl-appliance").into();
    }
    sunfish_agent::init_logging(&cfg.log.level);
    sunfish_agent::serve(&cfg, Some(Arc::new(Appliance::default()))).await
}
