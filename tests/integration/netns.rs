//! RAII network namespaces for tests: every namespace a test creates is named uniquely,
//! every process started in it is killed (by pid) and the namespace deleted on drop,
//! even when the test panics. Nothing here touches the host's own interfaces.
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    children: Mutex<Vec<Child>>,
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The argv running `script` with `sh -c` in a private mount namespace (`unshare --mount
/// --propagation private`: what it mounts only it and its children see), `args` after the
/// script (its `$0`, `$1`, ...).
pub fn private_mounts_sh<'a>(script: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ];
    argv.extend_from_slice(args);
    argv
}

impl Netns {
    /// A new, empty namespace `xb-<prefix>-<pid>-<n>` with loopback up and IPv6 off.
    pub fn new(prefix: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("xb-{prefix}-{}-{n}", std::process::id());
        run(testlab::peers::command("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            children: Mutex::new(vec![]),
        };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns.run(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = testlab::peers::command("ip");
        let (prog, args) = argv.split_first().expect("an argv with a program");
        c.args(["netns", "exec", &self.name])
            .arg(testlab::peers::program(prog))
            .args(args);
        c
    }

    /// Runs argv in the namespace and asserts success.
    pub fn run(&self, argv: &[&str]) -> Output {
        run(&mut self.cmd(argv))
    }

    /// Starts argv in the namespace in the background; killed when the namespace drops.
    /// Returns the pid. (`ip netns exec` execs in place, so the pid is the command's.)
    pub fn spawn(&self, argv: &[&str], stdout: Stdio, stderr: Stdio) -> u32 {
        let child = self
            .cmd(argv)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        pid
    }

    /// Creates a veth pair with one end in each namespace, addresses them (CIDR, may be
    /// empty for none) and brings both up.
    pub fn veth(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
        a.run(&[
            "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
        ]);
        for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
            if !cidr.is_empty() {
                ns.run(&["ip", "addr", "add", cidr, "dev", ifname]);
            }
            ns.run(&["ip", "link", "set", ifname, "up"]);
        }
    }

    /// Sets an interface's MAC address.
    pub fn set_mac(&self, ifname: &str, mac: &str) {
        self.run(&["ip", "link", "set", ifname, "address", mac]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still inside was started by this test (the namespace is ours).
        if let Ok(out) = testlab::peers::command("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = testlab::peers::command("kill").args(["-9", pid]).status();
            }
        }
        let _ = testlab::peers::command("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Skips (returns true) when not root: namespaces need CAP_NET_ADMIN. The xtask test
/// command runs as root, so in CI nothing is skipped.
pub fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for network namespaces");
        return true;
    }
    false
}
