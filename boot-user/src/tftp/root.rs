//! A directory that files are served from, and the one function that maps a requested
//! name to a file inside it. Used by TFTP and by HTTP's `/firmware` and `/repo`.
//!
//! Rules: a leading `/` is taken as the root (TFTP clients send `/undionly.kpxe`), so
//! `/etc/passwd` means `ROOT/etc/passwd`; a `..` component is refused; symlinks are
//! followed but the final file must still be inside the root (a link out of the root is
//! refused and, at start, listed by [`Root::escaping_links`]); only regular files are
//! served.
//!
//! [`Roots`] applies the same rules to absolute paths under several directories: the
//! image roots (`provision.image_roots`) that every kernel, initrd and live image must
//! be in, checked when an inventory is validated and again when a file is served.
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
    #[error("{0:?}: not under any of the allowed directories")]
    NotUnderRoots(String),
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

/// Directories that absolute file paths must be inside (the image roots). A directory
/// is canonicalized at each check, so one created after start counts, and one that does
/// not exist holds nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    dirs: Vec<PathBuf>,
    /// Where provision templates named by file are looked up
    /// ([`crate::template::files`]), carried here so validation sees them.
    templates: Vec<PathBuf>,
}

impl Roots {
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Roots {
        Roots {
            dirs: dirs.into_iter().collect(),
            templates: Vec::new(),
        }
    }

    /// These roots, with `dirs` as the templates directories.
    pub fn with_templates(mut self, dirs: Vec<PathBuf>) -> Roots {
        self.templates = dirs;
        self
    }

    /// The templates directories, in lookup order.
    pub fn templates(&self) -> &[PathBuf] {
        &self.templates
    }

    /// The directories as configured.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The configured directories, comma-separated, for messages.
    pub fn list(&self) -> String {
        let v: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// The regular file that the absolute `path` designates, if it is inside one of the
    /// roots once every symlink is followed: the path must be under a root as written
    /// (or under its canonical form), then resolves by [`Root::resolve`] (no `..`, the
    /// target inside the root). A link from one root into another is accepted.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, PathError> {
        let name = || path.display().to_string();
        let roots: Vec<(PathBuf, Option<Root>)> = self
            .dirs
            .iter()
            .map(|d| {
                let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
                (abs, Root::new(d).ok())
            })
            .collect();
        let inside_any = |t: &Path| {
            roots
                .iter()
                .any(|(_, r)| r.as_ref().is_some_and(|r| t.starts_with(r.dir())))
        };
        let mut last = None;
        for (dir, root) in &roots {
            let rel = path
                .strip_prefix(dir)
                .ok()
                .or_else(|| root.as_ref().and_then(|r| path.strip_prefix(r.dir()).ok()));
            let Some(rel) = rel else { continue };
            // Under a root that does not exist (yet): the file does not exist either.
            let (Some(root), Some(rel)) = (root, rel.to_str()) else {
                last = last.or(Some(PathError::NotFound(name())));
                continue;
            };
            match root.resolve(rel) {
                Ok(p) => return Ok(p),
                Err(PathError::OutsideRoot { target, .. })
                    if target.is_file() && inside_any(&target) =>
                {
                    return Ok(target)
                }
                Err(PathError::OutsideRoot { target, .. }) => {
                    last = Some(PathError::OutsideRoot {
                        name: name(),
                        target,
                    })
                }
                Err(PathError::DotDot(_)) => last = Some(PathError::DotDot(name())),
                Err(PathError::NotAFile(_)) => last = Some(PathError::NotAFile(name())),
                Err(_) => last = last.or(Some(PathError::NotFound(name()))),
            }
        }
        Err(last.unwrap_or_else(|| PathError::NotUnderRoots(name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_roots_confine_absolute_paths() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("shadow"), "s").unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("vmlinuz"), "k").unwrap();
        std::fs::write(b.path().join("initrd"), "i").unwrap();
        std::fs::create_dir(a.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("shadow"), a.path().join("esc")).unwrap();
        std::os::unix::fs::symlink(b.path().join("initrd"), a.path().join("to-b")).unwrap();
        // A root given through a symlink: paths written under the link are inside.
        let links = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(a.path(), links.path().join("images")).unwrap();
        let roots = Roots::new([
            links.path().join("images"),
            b.path().to_path_buf(),
            PathBuf::from("/nonexistent/xboot/root"),
        ]);
        let canon = |p: &Path| p.canonicalize().unwrap();
        let ok = |p: PathBuf| roots.resolve(&p).unwrap();
        assert_eq!(
            ok(a.path().join("vmlinuz")),
            canon(&a.path().join("vmlinuz"))
        );
        assert_eq!(
            ok(links.path().join("images/vmlinuz")),
            canon(&a.path().join("vmlinuz"))
        );
        assert_eq!(ok(a.path().join("to-b")), canon(&b.path().join("initrd")));
        let err = |p: PathBuf| match roots.resolve(&p).unwrap_err() {
            PathError::NotFound(_) => "NotFound",
            PathError::DotDot(_) => "DotDot",
            PathError::OutsideRoot { .. } => "OutsideRoot",
            PathError::NotAFile(_) => "NotAFile",
            PathError::NotUnderRoots(_) => "NotUnderRoots",
        };
        assert_eq!(err(PathBuf::from("/etc/shadow")), "NotUnderRoots");
        assert_eq!(err(outside.path().join("shadow")), "NotUnderRoots");
        assert_eq!(err(a.path().join("esc")), "OutsideRoot");
        assert_eq!(err(a.path().join("../etc/shadow")), "DotDot");
        assert_eq!(err(a.path().join("dir")), "NotAFile");
        assert_eq!(err(a.path().join("missing")), "NotFound");
        assert_eq!(err(PathBuf::from("/nonexistent/xboot/root/k")), "NotFound");
        assert_eq!(
            Roots::new([])
                .resolve(&a.path().join("vmlinuz"))
                .unwrap_err(),
            PathError::NotUnderRoots(a.path().join("vmlinuz").display().to_string())
        );
    }

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
