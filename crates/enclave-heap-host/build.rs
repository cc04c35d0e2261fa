//! Build script of enclave-heap-host.
//!
//! With the `openenclave` feature it runs the SDK's `oeedger8r` on our EDL to generate the
//! untrusted half of the ECALL/OCALL marshalling (`enclave_heap_u.c`: the
//! `oe_create_enclave_heap_enclave` wrapper, the ECALL proxy and the OCALL table) and compiles it.
//! Hand-rolled marshalling would miss the SDK's own system ECALLs, so it is never an option.
//! Without the feature it does nothing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_OPENENCLAVE").is_none() {
        return;
    }
    let edl = Path::new("../enclave-heap-trusted/edl/enclave_heap.edl");
    println!("cargo:rerun-if-changed={}", edl.display());
    if env_var("OPENENCLAVE_SYS_CHECK_ONLY").as_deref() == Some("1") {
        println!(
            "cargo:warning=OPENENCLAVE_SYS_CHECK_ONLY=1: not running oeedger8r; this build type-checks the Open Enclave path but will not link"
        );
        return;
    }
    let include = env_var("DEP_OEHOST_INCLUDE").map(PathBuf::from);
    let root = env_var("DEP_OEHOST_ROOT").map(PathBuf::from);
    let edger8r = env_var("OEEDGER8R")
        .map(PathBuf::from)
        .or_else(|| root.as_ref().map(|root| root.join("bin/oeedger8r")))
        .filter(|path| path.is_file());
    let (Some(edger8r), Some(include)) = (edger8r, include) else {
        panic!(
            "\n\nenclave-heap-host: the `openenclave` feature needs the Open Enclave SDK's oeedger8r and headers.\n\
             Found: oeedger8r = {:?} (from OEEDGER8R or <sdk>/bin/oeedger8r), include dir = {:?}.\n\
             Install the Open Enclave SDK (0.12 or newer), then either\n  \
             source /opt/openenclave/share/openenclave/openenclaverc   (adds oehost-gcc.pc to PKG_CONFIG_PATH), or\n  \
             set OPENENCLAVE_DIR to the SDK prefix, or OEEDGER8R to the oeedger8r binary.\n\
             To type-check without the SDK (CI), set OPENENCLAVE_SYS_CHECK_ONLY=1.\n\n",
            env_var("OEEDGER8R"),
            env_var("DEP_OEHOST_INCLUDE"),
        );
    };
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let status = Command::new(&edger8r)
        .arg("--untrusted")
        .arg(edl)
        .arg("--search-path")
        .arg(&include)
        .arg("--search-path")
        .arg(include.join("openenclave/edl/sgx"))
        .arg("--untrusted-dir")
        .arg(&out_dir)
        .status()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", edger8r.display()));
    if !status.success() {
        panic!(
            "{} failed on {}: {status}",
            edger8r.display(),
            edl.display()
        );
    }
    cc::Build::new()
        .file(out_dir.join("enclave_heap_u.c"))
        .include(&include)
        .include(&out_dir)
        .compile("enclave_heap_u");
}

fn env_var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}
