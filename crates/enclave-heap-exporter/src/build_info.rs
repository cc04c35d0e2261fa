//! What this binary is: version, git revision and compiler, for `--version` and
//! `enclave_heap_exporter_build_info`.

// `concat!` takes literals only, so the feature list is a macro.
#[cfg(feature = "openenclave")]
macro_rules! features_literal {
    () => {
        "openenclave"
    };
}
#[cfg(not(feature = "openenclave"))]
macro_rules! features_literal {
    () => {
        "none (oe:// sources need --features openenclave)"
    };
}

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("ENCLAVE_HEAP_EXPORTER_REVISION");
/// The rustc version that built the binary.
pub const RUSTC_VERSION: &str = env!("ENCLAVE_HEAP_EXPORTER_RUSTC_VERSION");
/// `--version` output.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision: ",
    env!("ENCLAVE_HEAP_EXPORTER_REVISION"),
    ")\n  rustc: ",
    env!("ENCLAVE_HEAP_EXPORTER_RUSTC_VERSION"),
    "\n  features: ",
    features_literal!(),
);

/// The optional features compiled in.
pub const FEATURES: &str = features_literal!();
