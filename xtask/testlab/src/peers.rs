//! The external programs and files the tests, the demo and the benchmarks use, read from
//! the one list `xtask/peers.txt` (which `xtask/scripts/setup.sh` installs from).
//!
//! Every process is started through [`command`] (or, inside a namespace, by a helper that
//! passes its program through [`program`]): a name that is not in the list is refused
//! with a message saying where to add it, and a listed program that is missing names
//! the package that provides it. So a new peer cannot be used without being listed, and
//! therefore without being installed by set-up. The project's own binaries (`xboot`,
//! built by cargo) are started with [`own`].
use std::path::{Path, PathBuf};
use std::process::Command;

/// The list, compiled in (the tests and xtask must agree with set-up on one file).
const LIST: &str = include_str!("../../peers.txt");

/// One entry of `xtask/peers.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// A program name (looked up in PATH), an absolute file path, `py:MODULE`, or
    /// `cache:PATH` (a file under the set-up cache, [`crate::payload::cache_dir`]).
    pub name: &'static str,
    /// Where it comes from: `apt`, `pip`, `rustup`, `cargo` or `deb` (a package of
    /// another Debian suite, `SUITE/PACKAGE`, unpacked into the cache).
    pub from: &'static str,
    /// What `from` installs.
    pub package: &'static str,
}

impl Peer {
    /// Whether it is here: in PATH, an existing file, or an importable module.
    pub fn present(&self) -> bool {
        if let Some(file) = cached(self.name) {
            return file.exists();
        }
        if let Some(module) = self.name.strip_prefix("py:") {
            return Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success());
        }
        if self.name.starts_with('/') {
            return Path::new(self.name).exists();
        }
        which(self.name).is_some()
    }

    /// "PROGRAM (apt package PKG)".
    pub fn describe(&self) -> String {
        format!("{} ({} package {})", self.name, self.from, self.package)
    }
}

/// The list, parsed once; a malformed line panics (it is a file of this repository,
/// and a unit test parses it).
pub fn all() -> &'static [Peer] {
    static PEERS: std::sync::OnceLock<Vec<Peer>> = std::sync::OnceLock::new();
    PEERS.get_or_init(|| parse(LIST).unwrap_or_else(|e| panic!("xtask/peers.txt: {e}")))
}

fn parse(text: &'static str) -> Result<Vec<Peer>, String> {
    let mut out: Vec<Peer> = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&'static str> = line.split_whitespace().collect();
        let [name, from, package] = cols[..] else {
            return Err(format!(
                "line {}: want `name from package`, got {line:?}",
                i + 1
            ));
        };
        if !["apt", "pip", "rustup", "cargo", "deb"].contains(&from) {
            return Err(format!("line {}: unknown source {from:?}", i + 1));
        }
        if (from == "deb") != name.starts_with("cache:") {
            return Err(format!(
                "line {}: files of `deb` packages, and only those, are named cache:PATH",
                i + 1
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(format!("line {}: {name} listed twice", i + 1));
        }
        out.push(Peer {
            name,
            from,
            package,
        });
    }
    Ok(out)
}

/// The listed entry named `name`.
pub fn find(name: &str) -> Option<&'static Peer> {
    all().iter().find(|p| p.name == name)
}

/// Every listed peer that is not here.
pub fn missing() -> Vec<&'static Peer> {
    all().iter().filter(|p| !p.present()).collect()
}

/// Ok, or an error naming every missing peer and its package (for xtask, right after
/// set-up).
pub fn check() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|p| p.describe()).collect();
    Err(format!(
        "missing after set-up: {} (xtask/scripts/setup.sh installs what xtask/peers.txt lists)",
        names.join(", ")
    ))
}

/// `name`, checked: it must be listed and present. Panics otherwise, with the fix in
/// the message. For argv[0] of commands run through `ip netns exec` and the like.
pub fn program(name: &str) -> &str {
    resolve(name);
    name
}

/// A `Command` for the listed program `name` ([`program`] checks it).
pub fn command(name: &str) -> Command {
    Command::new(path(name))
}

/// The listed program's full path (for programs installed outside the usual PATH
/// entries, such as pip's console scripts behind pyenv shims), checked as by
/// [`program`].
pub fn path(name: &str) -> PathBuf {
    resolve(name)
}

/// Where `name` is: a path outside the system's directories is a file of the project
/// or of a test (the xboot binary, a script a test wrote), not a peer, and is taken as
/// it is; anything else must be listed, and be here.
fn resolve(name: &str) -> PathBuf {
    let system = ["/usr/", "/bin/", "/sbin/", "/opt/"];
    if name.contains('/')
        && !name.starts_with("cache:")
        && !system.iter().any(|d| name.starts_with(d))
    {
        return PathBuf::from(name);
    }
    let Some(peer) = find(name) else {
        panic!(
            "{name:?} is not in xtask/peers.txt: add it with the package that provides it, \
             so that set-up installs it"
        );
    };
    let found = if let Some(file) = cached(name) {
        file.exists().then_some(file)
    } else if name.starts_with('/') {
        Path::new(name).exists().then(|| PathBuf::from(name))
    } else {
        which(name)
    };
    found.unwrap_or_else(|| panic!("{} is missing: run `cargo xtask setup`", peer.describe()))
}

/// A file of a `deb` peer (`cache:PATH`), checked as by [`program`]: its path in the
/// set-up cache.
pub fn file(name: &str) -> PathBuf {
    assert!(
        name.starts_with("cache:"),
        "{name:?} is not a cache:PATH peer"
    );
    resolve(name)
}

/// Where a `cache:PATH` name is.
fn cached(name: &str) -> Option<PathBuf> {
    name.strip_prefix("cache:")
        .map(|rel| crate::payload::cache_dir().join(rel))
}

/// A `Command` for one of the project's own binaries (`xboot`, built by cargo): not a
/// peer, so not in the list.
pub fn own(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(binary)
}

/// `name` in PATH (plus the sbin directories, which a non-login root shell may lack).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_rejects_bad_lines() {
        let peers = all();
        assert!(peers
            .iter()
            .any(|p| p.name == "sushy-emulator" && p.from == "pip"));
        assert!(peers
            .iter()
            .any(|p| p.name == "atftp" && p.package == "atftp"));
        assert!(parse("ip apt\n").unwrap_err().contains("line 1"));
        assert!(parse("ip brew iproute2\n")
            .unwrap_err()
            .contains("unknown source"));
        assert!(parse("ip apt a\nip apt b\n").unwrap_err().contains("twice"));
        assert!(parse("ip deb trixie/iproute2\n")
            .unwrap_err()
            .contains("cache:PATH"));
        assert!(parse("cache:x apt a\n").unwrap_err().contains("cache:PATH"));
        assert!(peers
            .iter()
            .any(|p| p.from == "deb" && p.package == "trixie/ipxe"));
    }

    #[test]
    #[should_panic(expected = "not in xtask/peers.txt")]
    fn an_unlisted_program_is_refused() {
        program("definitely-not-a-listed-peer");
    }

    /// Every process the tests, the demo and the benchmarks start goes through this
    /// module: no source outside it calls `Command::new` (tokio's included), and every
    /// program named as the first element of an argv literal handed to the namespace
    /// helpers (`.cmd(&["prog", ..])`, `.run(..)`, `.spawn(..)`) is listed.
    #[test]
    fn every_spawned_program_is_listed() {
        let root = crate::workspace_root();
        let mut files = vec![];
        for dir in ["tests", "xtask"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 20, "found only {} sources", files.len());
        let me = root.join("xtask/testlab/src/peers.rs");
        let listed: Vec<&str> = all().iter().map(|p| p.name).collect();
        let mut bad = vec![];
        for f in &files {
            if *f == me {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let at = format!("{}:{}", f.strip_prefix(&root).unwrap().display(), n + 1);
                if line.contains("Command::new(") {
                    bad.push(format!(
                        "{at}: starts a process with Command::new; use testlab::peers::command \
                         (or peers::own for the project's binaries)"
                    ));
                }
                for prog in argv_literals(line) {
                    if !listed.contains(&prog) {
                        bad.push(format!("{at}: runs {prog:?}, which xtask/peers.txt lacks"));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    /// Program names at the start of argv literals on a line: `(&["prog", ...` or
    /// `(&["prog"]` passed to one of the namespace helpers.
    fn argv_literals(line: &str) -> Vec<&str> {
        let mut out = vec![];
        for helper in [".cmd(&[", ".run(&[", ".spawn(&[", "run_in(&[", "exec(&["] {
            let mut rest = line;
            while let Some(i) = rest.find(helper) {
                rest = &rest[i + helper.len()..];
                let t = rest.trim_start();
                if let Some(lit) = t.strip_prefix('"') {
                    if let Some(end) = lit.find('"') {
                        out.push(&lit[..end]);
                    }
                }
            }
        }
        out
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
}
