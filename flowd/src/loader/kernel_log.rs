//! The programs' log of rare events (`flowd-ebpf/src/note.rs`): aya-log
//! records, read from their ring at every drain and passed to the `log`
//! facade, which the daemon's tracing subscriber shows (target
//! `flowd::kernel`). The programs rate-limit it themselves, so a drain
//! reads a few records at most.

use aya::Ebpf;
use tracing::warn;

use super::Datapath;

/// aya-log's reader of the `AYA_LOGS` ring. It must live as long as the
/// programs: dropping it closes the map (see DESIGN.md).
pub(super) type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Takes the log ring out of a loaded object; `None` (with a warning) if
/// the object has none, which costs only the log.
pub(super) fn open(ebpf: &mut Ebpf) -> Option<KernelLog> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "the programs' log is not available; their rare events are only counted");
            None
        }
    }
}

impl Datapath {
    /// Passes the programs' log records to the `log` facade.
    pub fn flush_kernel_log(&mut self) {
        if let Some(l) = self.kernel_log.as_mut() {
            l.flush();
        }
    }
}
