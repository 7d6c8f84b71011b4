//! The shared storage contract, run against `memory`.

use std::sync::Arc;

use sunfish_storage_memory::MemoryBackend;

sunfish_core::storage_contract_tests!(async {
    Arc::new(MemoryBackend::new()) as Arc<dyn sunfish_core::StorageBackend>
});

/// The same contract through [`sunfish_core::metrics::TimedStorage`], the wrapper every core
/// puts in front of its backend: timing must not change what a backend does.
mod timed {
    use std::sync::Arc;

    use sunfish_core::metrics::{StorageMetrics, TimedStorage};
    use sunfish_storage_memory::MemoryBackend;

    sunfish_core::storage_contract_tests!(async {
        let inner = Arc::new(MemoryBackend::new()) as Arc<dyn sunfish_core::StorageBackend>;
        Arc::new(TimedStorage::new(inner, StorageMetrics::default())) as Arc<dyn sunfish_core::StorageBackend>
    });
}
