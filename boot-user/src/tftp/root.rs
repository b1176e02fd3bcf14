//! A directory that files are served from, and the one function that maps a requested
//! name to a file inside it. Used by TFTP and by HTTP's `/firmware` and `/repo`.
//!
//! Rules: a leading `/` is taken as the root (TFTP clients send `/undionly.kpxe`), so
//! `/etc/passwd` means `ROOT/etc/passwd`; a `..` component is refused; symlinks are
//! followed but the final file must still be inside the root (a link out of the root is
//! refused and, at start, listed by [`Root::escaping_links`]); only regular files are
//! served.
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?}: no such file")]
    NotFound(String),
    #[error("{0:?}: '..' is not allowed")]
    DotDot(String),
    #[error("{name:?}: resolves to {target}, outside the served directory")]
    OutsideRoot { name: String, target: PathBuf },
    #[error("{0:?}: not a regular file")]
    NotAFile(String),
}

/// A served directory (canonicalized once).
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: &Path) -> std::io::Result<Root> {
        let dir = dir
            .canonicalize()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        if !dir.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(Root { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file inside the root that `name` designates.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, PathError> {
        let rel = Path::new(name.trim_start_matches('/'));
        let mut joined = self.dir.clone();
        for c in rel.components() {
            match c {
                Component::Normal(part) => joined.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(PathError::DotDot(name.into())),
                // Cannot occur after trimming the leading '/', but never join them.
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::DotDot(name.into()))
                }
            }
        }
        let target = joined
            .canonicalize()
            .map_err(|_| PathError::NotFound(name.into()))?;
        if !target.starts_with(&self.dir) {
            return Err(PathError::OutsideRoot {
                name: name.into(),
                target,
            });
        }
        if !target.is_file() {
            return Err(PathError::NotAFile(name.into()));
        }
        Ok(target)
    }

    /// Symlinks directly in the root (and its subdirectories, two levels down) that
    /// point outside it, as `(link, target)`: logged at start because they will not
    /// be served (Debian's `/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi` is one).
    pub fn escaping_links(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut out = Vec::new();
        self.scan(&self.dir, 2, &mut out);
        out
    }

    fn scan(&self, dir: &Path, depth: u32, out: &mut Vec<(PathBuf, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                if let Ok(target) = path.canonicalize() {
                    if !target.starts_with(&self.dir) {
                        out.push((path, target));
                    }
                }
            } else if ft.is_dir() && depth > 0 {
                self.scan(&path, depth - 1, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_table() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("undionly.kpxe"), "x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.efi"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.efi", d.join("inside-link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.join("outside-link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("outside-dir")).unwrap();
        let root = Root::new(d).unwrap();
        let ok = |p: &str| root.dir().join(p);
        let rows: Vec<(&str, Result<PathBuf, &str>)> = vec![
            ("undionly.kpxe", Ok(ok("undionly.kpxe"))),
            ("/undionly.kpxe", Ok(ok("undionly.kpxe"))),
            ("./sub/a.efi", Ok(ok("sub/a.efi"))),
            ("sub//a.efi", Ok(ok("sub/a.efi"))),
            ("inside-link", Ok(ok("sub/a.efi"))),
            ("../etc/passwd", Err("DotDot")),
            ("sub/../../etc/passwd", Err("DotDot")),
            ("/etc/passwd", Err("NotFound")),
            ("outside-link", Err("OutsideRoot")),
            ("outside-dir/secret", Err("OutsideRoot")),
            ("sub", Err("NotAFile")),
            ("", Err("NotAFile")),
            ("missing", Err("NotFound")),
        ];
        for (name, want) in rows {
            let got = root.resolve(name);
            match (&got, want) {
                (Ok(p), Ok(w)) => assert_eq!(p, &w, "{name}"),
                (Err(e), Err(kind)) => assert!(format!("{e:?}").starts_with(kind), "{name}: {e:?}"),
                _ => panic!("{name}: got {got:?}"),
            }
        }
        let mut links: Vec<_> = root
            .escaping_links()
            .into_iter()
            .map(|(l, _)| l.file_name().unwrap().to_owned())
            .collect();
        links.sort();
        assert_eq!(links, ["outside-dir", "outside-link"]);
    }
}
