//! Errors of the host side, and the one place where an `oe_result_t` becomes a Rust `Result`.

use std::fmt;

use openenclave_sys::{OE_OK, oe_result_name, oe_result_t};

/// A non-`OE_OK` result code from the Open Enclave SDK or from our ECALL.
///
/// Displays as the SDK's own name (what `oe_result_str` returns), so logs and metric labels read
/// like the SDK documentation. Codes newer than our bindings show as `OE_RESULT_<n>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OeResult(pub oe_result_t);

impl OeResult {
    /// Turns a C result into a `Result`: `OE_OK` is `Ok(())`, anything else an error.
    pub fn check(result: oe_result_t) -> Result<(), OeResult> {
        if result == OE_OK {
            Ok(())
        } else {
            Err(OeResult(result))
        }
    }

    /// The SDK's name for this code, if our bindings know it.
    pub fn name(self) -> Option<&'static str> {
        oe_result_name(self.0)
    }
}

impl fmt::Display for OeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "OE_RESULT_{}", self.0),
        }
    }
}

impl fmt::Debug for OeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OeResult({self} = {})", self.0)
    }
}

impl std::error::Error for OeResult {}

/// A failed read of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The ECALL itself failed before or after running in the enclave, e.g. `OE_OUT_OF_THREADS`
    /// when all `NumTCS` enclave threads are busy, or `OE_ENCLAVE_ABORTING` after a crash.
    #[error("the mallinfo ECALL failed: {0}")]
    Ecall(OeResult),
    /// The ECALL ran but `oe_allocator_mallinfo` (or our ECALL body) inside the enclave failed.
    #[error("oe_allocator_mallinfo failed inside the enclave: {0}")]
    Mallinfo(OeResult),
}

impl ReadError {
    /// The OE result behind the failure.
    pub fn result(&self) -> OeResult {
        match self {
            ReadError::Ecall(result) | ReadError::Mallinfo(result) => *result,
        }
    }
}

/// Why a scheduled read (see [`crate::coalesce`]) produced no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// The enclave answered with an OE result other than `OE_OK`.
    #[error(transparent)]
    Source(#[from] ReadError),
    /// The read did not finish within its timeout.
    #[error("no answer within {}", crate::PromDuration(*.0))]
    Timeout(std::time::Duration),
    /// The source panicked while reading (a bug in the source, reported instead of crashing).
    #[error("the source panicked while reading: {0}")]
    Panicked(String),
    /// An agent (or CCF node) could not be read.
    #[error("agent: {0}")]
    Agent(#[from] crate::agent_client::AgentReadError),
}

impl ReadFailure {
    /// A stable, bounded label for the failure: the OE result name, `timeout` or `panic`.
    pub fn result_label(&self) -> String {
        match self {
            ReadFailure::Source(error) => error.result().to_string(),
            ReadFailure::Timeout(_) => "timeout".to_owned(),
            ReadFailure::Panicked(_) => "panic".to_owned(),
            ReadFailure::Agent(error) => error.result_label(),
        }
    }
}

/// A source that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The source URL names a kind of source that this build does not include.
    #[error(
        "{url}: {kind} sources need the `{feature}` feature; rebuild with `cargo build --release --features {feature}`"
    )]
    FeatureNotBuilt {
        /// The source URL as given.
        url: String,
        /// What kind of source it is.
        kind: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The URL names an agent in another process, which is read with an
    /// [`AgentClient`](crate::agent_client::AgentClient), not opened as an in-process source.
    #[error("{url}: an agent source is read over HTTP with an AgentClient, not opened in-process")]
    NotInProcess {
        /// The source URL as given.
        url: String,
    },
    /// The agent URL or its client options are unusable.
    #[error("{url}: {cause}")]
    AgentClient {
        /// The source URL as given.
        url: String,
        /// What is wrong.
        cause: crate::agent_client::AgentClientError,
    },
    /// The simulated enclave rejected its configuration.
    #[error("cannot start the simulated enclave: {0}")]
    Simulated(enclave_heap_sim::SimError),
    /// The enclave image does not exist or cannot be read.
    #[error("enclave image {path}: {cause}; check the path in the oe:// source URL")]
    EnclaveImage {
        /// The path from the URL.
        path: std::path::PathBuf,
        /// What the file system said.
        cause: std::io::Error,
    },
    /// The SDK refused to create the enclave.
    #[error("oe_create_enclave for {path} failed: {result}")]
    CreateEnclave {
        /// The enclave image.
        path: std::path::PathBuf,
        /// What the SDK returned.
        result: OeResult,
    },
}

impl From<enclave_heap_sim::SimError> for OpenError {
    fn from(error: enclave_heap_sim::SimError) -> Self {
        OpenError::Simulated(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openenclave_sys::{OE_FAILURE, OE_OUT_OF_THREADS};

    #[test]
    fn check_maps_ok_and_errors() {
        assert_eq!(OeResult::check(OE_OK), Ok(()));
        assert_eq!(OeResult::check(OE_FAILURE), Err(OeResult(OE_FAILURE)));
    }

    #[test]
    fn displays_sdk_names_and_unknown_codes() {
        assert_eq!(OeResult(OE_OUT_OF_THREADS).to_string(), "OE_OUT_OF_THREADS");
        assert_eq!(OeResult(4242).to_string(), "OE_RESULT_4242");
        assert_eq!(
            ReadError::Ecall(OeResult(OE_OUT_OF_THREADS)).to_string(),
            "the mallinfo ECALL failed: OE_OUT_OF_THREADS"
        );
    }
}
