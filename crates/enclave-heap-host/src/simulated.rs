//! [`SimulatedSource`]: the simulated enclave as a heap source.

use enclave_heap_sim::{SimConfig, SimulatedEnclave};
use openenclave_sys::oe_mallinfo_t;

use crate::error::{OeResult, OpenError, ReadError};
use crate::snapshot::{HeapSnapshot, SnapshotOrigin};
use crate::source::{HeapSource, SourceKind};

/// A simulated enclave, read through the same ECALL body that runs inside a real enclave.
#[derive(Debug)]
pub struct SimulatedSource {
    enclave: SimulatedEnclave,
}

impl SimulatedSource {
    /// Starts a simulated enclave (its heap and workload thread) with `config`.
    pub fn start(config: SimConfig) -> Result<Self, OpenError> {
        Ok(Self {
            enclave: SimulatedEnclave::new(config)?,
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
