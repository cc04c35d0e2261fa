//! Builds this crate the way a C enclave consumes it (a `staticlib` with the `enclave` feature and
//! `panic = "abort"`), links it the way Open Enclave links an enclave, and checks which symbols
//! the enclave's own libraries would then have to provide.
//!
//! The undefined symbols of the whole archive are not the answer: they include every reference
//! of every object in it, most of which an enclave link drops. So the archive is linked with the
//! flags OE's `oecore` target hands to every SGX enclave (`enclave/core/CMakeLists.txt` in
//! openenclave/openenclave):
//!
//! ```text
//! -nostdlib -nodefaultlibs -nostartfiles
//! -Wl,--no-undefined,-Bstatic,-Bsymbolic,--export-dynamic,-pie,--build-id
//! -Wl,-z,noexecstack -Wl,-z,now -Wl,-gc-sections
//! ```
//!
//! except that `--no-undefined` becomes `--unresolved-symbols=ignore-all`, so that what is left
//! undefined can be listed instead of failing the link. The link is rooted at the C entry points
//! (`enclave_heap_ecall_mallinfo`, `enclave_heap_publish`), as the generated `_t.c` and the
//! enclave's code would root it. `--export-dynamic` matters: it keeps every global function of
//! every object pulled in, which is how an unoptimised build drags in all of `core`.
//!
//! Both the unoptimised (`dev`) and the optimised (`release`, with the workspace's LTO setting)
//! builds are checked, in one target directory under Cargo's per-test temp dir (separate from
//! the caller's, whose lock the running `cargo test` holds).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What the enclave's final link resolves, and where from:
/// - `oe_allocator_mallinfo`: liboecore (dlmalloc) or liboesnmalloc;
/// - `oe_abort`: liboecore;
/// - `enclave_heap_ocall_push_mallinfo`: the application's oeedger8r-generated `*_t.c`;
/// - `memcpy`, `memmove`, `memset`, `memcmp`: liboecore builds musl's `string/mem*.c`
///   (`enclave/core/CMakeLists.txt`), and liboelibc musl's x86_64 assembly versions;
/// - `bcmp` (LLVM emits it for equality-only `memcmp`): liboelibc builds musl's `string/bcmp.c`
///   (`libc/CMakeLists.txt`). Note for C enclaves that do not link oelibc: the unoptimised build
///   needs it, the optimised one does not.
const PROVIDED_BY_THE_ENCLAVE_LINK: [&str; 8] = [
    "oe_allocator_mallinfo",
    "oe_abort",
    "enclave_heap_ocall_push_mallinfo",
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "bcmp",
];

/// Symbols only a hosted Rust runtime or a hosted C library would define. "From std" means:
/// the unwinder (`_Unwind_*`, which OE does not ship for C enclaves, and whose absence is what
/// makes signing fail), the unwinding personality, std's allocator shims and panic entry points
/// (`__rust_*`, `rust_begin_unwind`, `rust_panic`), anything mangled under `std::`, and the
/// glibc/libstdc++ services std itself builds on. None of these may be needed.
fn from_std_or_hosted_libc(symbol: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "_Unwind_",
        "__rust_",
        "__rdl_",
        "__rg_",
        "__cxa_",
        "pthread_",
        "__errno_location",
        "__tls_get_addr",
    ];
    const EXACT: [&str; 6] = [
        "rust_eh_personality",
        "rust_begin_unwind",
        "rust_panic",
        "abort",
        "dl_iterate_phdr",
        "__libc_start_main",
    ];
    PREFIXES.iter().any(|prefix| symbol.starts_with(prefix))
        || EXACT.contains(&symbol)
        || symbol.starts_with("_ZN3std")
        || (symbol.starts_with("_R") && symbol.contains("3std"))
}

fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{tool}` is needed to emulate the enclave link and list its symbols (install gcc and \
         binutils, e.g. `apt-get install build-essential`)"
    );
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Which symbols `readelf -sW` lists for `file` (an archive: every member), split into
/// (undefined, defined), deduplicated. readelf rather than nm: binutils' nm hands members that
/// carry LLVM bitcode to the system's LLVM plugin, which may be too old to read rustc's, and then
/// silently skips them (it does for the precompiled `core`).
fn readelf_symbols(file: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let output = run(Command::new("readelf").arg("-sW").arg(file));
    let mut undefined = BTreeSet::new();
    let mut defined = BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `Num: Value Size Type Bind Vis Ndx Name`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [number, _, _, _, _, _, section, name] = fields.as_slice() else {
            continue;
        };
        if !number.ends_with(':') {
            continue;
        }
        if *section == "UND" {
            undefined.insert((*name).to_owned());
        } else {
            defined.insert((*name).to_owned());
        }
    }
    (undefined, defined)
}

/// Builds `libenclave_heap_trusted.a` for `profile` (`dev` or `release`) with panic = "abort".
fn build_staticlib(profile: &str) -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("enclave-staticlib");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let mut command = Command::new(cargo);
    command
        .args(["rustc", "--quiet", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .args([
            "--lib",
            "--features",
            "enclave",
            "--profile",
            profile,
            "--crate-type",
            "staticlib",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // For every crate in the graph, as an enclave's own Cargo profile would say; the
        // precompiled `core` stays `unwind`, which is what the personality stub is for.
        .env(
            format!("CARGO_PROFILE_{}_PANIC", profile.to_uppercase()),
            "abort",
        );
    run(&mut command);
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    let archive = target_dir
        .join(profile_dir)
        .join("libenclave_heap_trusted.a");
    assert!(
        archive.is_file(),
        "cargo did not produce {}",
        archive.display()
    );
    archive
}

/// Links `archive` as OE links an enclave and returns (undefined, defined) symbol names.
fn link_like_an_enclave(archive: &Path, profile: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let image = archive.with_file_name(format!("emulated-enclave-{profile}.elf"));
    run(Command::new("gcc")
        .args([
            "-nostdlib",
            "-nodefaultlibs",
            "-nostartfiles",
            "-Wl,-Bstatic,-Bsymbolic,--export-dynamic,-pie,--build-id",
            "-Wl,-z,noexecstack",
            "-Wl,-z,now",
            "-Wl,-gc-sections",
            // Instead of OE's --no-undefined: keep going, so the leftovers can be listed.
            "-Wl,--unresolved-symbols=ignore-all",
            "-Wl,-e,enclave_heap_ecall_mallinfo",
            "-Wl,-u,enclave_heap_ecall_mallinfo",
            "-Wl,-u,enclave_heap_publish",
            "-o",
        ])
        .arg(&image)
        .arg(archive));
    readelf_symbols(&image)
}

fn check_profile(profile: &str) {
    require_tool("gcc");
    require_tool("readelf");
    let archive = build_staticlib(profile);

    let (whole_archive, _) = readelf_symbols(&archive);
    println!(
        "[{profile}] undefined somewhere in the archive ({} names, most of them defined by \
         another member or dropped by the link; not what an enclave needs):",
        whole_archive.len()
    );
    for symbol in &whole_archive {
        println!("    {symbol}");
    }

    let (undefined, defined) = link_like_an_enclave(&archive, profile);
    println!("[{profile}] undefined after an OE-style enclave link:");
    for symbol in &undefined {
        println!("    {symbol}");
    }

    for entry_point in ["enclave_heap_ecall_mallinfo", "enclave_heap_publish"] {
        assert!(
            defined.contains(entry_point),
            "[{profile}] {entry_point} is not defined in the linked image"
        );
    }
    // Without these the link dropped our code and the check below would prove nothing.
    for needed in ["oe_allocator_mallinfo", "enclave_heap_ocall_push_mallinfo"] {
        assert!(
            undefined.contains(needed),
            "[{profile}] {needed} should be needed by the ECALL/publish path: {undefined:?}"
        );
    }
    let from_std: Vec<&String> = undefined
        .iter()
        .filter(|symbol| from_std_or_hosted_libc(symbol))
        .collect();
    assert!(
        from_std.is_empty(),
        "[{profile}] the enclave would need symbols only std or a hosted libc provide: {from_std:?}"
    );
    let unexpected: Vec<&String> = undefined
        .iter()
        .filter(|symbol| !PROVIDED_BY_THE_ENCLAVE_LINK.contains(&symbol.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "[{profile}] symbols OE's enclave libraries do not provide: {unexpected:?} \
         (allowed: {PROVIDED_BY_THE_ENCLAVE_LINK:?})"
    );
}

#[test]
fn unoptimised_staticlib_needs_only_what_oe_provides() {
    check_profile("dev");
}

#[test]
fn optimised_staticlib_needs_only_what_oe_provides() {
    check_profile("release");
}
