//! The shared storage contract, run against `memory`.

use std::sync::Arc;

use sunfish_storage_memory::MemoryBackend;

sunfish_core::storage_contract_tests!(async {
    Arc::new(MemoryBackend::new()) as Arc<dyn sunfish_core::StorageBackend>
});
