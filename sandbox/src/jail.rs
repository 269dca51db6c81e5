//! The OS jail for anything a tool executes (the manifest validator, an analysis program): a
//! separate process that
//!
//! - reads only the system's program and library directories and what the caller lists, and
//!   writes only a fresh scratch directory (Landlock; removed afterwards);
//! - has no network: its own empty network namespace where the kernel lets us make one, and in
//!   any case no TCP by Landlock and no sockets but Unix ones by seccomp;
//! - cannot start processes (seccomp refuses `fork`, `vfork` and `clone` without
//!   `CLONE_THREAD`), trace, mount, load modules, use io_uring or BPF, or signal anything outside
//!   itself (Landlock's signal scope);
//! - runs with no capabilities, an empty environment, `no_new_privs`, and limits on CPU time,
//!   address space, file size and open files; the parent adds wall time and output bytes, and
//!   kills the whole process group when either runs out.
//!
//! Landlock is applied best-effort (what the running kernel supports; [`Run::landlock`] says
//! what was in force); seccomp and the limits always are.

#![allow(unsafe_code)] // one `pre_exec`, below, with its safety argument

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use landlock::{ABI, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope};
use rustix::process::{Pid, Resource, Rlimit, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// `[assistant.jail]`: where scratch directories go and what a jailed program gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JailConfig {
    /// Parent of the per-run scratch directories; default the system's temporary directory.
    pub scratch_root: Option<PathBuf>,
    /// CPU seconds.
    pub cpu_seconds: u64,
    /// Address space, bytes.
    pub memory_bytes: u64,
    pub wall_ms: u64,
    /// Bytes of stdout and of stderr kept each; a program writing more is stopped.
    pub output_bytes: usize,
    /// Largest file the program may write (in its scratch directory).
    pub file_bytes: u64,
    pub open_files: u64,
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig { scratch_root: None, cpu_seconds: 5, memory_bytes: 512 << 20, wall_ms: 10_000, output_bytes: 1 << 20, file_bytes: 16 << 20, open_files: 64 }
    }
}

/// What is readable to every jailed program: the system's programs and libraries.
const SYSTEM_READABLE: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero", "/dev/urandom"];

/// How a jailed program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum End {
    Exited {
        code: i32,
    },
    /// Killed by a signal it got from the kernel (SIGXCPU/SIGKILL at the CPU limit, SIGSEGV…).
    Signalled {
        signal: i32,
    },
    /// Ran past the wall-time limit and was killed.
    TimedOut,
    /// Wrote more than the output limit and was killed.
    OutputLimit,
}

/// One run: how it ended, what it wrote (each stream at most the output limit).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed_ms: u64,
    /// Landlock as enforced: "full", "partial" (an older kernel: some rights not restricted), or
    /// "none" (no Landlock in this kernel; seccomp and the limits still hold).
    pub landlock: &'static str,
    pub network_namespace: bool,
}

impl Run {
    pub fn success(&self) -> bool {
        self.end == End::Exited { code: 0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: {0}")]
    Setup(String),
    #[error("jail: could not start {program}: {error}")]
    Spawn { program: String, error: std::io::Error },
}

/// The jail: configuration plus the filters built once.
#[derive(Debug)]
pub struct Jail {
    config: JailConfig,
    filters: Vec<BpfProgram>,
    landlock: &'static str,
}

/// The syscalls a jailed program never makes (answered EPERM).
fn refused_syscalls() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_fork, libc::SYS_vfork]);
    v
}

fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp on {}: {e}", std::env::consts::ARCH))?;
    let cond = |arg, len, op, value| SeccompCondition::new(arg, len, op, value).map_err(|e| e.to_string());
    let rule = |conds| SeccompRule::new(conds).map_err(|e| e.to_string());
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = refused_syscalls().into_iter().map(|s| (s, Vec::new())).collect();
    // Sockets: Unix ones only.
    refused.insert(libc::SYS_socket, vec![rule(vec![cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])?]);
    // clone: threads only (a new process has no CLONE_THREAD).
    refused.insert(libc::SYS_clone, vec![rule(vec![cond(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), 0)?])?]);
    let eperm = SeccompFilter::new(refused, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).map_err(|e| e.to_string())?;
    // clone3's flags are behind a pointer seccomp cannot read: "not implemented" makes the C
    // library fall back to clone, which the filter above checks.
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    let enosys = SeccompFilter::new(clone3, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for f in [eperm, enosys] {
        out.push(BpfProgram::try_from(f).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The Landlock ruleset: read (and execute) `readable`, everything in `scratch`, no TCP, no
/// signals or abstract sockets outside the jail.
fn ruleset(readable: &[PathBuf], scratch: &Path) -> Result<RulesetCreated, String> {
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut rs = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?;
    for p in readable {
        let Ok(meta) = std::fs::metadata(p) else { continue };
        let Ok(fd) = PathFd::new(p) else { continue };
        let access = if meta.is_dir() { AccessFs::from_read(abi) } else { AccessFs::from_read(abi) & AccessFs::from_file(abi) };
        rs = rs.add_rule(PathBeneath::new(fd, access)).map_err(err)?;
    }
    let fd = PathFd::new(scratch).map_err(|e| format!("landlock: {}: {e}", scratch.display()))?;
    rs.add_rule(PathBeneath::new(fd, AccessFs::from_all(abi))).map_err(err)
}

fn landlock_status(s: RulesetStatus) -> &'static str {
    match s {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    }
}

/// What the kernel enforces of our ruleset, found by applying it on a short-lived thread of
/// our own (Landlock restricts the calling thread; the thread ends right after).
fn probe_landlock() -> &'static str {
    let probe = || -> Option<&'static str> {
        let dir = tempfile::tempdir().ok()?;
        let status = ruleset(&[], dir.path()).ok()?.restrict_self().ok()?;
        Some(landlock_status(status.ruleset))
    };
    std::thread::spawn(probe).join().ok().flatten().unwrap_or("none")
}

impl Jail {
    pub fn new(config: JailConfig) -> Result<Jail, JailError> {
        Ok(Jail { filters: filters().map_err(JailError::Setup)?, landlock: probe_landlock(), config })
    }

    pub fn config(&self) -> &JailConfig {
        &self.config
    }

    /// Runs `program` with `args` in the jail, `stdin` as its input; `readable` are paths it may
    /// read besides the system's (the program itself is always readable).
    pub async fn run(&self, program: &Path, args: &[&str], stdin: &[u8], readable: &[PathBuf]) -> Result<Run, JailError> {
        let c = &self.config;
        let root = c.scratch_root.clone().unwrap_or_else(std::env::temp_dir);
        let scratch = tempfile::Builder::new()
            .prefix("jail-")
            .tempdir_in(&root)
            .map_err(|e| JailError::Setup(format!("scratch directory in {}: {e}", root.display())))?;
        let mut paths: Vec<PathBuf> = SYSTEM_READABLE.iter().map(PathBuf::from).collect();
        paths.push(program.to_path_buf());
        if let Ok(real) = std::fs::canonicalize(program) {
            paths.push(real);
        }
        paths.extend(readable.iter().cloned());
        let mut landlock = Some(ruleset(&paths, scratch.path()).map_err(JailError::Setup)?);
        let filters = self.filters.clone();
        let root_user = rustix::process::geteuid().is_root();
        let limits = [
            (Resource::Cpu, c.cpu_seconds),
            (Resource::As, c.memory_bytes),
            (Resource::Fsize, c.file_bytes),
            (Resource::Nofile, c.open_files),
            (Resource::Core, 0),
        ];

        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", scratch.path())
            .env("TMPDIR", scratch.path())
            .env("LANG", "C.UTF-8")
            .current_dir(scratch.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec. It allocates nothing (the
        // ruleset and the filters were built above and are moved in) and makes only system calls
        // through rustix, landlock and seccompiler; an error ends the child before the program
        // runs, and spawn reports it.
        unsafe {
            cmd.pre_exec(move || {
                if root_user {
                    // A network namespace of its own: no interfaces but a down loopback.
                    rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)?;
                }
                for (resource, limit) in limits {
                    rustix::process::setrlimit(resource, Rlimit { current: Some(limit), maximum: Some(limit) })?;
                }
                if root_user {
                    for cap in CapabilitySet::all().iter() {
                        let _ = rustix::thread::remove_capability_from_bounding_set(cap);
                    }
                    let none = CapabilitySet::empty();
                    rustix::thread::set_capabilities(None, CapabilitySets { effective: none, permitted: none, inheritable: none })?;
                }
                rustix::thread::set_no_new_privs(true)?;
                if let Some(rs) = landlock.take() {
                    rs.restrict_self().map_err(|_| std::io::Error::from(std::io::ErrorKind::PermissionDenied))?;
                }
                for f in &filters {
                    seccompiler::apply_filter(f).map_err(|_| std::io::Error::from(std::io::ErrorKind::PermissionDenied))?;
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|error| JailError::Spawn { program: program.display().to_string(), error })?;
        let pgid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let kill = || {
            if let Some(p) = pgid {
                let _ = rustix::process::kill_process_group(p, Signal::KILL);
            }
        };

        let mut input = child.stdin.take();
        let stdin = stdin.to_vec();
        let feed = async move {
            if let Some(i) = input.as_mut() {
                // A program that stops reading is not an error of ours.
                let _ = i.write_all(&stdin).await;
            }
            drop(input);
        };
        let cap = c.output_bytes;
        let out = child.stdout.take();
        let err = child.stderr.take();
        let work = async {
            let (_, o, e) = tokio::join!(feed, read_capped(out, cap), read_capped(err, cap));
            (o, e)
        };
        let wall = Duration::from_millis(c.wall_ms.max(1));
        let (end, stdout, stderr) = match tokio::time::timeout(wall, work).await {
            Err(_) => {
                kill();
                let _ = child.wait().await;
                (End::TimedOut, Vec::new(), Vec::new())
            }
            Ok(((o, o_over), (e, e_over))) if o_over || e_over => {
                kill();
                let _ = child.wait().await;
                (End::OutputLimit, o, e)
            }
            Ok(((o, _), (e, _))) => {
                let status = match tokio::time::timeout(wall.saturating_sub(started.elapsed()), child.wait()).await {
                    Ok(s) => s.map_err(|error| JailError::Spawn { program: program.display().to_string(), error })?,
                    Err(_) => {
                        kill();
                        let _ = child.wait().await;
                        return Ok(self.finish(End::TimedOut, o, e, started, root_user));
                    }
                };
                // The program is gone; anything it left running in its group goes too.
                kill();
                use std::os::unix::process::ExitStatusExt;
                let end = match (status.code(), status.signal()) {
                    (Some(code), _) => End::Exited { code },
                    (None, Some(signal)) => End::Signalled { signal },
                    (None, None) => End::Signalled { signal: 0 },
                };
                (end, o, e)
            }
        };
        Ok(self.finish(end, stdout, stderr, started, root_user))
    }

    fn finish(&self, end: End, stdout: Vec<u8>, stderr: Vec<u8>, started: Instant, netns: bool) -> Run {
        Run { end, stdout, stderr, elapsed_ms: started.elapsed().as_millis() as u64, landlock: self.landlock, network_namespace: netns }
    }
}

/// Reads `r` to its end keeping at most `cap` bytes; true when there was more.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else { return (Vec::new(), false) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (out, false),
            Ok(n) => {
                if out.len() + n > cap {
                    let room = cap - out.len();
                    out.extend_from_slice(&buf[..room]);
                    return (out, true);
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: &str = "/usr/bin/python3";

    fn jail(f: impl FnOnce(&mut JailConfig)) -> Jail {
        let mut c = JailConfig { wall_ms: 5_000, cpu_seconds: 2, output_bytes: 64 * 1024, ..JailConfig::default() };
        f(&mut c);
        Jail::new(c).expect("jail")
    }

    async fn py(j: &Jail, code: &str) -> Run {
        assert!(Path::new(PY).exists(), "{PY} is needed by these tests (Debian's python3)");
        j.run(Path::new(PY), &["-S", "-c", code], b"", &[]).await.expect("run")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test]
    async fn a_program_runs_reads_its_input_and_writes_its_scratch() {
        let j = jail(|_| {});
        let r = j
            .run(
                Path::new(PY),
                &[
                    "-S",
                    "-c",
                    "import sys,os; d=sys.stdin.read(); open('f','w').write(d); print(open('f').read().upper(), os.getcwd().startswith(os.environ['HOME']))",
                ],
                b"hello",
                &[],
            )
            .await
            .expect("run");
        assert!(r.success(), "{r:?} {}", text(&r.stderr));
        assert_eq!(text(&r.stdout), "HELLO True\n");
        assert_ne!(r.landlock, "none", "this kernel has Landlock; the probe should find it");
    }

    #[tokio::test]
    async fn no_network_not_even_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let j = jail(|_| {});
        let code = format!(
            "import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\nexcept OSError as e: print('refused', e.errno)\ntry:\n  socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); print('UDP6')\nexcept OSError as e: print('refused', e.errno)\ntry:\n  socket.socket(socket.AF_NETLINK, socket.SOCK_RAW); print('NETLINK')\nexcept OSError as e: print('refused', e.errno)"
        );
        let r = py(&j, &code).await;
        let out = text(&r.stdout);
        assert!(r.success(), "{r:?} {}", text(&r.stderr));
        assert_eq!(out.matches("refused").count(), 3, "{out}");
        assert!(listener.accept().is_err(), "nothing may have reached the listener");
    }

    #[tokio::test]
    async fn files_outside_the_scratch_directory_stay_out_of_reach() {
        let secret_dir = tempfile::tempdir().expect("tmp");
        let secret = secret_dir.path().join("token");
        std::fs::write(&secret, "s3cr3t").expect("write");
        let j = jail(|_| {});
        let code = format!(
            "import os\nfor p in ['{}', '/etc/passwd', '/proc/1/environ', '/root/.bash_history']:\n  try:\n    open(p).read(); print('READ', p)\n  except OSError as e: print('denied', p)\ntry:\n  open('/tmp/escape-{}', 'w').write('x'); print('WROTE')\nexcept OSError: print('denied write')\ntry:\n  os.listdir('/etc'); print('LISTED')\nexcept OSError: print('denied list')",
            secret.display(),
            std::process::id()
        );
        let r = py(&j, &code).await;
        let out = text(&r.stdout);
        assert!(r.success(), "{r:?} {}", text(&r.stderr));
        assert!(!out.contains("READ") && !out.contains("WROTE") && !out.contains("LISTED"), "{out}");
        assert_eq!(out.matches("denied").count(), 6, "{out}");
        assert!(!Path::new(&format!("/tmp/escape-{}", std::process::id())).exists());
        // What the caller lists is readable.
        let r = j.run(Path::new("/usr/bin/cat"), &[secret.to_str().expect("utf-8")], b"", std::slice::from_ref(&secret)).await.expect("run");
        assert_eq!(text(&r.stdout), "s3cr3t");
    }

    #[tokio::test]
    async fn a_fork_bomb_cannot_fork() {
        let j = jail(|_| {});
        let r = j.run(Path::new("/bin/sh"), &["-c", "b(){ b|b& }; b; echo done"], b"", &[]).await.expect("run");
        assert_ne!(r.end, End::TimedOut, "{r:?}");
        assert!(text(&r.stderr).to_lowercase().contains("fork"), "{}", text(&r.stderr));
        let r = py(&j, "import os, threading\ntry:\n  os.fork(); print('FORKED')\nexcept OSError as e: print('no fork', e.errno)\nt = threading.Thread(target=lambda: print('thread ok')); t.start(); t.join()").await;
        assert_eq!(text(&r.stdout), "no fork 1\nthread ok\n", "{}", text(&r.stderr));
    }

    #[tokio::test]
    async fn huge_output_is_cut_and_the_writer_stopped() {
        let j = jail(|_| {});
        let r = j.run(Path::new("/usr/bin/cat"), &["/dev/zero"], b"", &[]).await.expect("run");
        assert_eq!(r.end, End::OutputLimit);
        assert_eq!(r.stdout.len(), 64 * 1024);
    }

    #[tokio::test]
    async fn sleeping_forever_and_spinning_are_ended() {
        let j = jail(|c| c.wall_ms = 500);
        let r = j.run(Path::new("/usr/bin/sleep"), &["1000"], b"", &[]).await.expect("run");
        assert_eq!(r.end, End::TimedOut);
        assert!(r.elapsed_ms < 5_000, "{r:?}");
        // CPU time: the kernel stops a spinning program at its CPU limit, before the wall limit.
        let j = jail(|c| {
            c.cpu_seconds = 1;
            c.wall_ms = 20_000;
        });
        let r = py(&j, "while True: pass").await;
        assert!(matches!(r.end, End::Signalled { signal } if signal == libc::SIGXCPU || signal == libc::SIGKILL), "{r:?}");
    }

    #[tokio::test]
    async fn memory_and_environment_are_bounded() {
        let j = jail(|c| c.memory_bytes = 256 << 20);
        let r =
            py(&j, "import os\nprint(sorted(os.environ))\ntry:\n  b = bytearray(1 << 30); print('ALLOCATED')\nexcept MemoryError: print('no memory')").await;
        let out = text(&r.stdout);
        assert!(out.contains("no memory") && !out.contains("ALLOCATED"), "{out} {}", text(&r.stderr));
        assert!(out.starts_with("['HOME', 'LANG', 'PATH', 'TMPDIR']"), "the parent's environment stays out: {out}");
    }

    #[tokio::test]
    async fn no_tracing_signalling_or_mounting_outside() {
        let j = jail(|_| {});
        let parent = std::process::id();
        let code = format!(
            "import os, ctypes\ntry:\n  os.kill({parent}, 0); print('SIGNALLED')\nexcept OSError as e: print('denied kill', e.errno)\nlibc = ctypes.CDLL(None, use_errno=True)\nprint('ptrace', libc.ptrace(16, {parent}, 0, 0), ctypes.get_errno())\nprint('unshare', libc.unshare(0x10000000), ctypes.get_errno())\nprint('mount', libc.mount(b'none', b'.', b'tmpfs', 0, None), ctypes.get_errno())"
        );
        let r = py(&j, &code).await;
        let out = text(&r.stdout);
        assert!(out.contains("denied kill 1"), "{out} {}", text(&r.stderr));
        for call in ["ptrace", "unshare", "mount"] {
            assert!(out.contains(&format!("{call} -1 1")), "{call}: {out}");
        }
    }
}
