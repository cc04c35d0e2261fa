//! Who may use the agent's socket: its directory checked before binding, and each peer's
//! `SO_PEERCRED` credentials against `AgentConfig::allowed_peers`, refusals logged once per
//! (uid, gid). The cases that need a second user (another uid connecting, a directory owned by
//! someone else) run only as root, and say so when skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use enclave_heap_host::agent::{
    AgentConfig, AgentEnclave, AgentError, AgentServer, AgentSocket, AllowedPeers,
    SocketDirectoryCheck,
};
use enclave_heap_host::{SourceSpec, open_source};

/// Everything the agents in this test binary log, for the "logged once" checks.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .init();
        log
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged_lines(containing: &[&str]) -> Vec<String> {
    let log = log().lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| containing.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
        .collect()
}

fn ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn enclave() -> Vec<AgentEnclave> {
    let spec: SourceSpec = "sim:idle?heap_pages=16".parse().unwrap();
    vec![AgentEnclave {
        name: "app".to_owned(),
        source: open_source(&spec).unwrap(),
    }]
}

fn config(path: &Path, allowed_peers: AllowedPeers) -> AgentConfig {
    AgentConfig {
        socket: Some(AgentSocket {
            path: path.to_owned(),
            group: None,
        }),
        allowed_peers,
        ..AgentConfig::default()
    }
}

/// `GET path` over the socket with `Connection: close`: (status, headers and body).
fn get(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, answer)
}

#[test]
fn an_allowed_uid_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let (uid, _) = ids();
    let agent = AgentServer::start(
        config(
            &socket,
            AllowedPeers {
                uids: vec![uid],
                gids: vec![],
            },
        ),
        enclave(),
    )
    .unwrap();
    let (status, answer) = get(&socket, "/node/memory");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"max_total_heap_size\":65536"), "{answer}");
    agent.stop();
}

#[test]
fn a_peer_outside_the_lists_gets_403_and_is_logged_once() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let (uid, gid) = ids();
    let agent = AgentServer::start(
        config(
            &socket,
            AllowedPeers {
                uids: vec![uid.wrapping_add(4242)],
                gids: vec![gid.wrapping_add(4242)],
            },
        ),
        enclave(),
    )
    .unwrap();
    for path in ["/node/memory", "/enclaves", "/-/healthy"] {
        let (status, answer) = get(&socket, path);
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer.contains("\"error\":\"forbidden\""), "{answer}");
        assert!(
            answer.contains(&format!("peer uid {uid} gid {gid} may not read this agent")),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        // No figures leak into a refusal.
        assert!(!answer.contains("heap_size"), "{answer}");
    }
    agent.stop();
    let refusals = logged_lines(&[
        "refused a peer on the agent socket",
        &format!("uid={uid} gid={gid}"),
    ]);
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    println!("logged once for three refused requests: {}", refusals[0]);
}

#[test]
fn allowed_peers_and_tcp_together_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let error = AgentServer::start(
        AgentConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..config(
                &socket,
                AllowedPeers {
                    uids: vec![0],
                    gids: vec![],
                },
            )
        },
        enclave(),
    )
    .unwrap_err();
    assert!(matches!(error, AgentError::PeersOverTcp), "{error:?}");
    assert!(error.to_string().contains("TCP has no peer credentials"));
    assert!(
        !socket.exists(),
        "nothing is bound when the start is refused"
    );
}

#[test]
fn socket_directories_others_could_change_are_refused_or_warned_about() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = shared.join("agent.sock");

    let strict = AgentConfig {
        socket_directory: SocketDirectoryCheck::Strict,
        ..config(&socket, AllowedPeers::default())
    };
    let error = AgentServer::start(strict.clone(), enclave()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, AgentError::InsecureDirectory { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("mode 0777") && message.contains("no sticky bit"),
        "{message}"
    );
    assert!(message.contains(&shared.display().to_string()), "{message}");

    // The default (a Kubernetes emptyDir is 0777 or 2777) starts, with a warning.
    let agent = AgentServer::start(config(&socket, AllowedPeers::default()), enclave()).unwrap();
    agent.stop();
    let warnings = logged_lines(&[
        "may be written by any user and has no sticky bit",
        &shared.display().to_string(),
    ]);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");

    // With the sticky bit (as /tmp has it) even the strict check is satisfied.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    AgentServer::start(strict, enclave()).unwrap().stop();

    // A parent that is not a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let error = AgentServer::start(
        config(&file.join("agent.sock"), AllowedPeers::default()),
        enclave(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("not a directory"), "{error}");
}

/// Root only: a directory owned by another user, and a peer connecting as another user.
#[test]
fn another_users_directory_and_peer_are_refused() {
    const NOBODY: u32 = 65534;
    if ids().0 != 0 {
        println!("skipped: needs root to create a second user's directory and connection");
        return;
    }
    log();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let error = AgentServer::start(
        config(&theirs.join("agent.sock"), AllowedPeers::default()),
        enclave(),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("owned by uid {NOBODY}, neither the agent's user")),
        "{error}"
    );

    let Ok(curl) = which("curl") else {
        println!("skipped the second-user connection: curl is not installed");
        return;
    };
    let socket = dir.path().join("agent.sock");
    // Mode 0660 and group nogroup: the file mode lets nobody:nogroup connect; the peer check
    // decides.
    let as_nobody = |allowed: AllowedPeers| {
        let agent = AgentServer::start(
            AgentConfig {
                socket: Some(AgentSocket {
                    path: socket.clone(),
                    group: Some(NOBODY),
                }),
                allowed_peers: allowed,
                ..AgentConfig::default()
            },
            enclave(),
        )
        .unwrap();
        let output = std::os::unix::process::CommandExt::gid(
            std::os::unix::process::CommandExt::uid(&mut Command::new(&curl), NOBODY),
            NOBODY,
        )
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(&socket)
        .arg("http://agent/node/memory")
        .output()
        .unwrap();
        agent.stop();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let refused = as_nobody(AllowedPeers {
        uids: vec![0],
        gids: vec![0],
    });
    assert!(refused.ends_with("\n403"), "{refused}");
    assert!(
        refused.contains(&format!("peer uid {NOBODY} gid {NOBODY}")),
        "{refused}"
    );
    let admitted = as_nobody(AllowedPeers {
        uids: vec![],
        gids: vec![NOBODY],
    });
    assert!(admitted.ends_with("\n200"), "{admitted}");
    let refusals = logged_lines(&[
        "refused a peer on the agent socket",
        &format!("uid={NOBODY} gid={NOBODY}"),
    ]);
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}
