//! Build script for openenclave-sys: finds and links the Open Enclave host library `oehost`.
//!
//! Nothing happens unless the `link` feature is on: the bindings alone type-check and build
//! anywhere, and only a host that really creates enclaves needs the SDK. With `link`, the search
//! order follows openssl-sys: explicit overrides first (`OPENENCLAVE_LIB_DIR`,
//! `OPENENCLAVE_INCLUDE_DIR`, `OPENENCLAVE_DIR`), then pkg-config's `oehost-gcc`. Whatever is found
//! is also published as `links = "oehost"` metadata (`DEP_OEHOST_INCLUDE`, `DEP_OEHOST_ROOT`, ...)
//! so that a dependant's build script can run `oeedger8r` against the same SDK.
//!
//! `OPENENCLAVE_SYS_CHECK_ONLY=1` skips the search so that `cargo check`/`cargo clippy
//! --all-features` work in CI without the SDK; anything that then tries to link fails.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The SDK release that introduced `oe_allocator_mallinfo`, the call this project exists for.
const MIN_OE_VERSION: &str = "0.12.0";

/// The pkg-config package the SDK installs for gcc-built hosts.
const PKG_CONFIG_NAME: &str = "oehost-gcc";

/// The libraries `oehost` itself needs when no pkg-config file says so (see `pkgconfig/` in the
/// SDK's sources: `-loehost -ldl -lpthread` plus OpenSSL's libcrypto).
const DEFAULT_EXTRA_LIBS: &str = "crypto:dl:pthread";

/// Reads an environment variable and tells Cargo to rerun this script when it changes.
///
/// Every variable this script looks at goes through here, so that no input can change without a
/// rebuild noticing.
fn env(name: &str) -> Option<OsString> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var_os(name)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

    // Cargo sets this for the `link` feature; features are already part of the rebuild key.
    if env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }

    if check_only_requested() {
        println!(
            "cargo:warning=OPENENCLAVE_SYS_CHECK_ONLY=1: not looking for the Open Enclave SDK \
             and not linking oehost; the result type-checks but will not link"
        );
        println!("cargo:check_only=1");
        return;
    }

    if let Some(sdk) = sdk_from_overrides() {
        sdk.emit_overrides();
        return;
    }

    match probe_pkg_config() {
        Ok(sdk) => sdk.emit_metadata(),
        Err(pkg_config_error) => panic!("{}", not_found_message(&pkg_config_error)),
    }
}

/// Whether the type-check-only escape hatch is on: exactly `OPENENCLAVE_SYS_CHECK_ONLY=1`, the
/// same test enclave-heap-host's build script makes, so the two never disagree (it can also read
/// our `DEP_OEHOST_CHECK_ONLY`).
fn check_only_requested() -> bool {
    env("OPENENCLAVE_SYS_CHECK_ONLY").is_some_and(|value| value == "1")
}

/// Where the SDK was found, and what to tell dependants about it.
struct FoundSdk {
    /// Directory holding `liboehost.a`.
    lib_dir: Option<PathBuf>,
    /// The SDK's `include` directory (holds `openenclave/host.h` and `openenclave/edl/`).
    include_dir: Option<PathBuf>,
    /// The SDK's install prefix (holds `bin/oeedger8r`).
    root: Option<PathBuf>,
    /// The SDK version, when pkg-config reported one.
    version: Option<String>,
}

impl FoundSdk {
    /// Link lines for an SDK given by environment variables, then the metadata.
    fn emit_overrides(&self) {
        if let Some(lib_dir) = &self.lib_dir {
            println!("cargo:rustc-link-search=native={}", lib_dir.display());
        }
        // Plain `-loehost`: the SDK ships only the static archive, which the linker picks up.
        println!("cargo:rustc-link-lib=oehost");
        let extra = env("OPENENCLAVE_LIBS")
            .map(|libs| libs.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_EXTRA_LIBS.to_owned());
        for lib in extra
            .split(':')
            .map(str::trim)
            .filter(|lib| !lib.is_empty())
        {
            println!("cargo:rustc-link-lib={lib}");
        }
        self.emit_metadata();
    }

    /// `cargo:KEY=VALUE` lines that become `DEP_OEHOST_KEY` in dependants' build scripts.
    fn emit_metadata(&self) {
        if let Some(include_dir) = &self.include_dir {
            println!("cargo:include={}", include_dir.display());
        }
        if let Some(root) = &self.root {
            println!("cargo:root={}", root.display());
        }
        if let Some(lib_dir) = &self.lib_dir {
            println!("cargo:libdir={}", lib_dir.display());
        }
        if let Some(version) = &self.version {
            println!("cargo:version={version}");
        }
    }
}

/// The SDK as given by `OPENENCLAVE_LIB_DIR` / `OPENENCLAVE_INCLUDE_DIR` / `OPENENCLAVE_DIR`,
/// or `None` when neither `OPENENCLAVE_LIB_DIR` nor `OPENENCLAVE_DIR` is set.
fn sdk_from_overrides() -> Option<FoundSdk> {
    let lib_dir = env("OPENENCLAVE_LIB_DIR").map(PathBuf::from);
    let include_dir = env("OPENENCLAVE_INCLUDE_DIR").map(PathBuf::from);
    let root = env("OPENENCLAVE_DIR").map(PathBuf::from);

    let (lib_dir, lib_dir_source) = match (lib_dir, &root) {
        (Some(lib_dir), _) => (lib_dir, "OPENENCLAVE_LIB_DIR"),
        // The SDK's CMake install puts the host library in lib/openenclave/host.
        (None, Some(root)) => (root.join("lib/openenclave/host"), "OPENENCLAVE_DIR"),
        (None, None) => return None,
    };
    let include_dir = include_dir.or_else(|| root.as_ref().map(|root| root.join("include")));

    // An explicit setting that points at the wrong place is a mistake worth stopping for here,
    // rather than as an `cannot find -loehost` from the linker much later.
    let archive = lib_dir.join("liboehost.a");
    if !archive.is_file() {
        panic!(
            "\n\n{lib_dir_source} is set, but {} does not exist.\n\n\
             Set OPENENCLAVE_LIB_DIR to the directory that holds liboehost.a (in an installed SDK: \
             <prefix>/lib/openenclave/host), or OPENENCLAVE_DIR to the SDK's install prefix (for \
             example /opt/openenclave), or unset both to use pkg-config.\n\n",
            archive.display()
        );
    }

    Some(FoundSdk {
        lib_dir: Some(lib_dir),
        include_dir,
        root,
        version: None,
    })
}

/// Finds the SDK through pkg-config; the `Err` is pkg-config's own explanation.
fn probe_pkg_config() -> Result<FoundSdk, String> {
    // Read through `env` for the rerun line; the pkg-config crate reads it again itself.
    env("PKG_CONFIG_PATH");
    let library = pkg_config::Config::new()
        .atleast_version(MIN_OE_VERSION)
        .probe(PKG_CONFIG_NAME)
        .map_err(|error| error.to_string())?;

    // The `.pc` file defines `prefix` relative to itself (`${pcfiledir}/../..`), so canonicalise
    // to hand dependants a clean path.
    let variable = |name: &str| {
        pkg_config::get_variable(PKG_CONFIG_NAME, name)
            .ok()
            .filter(|value| !value.is_empty())
            .map(|value| canonical(Path::new(&value)))
    };
    let include_dir = variable("includedir").or_else(|| library.include_paths.first().cloned());
    Ok(FoundSdk {
        lib_dir: library.link_paths.first().cloned(),
        include_dir,
        root: variable("prefix"),
        version: Some(library.version),
    })
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The panic message for "the `link` feature is on and there is no SDK": what to install or set.
fn not_found_message(pkg_config_error: &str) -> String {
    let show = |name: &str| {
        env::var_os(name).map_or_else(
            || "(not set)".to_owned(),
            |value| value.to_string_lossy().into_owned(),
        )
    };
    let indented_error = pkg_config_error
        .trim()
        .lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "

Could not find the Open Enclave SDK host library `oehost`, which the `link` feature of
openenclave-sys needs (it links hosts that create and call real enclaves).

Do one of these:

  1. Install the Open Enclave SDK, version {MIN_OE_VERSION} or newer (Ubuntu: the `open-enclave`
     package from packages.microsoft.com; it installs to /opt/openenclave), then either
         source /opt/openenclave/share/openenclave/openenclaverc
     or set PKG_CONFIG_PATH to the directory that contains {PKG_CONFIG_NAME}.pc:
         export PKG_CONFIG_PATH=/opt/openenclave/share/pkgconfig

  2. Point at an SDK directly: set OPENENCLAVE_DIR to its install prefix (it must contain
     lib/openenclave/host/liboehost.a and include/openenclave), or OPENENCLAVE_LIB_DIR to the
     directory holding liboehost.a (and optionally OPENENCLAVE_INCLUDE_DIR).

  3. To type-check only (cargo check / cargo clippy --all-features in CI, no SDK), set
         OPENENCLAVE_SYS_CHECK_ONLY=1
     The result will not link.

pkg-config said, looking for `{PKG_CONFIG_NAME}` (>= {MIN_OE_VERSION}):
{indented_error}

PKG_CONFIG_PATH = {pkg_config_path}
$HOST = {host}
$TARGET = {target}
openenclave-sys = {version}

",
        pkg_config_path = show("PKG_CONFIG_PATH"),
        host = show("HOST"),
        target = show("TARGET"),
        version = env!("CARGO_PKG_VERSION"),
    )
}
