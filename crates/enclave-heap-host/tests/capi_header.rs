//! The hand-written header `include/enclave_heap_host.h` against the Rust side of the C ABI
//! (`src/capi.rs`):
//!
//! - it compiles alone as strict C99 and as C++11;
//! - a C program built with it prints the `sizeof`/`offsetof` of both structs, the return codes
//!   and what `ENCLAVE_HEAP_AGENT_OPTIONS_INIT` sets, and each must equal the Rust value;
//! - the functions it declares are exactly the `enclave_heap_*` functions the static library
//!   defines and the shared library exports: none missing, none undeclared.
//!
//! The static and shared libraries are the ones cargo built for this test run (see
//! `tests/c_host.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use enclave_heap_host::capi::{
    ENCLAVE_HEAP_ERR_INVALID, ENCLAVE_HEAP_ERR_NULL, ENCLAVE_HEAP_ERR_PANIC,
    ENCLAVE_HEAP_ERR_START, ENCLAVE_HEAP_ERR_STATE, ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE,
    ENCLAVE_HEAP_OK, enclave_heap_agent_options, enclave_heap_mallinfo_t,
};

fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi-header");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (install gcc, g++ and binutils)"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `target/<profile>/deps/libenclave_heap_host.{a,so}`, beside this test's own binary (see
/// `tests/c_host.rs` for why there).
fn library(extension: &str) -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let library = test_binary.with_file_name(format!("libenclave_heap_host.{extension}"));
    assert!(library.is_file(), "{} is missing", library.display());
    library
}

#[test]
fn header_compiles_alone_as_strict_c99_and_as_cxx() {
    let dir = work_dir();
    let source = dir.join("only_the_header.c");
    std::fs::write(&source, "#include \"enclave_heap_host.h\"\n").unwrap();
    for (compiler, standard) in [("cc", "-std=c99"), ("c++", "-std=c++11")] {
        let mut command = Command::new(compiler);
        command
            .args([
                standard,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
            ])
            .arg("-I")
            .arg(include_dir());
        if compiler == "c++" {
            command.args(["-x", "c++"]);
        }
        run(command.arg(&source));
    }
}

/// The C program's view of the ABI, one `name value` per line.
const LAYOUT_PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "enclave_heap_host.h"

#define SHOW(name, value) printf("%s %lld\n", name, (long long)(value))
#define FIELD(prefix, type, field)                                   \
    SHOW(prefix "." #field ".offset", offsetof(type, field));         \
    SHOW(prefix "." #field ".size", sizeof(((type*)0)->field))

int main(void) {
    enclave_heap_agent_options init = ENCLAVE_HEAP_AGENT_OPTIONS_INIT;
    SHOW("mallinfo.size", sizeof(enclave_heap_mallinfo_t));
    SHOW("mallinfo.align", _Alignof(enclave_heap_mallinfo_t));
    FIELD("mallinfo", enclave_heap_mallinfo_t, max_total_heap_size);
    FIELD("mallinfo", enclave_heap_mallinfo_t, current_allocated_heap_size);
    FIELD("mallinfo", enclave_heap_mallinfo_t, peak_allocated_heap_size);
    SHOW("options.size", sizeof(enclave_heap_agent_options));
    SHOW("options.align", _Alignof(enclave_heap_agent_options));
    FIELD("options", enclave_heap_agent_options, struct_size);
    FIELD("options", enclave_heap_agent_options, timeout_ms);
    FIELD("options", enclave_heap_agent_options, min_interval_ms);
    FIELD("options", enclave_heap_agent_options, push_max_age_ms);
    FIELD("options", enclave_heap_agent_options, socket_path);
    FIELD("options", enclave_heap_agent_options, tcp_address);
    FIELD("options", enclave_heap_agent_options, socket_group);
    SHOW("init.struct_size", init.struct_size);
    SHOW("init.timeout_ms", init.timeout_ms);
    SHOW("init.min_interval_ms", init.min_interval_ms);
    SHOW("init.push_max_age_ms", init.push_max_age_ms);
    SHOW("init.socket_path", init.socket_path != NULL);
    SHOW("init.tcp_address", init.tcp_address != NULL);
    SHOW("init.socket_group", init.socket_group);
    SHOW("ENCLAVE_HEAP_OK", ENCLAVE_HEAP_OK);
    SHOW("ENCLAVE_HEAP_ERR_NULL", ENCLAVE_HEAP_ERR_NULL);
    SHOW("ENCLAVE_HEAP_ERR_INVALID", ENCLAVE_HEAP_ERR_INVALID);
    SHOW("ENCLAVE_HEAP_ERR_STATE", ENCLAVE_HEAP_ERR_STATE);
    SHOW("ENCLAVE_HEAP_ERR_START", ENCLAVE_HEAP_ERR_START);
    SHOW("ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE", ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE);
    SHOW("ENCLAVE_HEAP_ERR_PANIC", ENCLAVE_HEAP_ERR_PANIC);
    return 0;
}
"#;

fn rust_view() -> Vec<(&'static str, i64)> {
    type M = enclave_heap_mallinfo_t;
    type O = enclave_heap_agent_options;
    let n = |value: usize| i64::try_from(value).unwrap();
    let mut view = vec![
        ("mallinfo.size", n(size_of::<M>())),
        ("mallinfo.align", n(align_of::<M>())),
    ];
    macro_rules! fields {
        ($prefix:literal, $type:ty, $($field:ident),+) => {
            $(
                view.push((
                    concat!($prefix, ".", stringify!($field), ".offset"),
                    n(offset_of!($type, $field)),
                ));
                view.push((
                    concat!($prefix, ".", stringify!($field), ".size"),
                    n(field_size(|value: &$type| &value.$field)),
                ));
            )+
        };
    }
    fields!(
        "mallinfo",
        M,
        max_total_heap_size,
        current_allocated_heap_size,
        peak_allocated_heap_size
    );
    view.push(("options.size", n(size_of::<O>())));
    view.push(("options.align", n(align_of::<O>())));
    fields!(
        "options",
        O,
        struct_size,
        timeout_ms,
        min_interval_ms,
        push_max_age_ms,
        socket_path,
        tcp_address,
        socket_group
    );
    view.extend([
        // What the library accepts and what a zeroed struct would mean instead.
        ("init.struct_size", n(size_of::<O>())),
        ("init.timeout_ms", 0),
        ("init.min_interval_ms", 0),
        ("init.push_max_age_ms", 0),
        ("init.socket_path", 0),
        ("init.tcp_address", 0),
        ("init.socket_group", -1),
        ("ENCLAVE_HEAP_OK", ENCLAVE_HEAP_OK.into()),
        ("ENCLAVE_HEAP_ERR_NULL", ENCLAVE_HEAP_ERR_NULL.into()),
        ("ENCLAVE_HEAP_ERR_INVALID", ENCLAVE_HEAP_ERR_INVALID.into()),
        ("ENCLAVE_HEAP_ERR_STATE", ENCLAVE_HEAP_ERR_STATE.into()),
        ("ENCLAVE_HEAP_ERR_START", ENCLAVE_HEAP_ERR_START.into()),
        (
            "ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE",
            ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE.into(),
        ),
        ("ENCLAVE_HEAP_ERR_PANIC", ENCLAVE_HEAP_ERR_PANIC.into()),
    ]);
    view
}

/// The size of a field's type, named through an accessor.
fn field_size<T, F>(_field: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}

#[test]
fn struct_layouts_init_macro_and_return_codes_match_the_rust_side() {
    let dir = work_dir();
    let source = dir.join("layout.c");
    let binary = dir.join("layout");
    std::fs::write(&source, LAYOUT_PROGRAM).unwrap();
    // C11 only for _Alignof in the test program; the header itself is checked as C99 above.
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(include_dir())
        .arg(&source)
        .arg("-o")
        .arg(&binary));
    let output = run(&mut Command::new(&binary));
    let c_view: Vec<(String, i64)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect();
    let rust_view: Vec<(String, i64)> = rust_view()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    let names = |view: &[(String, i64)]| -> Vec<String> {
        view.iter().map(|(name, _)| name.clone()).collect()
    };
    assert_eq!(
        names(&c_view),
        names(&rust_view),
        "the C program and the Rust list check different things"
    );
    let disagreements: Vec<String> = c_view
        .iter()
        .zip(&rust_view)
        .filter(|(c, rust)| c.1 != rust.1)
        .map(|((name, c), (_, rust))| format!("{name}: C {c}, Rust {rust}"))
        .collect();
    assert!(
        disagreements.is_empty(),
        "header and Rust disagree:\n{}",
        disagreements.join("\n")
    );
}

/// The functions the header declares: `enclave_heap_*` names followed by `(` in the
/// preprocessed header (so comments, including the usage example, are gone; the callback
/// typedef `(*enclave_heap_read_fn)(` does not match).
fn declared_functions() -> BTreeSet<String> {
    let dir = work_dir();
    let source = dir.join("declarations.c");
    std::fs::write(&source, "#include \"enclave_heap_host.h\"\n").unwrap();
    let output = run(Command::new("cc")
        .args(["-E", "-P", "-I"])
        .arg(include_dir())
        .arg(&source));
    let text = String::from_utf8(output.stdout).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("enclave_heap_") {
        let preceded_by_identifier = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_identifier && tail[end..].trim_start().starts_with('(') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Global functions named `enclave_heap_*` that `readelf` lists as defined in `file`.
/// readelf rather than nm: nm hands LLVM bitcode members to a system plugin that may be too old
/// for rustc's and then skips them silently.
fn defined_functions(file: &Path, table: &str) -> BTreeSet<String> {
    let output = run(Command::new("readelf").arg(table).arg("-W").arg(file));
    let mut names = BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `Num: Value Size Type Bind Vis Ndx Name [version]`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [number, _, _, kind, bind, _, section, name, ..] = fields.as_slice() else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if number.ends_with(':')
            && *kind == "FUNC"
            && *bind == "GLOBAL"
            && *section != "UND"
            && name.starts_with("enclave_heap_")
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// `enclave_heap_*` symbols of our EDL that are not part of the host C API but that other
/// features link in: the OCALL, which enclave-heap-host implements itself with its
/// `openenclave` feature (the header says not to give C hosts that build), and the ECALL and
/// `enclave_heap_publish`, which enclave-heap-trusted exports with its `enclave-api` feature
/// (only in `--all-features` builds of the workspace).
const NOT_THE_C_API: [&str; 3] = [
    "enclave_heap_ocall_push_mallinfo",
    "enclave_heap_ecall_mallinfo",
    "enclave_heap_publish",
];

fn c_api_functions(mut defined: BTreeSet<String>) -> BTreeSet<String> {
    defined.retain(|name| !NOT_THE_C_API.contains(&name.as_str()));
    defined
}

#[test]
fn header_declares_exactly_the_functions_the_libraries_export() {
    let declared = declared_functions();
    assert!(
        declared.contains("enclave_heap_agent_new") && declared.len() >= 7,
        "the header parse found too little: {declared:?}"
    );
    for name in &declared {
        assert!(
            !NOT_THE_C_API.contains(&name.as_str()),
            "{name} is declared in the header but listed as not part of the C API"
        );
    }
    let in_archive = c_api_functions(defined_functions(&library("a"), "--symbols"));
    assert_eq!(
        in_archive, declared,
        "static library (left) vs header (right)"
    );
    let exported = c_api_functions(defined_functions(&library("so"), "--dyn-syms"));
    assert_eq!(
        exported, declared,
        "shared library (left) vs header (right)"
    );
}
