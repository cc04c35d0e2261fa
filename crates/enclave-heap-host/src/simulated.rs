//! [`SimulatedSource`]: the simulated enclave as a heap source.

use std::sync::Arc;

use enclave_heap_sim::{PushTarget, SimConfig, SimulatedEnclave};
use openenclave_sys::{OE_OK, oe_mallinfo_t};

use crate::error::{OeResult, OpenError, ReadError};
use crate::push::PushSlot;
use crate::snapshot::{HeapSnapshot, SnapshotOrigin};
use crate::source::{HeapSource, SourceKind};

/// A simulated enclave, read through the same ECALL body that runs inside a real enclave.
#[derive(Debug)]
pub struct SimulatedSource {
    enclave: SimulatedEnclave,
}

impl SimulatedSource {
    /// Starts a simulated enclave (its heap and workload thread) with `config`, which must not
    /// ask for pushes (see [`start_pushing_to`](Self::start_pushing_to)).
    pub fn start(config: SimConfig) -> Result<Self, OpenError> {
        Ok(Self {
            enclave: SimulatedEnclave::new(config)?,
        })
    }

    /// Starts a simulated enclave whose pushes (`config.push`) land in `pushes`, as a real
    /// enclave's OCALLs land in the host's push sink.
    pub fn start_pushing_to(config: SimConfig, pushes: Arc<PushSlot>) -> Result<Self, OpenError> {
        let target: PushTarget = Arc::new(move |info: &oe_mallinfo_t| {
            pushes.push(info);
            OE_OK
        });
        Ok(Self {
            enclave: SimulatedEnclave::with_push_target(config, target)?,
        })
    }

    /// The simulated enclave, e.g. to allocate on its heap in tests or demos.
    pub fn enclave(&self) -> &SimulatedEnclave {
        &self.enclave
    }
}

impl HeapSource for SimulatedSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Simulated
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        let mut info = oe_mallinfo_t::default();
        OeResult::check(self.enclave.ecall_mallinfo(&mut info)).map_err(ReadError::Ecall)?;
        Ok(HeapSnapshot::from_mallinfo(&info, SnapshotOrigin::Ecall))
    }
}
