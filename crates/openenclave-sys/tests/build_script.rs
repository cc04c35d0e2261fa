//! The `link` feature's build script, run for real: a nested `cargo build -p openenclave-sys
//! --features link` against a controlled environment (no `OPENENCLAVE_*` variables, a
//! `PKG_CONFIG_PATH` of our choosing, and its own target directory under Cargo's per-test temp
//! dir so it never touches the caller's build).
//!
//! openenclave-sys depends on nothing but `pkg-config`, so each nested build costs a few seconds
//! the first time and only a build-script rerun afterwards.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The nested builds share one target directory (so `pkg-config` compiles once); this keeps
/// them from racing for it.
static NESTED_CARGO: Mutex<()> = Mutex::new(());

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("openenclave-sys-build-script")
        .join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn nested_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("openenclave-sys-build-script")
        .join("target")
}

/// `cargo build -p openenclave-sys --features link` with every `OPENENCLAVE_*` variable removed,
/// pkg-config confined to `pkg_config_dir`, and `extra_env` on top.
fn cargo_build_with_link(pkg_config_dir: &Path, extra_env: &[(&str, &str)]) -> Output {
    let _serialised = NESTED_CARGO
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .args(["-p", "openenclave-sys", "--features", "link"])
        .env("CARGO_TARGET_DIR", nested_target_dir())
        // PKG_CONFIG_LIBDIR replaces pkg-config's built-in search path, so a machine that has the
        // SDK installed system-wide cannot change the outcome.
        .env("PKG_CONFIG_PATH", pkg_config_dir)
        .env("PKG_CONFIG_LIBDIR", pkg_config_dir)
        .env_remove("PKG_CONFIG_SYSROOT_DIR");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPENENCLAVE") {
            command.env_remove(name);
        }
    }
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"))
}

/// The `output` file of the most recent run of openenclave-sys's build script.
fn build_script_output() -> String {
    let build_dir = nested_target_dir().join("debug").join("build");
    let newest = fs::read_dir(&build_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", build_dir.display()))
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("openenclave-sys-")
        })
        .map(|entry| entry.path().join("output"))
        .filter(|output| output.is_file())
        .max_by_key(|output| fs::metadata(output).and_then(|m| m.modified()).ok());
    let newest = newest.unwrap_or_else(|| {
        panic!(
            "no build-script output for openenclave-sys under {}",
            build_dir.display()
        )
    });
    fs::read_to_string(&newest).unwrap_or_else(|e| panic!("cannot read {}: {e}", newest.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn without_an_sdk_the_build_fails_saying_what_to_install_or_set() {
    let empty_pkg_config_dir = scratch_dir("empty-pkgconfig");
    let output = cargo_build_with_link(&empty_pkg_config_dir, &[]);
    let report = describe(&output);
    println!("{report}");

    assert!(!output.status.success(), "expected a failure:\n{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "PKG_CONFIG_PATH",
        "oehost-gcc",
        "openenclaverc",
        "OPENENCLAVE_DIR",
        "OPENENCLAVE_LIB_DIR",
        "OPENENCLAVE_SYS_CHECK_ONLY=1",
        "pkg-config said",
    ] {
        assert!(
            stderr.contains(needle),
            "the failure does not mention {needle:?}:\n{report}"
        );
    }
}

#[test]
fn check_only_builds_without_an_sdk_and_links_nothing() {
    let empty_pkg_config_dir = scratch_dir("check-only-pkgconfig");
    let output = cargo_build_with_link(
        &empty_pkg_config_dir,
        &[("OPENENCLAVE_SYS_CHECK_ONLY", "1")],
    );
    let report = describe(&output);
    assert!(output.status.success(), "expected success:\n{report}");

    let script_output = build_script_output();
    println!("{script_output}");
    assert!(script_output.contains("cargo:warning="), "{script_output}");
    assert!(
        script_output.contains("cargo:check_only=1"),
        "{script_output}"
    );
    assert!(!script_output.contains("rustc-link-lib"), "{script_output}");
}

#[test]
fn a_pkg_config_file_for_oehost_is_found_and_linked() {
    let sdk = scratch_dir("fake-sdk");
    let lib_dir = sdk.join("lib/openenclave/host");
    let include_dir = sdk.join("include");
    let pkg_config_dir = sdk.join("share/pkgconfig");
    for dir in [&lib_dir, &include_dir.join("openenclave"), &pkg_config_dir] {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    // A test double of the SDK: nothing links against it (only the rlib is built), so an empty
    // archive stands in for the real library.
    fs::write(lib_dir.join("liboehost.a"), b"!<arch>\n").unwrap_or_else(|e| panic!("{e}"));
    // Shaped like the SDK's own oehost-gcc.pc, minus `Requires: openssl`, which would make the
    // test depend on OpenSSL's development files.
    let pc = format!(
        "prefix={prefix}\n\
         exec_prefix=${{prefix}}\n\
         includedir=${{prefix}}/include\n\
         libdir=${{prefix}}/lib\n\
         \n\
         Name: Open Enclave (test double)\n\
         Description: Open Enclave gcc flags and libraries for building hosts.\n\
         Version: 0.19.0\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}}/openenclave/host -loehost -ldl -lpthread\n",
        prefix = sdk.display()
    );
    fs::write(pkg_config_dir.join("oehost-gcc.pc"), pc).unwrap_or_else(|e| panic!("{e}"));

    let output = cargo_build_with_link(&pkg_config_dir, &[]);
    let report = describe(&output);
    assert!(output.status.success(), "expected success:\n{report}");

    let script_output = build_script_output();
    println!("{script_output}");
    let canonical_sdk = sdk.canonicalize().unwrap_or_else(|e| panic!("{e}"));
    for expected in [
        "cargo:rustc-link-lib=oehost".to_owned(),
        format!("cargo:rustc-link-search=native={}", lib_dir.display()),
        format!("cargo:include={}", canonical_sdk.join("include").display()),
        format!("cargo:root={}", canonical_sdk.display()),
        "cargo:version=0.19.0".to_owned(),
        "cargo:rerun-if-env-changed=PKG_CONFIG_PATH".to_owned(),
    ] {
        assert!(
            script_output.lines().any(|line| line == expected),
            "missing {expected:?} in the build-script output:\n{script_output}"
        );
    }
}

#[test]
fn an_sdk_older_than_0_12_is_rejected() {
    let sdk = scratch_dir("old-sdk");
    let pc = "prefix=/nonexistent\n\
              Name: Open Enclave (test double)\n\
              Description: too old for oe_allocator_mallinfo\n\
              Version: 0.11.0\n\
              Libs: -L${prefix}/lib/openenclave/host -loehost\n";
    fs::write(sdk.join("oehost-gcc.pc"), pc).unwrap_or_else(|e| panic!("{e}"));

    let output = cargo_build_with_link(&sdk, &[]);
    let report = describe(&output);
    assert!(!output.status.success(), "expected a failure:\n{report}");
    // pkg-config's own words, passed through: the version it found.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0.11.0"), "{report}");
}
