//! Where a provision template's source comes from: a file of the templates directories,
//! a built-in, or the value itself.
//!
//! An image's `provision_templates` value is a **name** when it is one line with no
//! `{{`, no `/` and no whitespace, and either ends in `.tmpl` or is a built-in name
//! ([`BUILTIN`], with or without `.tmpl`). Anything else is **inline** template source.
//! So Grendel's `"kickstart": "rocky.tmpl"` names the file `rocky.tmpl`, and
//! `"postscript": "#!/bin/sh\n..."` is a template. A name is looked up in the templates
//! directories in order (`provision.templates_dir`, see
//! [`crate::config::ProvisionConfig::template_dirs`]), then among the built-ins
//! (`kickstart.tmpl` is the built-in `kickstart`); a name found nowhere is an error at
//! inventory load.
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// The built-in templates: name (also reachable as `NAME.tmpl`) and source.
pub const BUILTIN: [(&str, &str); 4] = [
    ("kickstart", include_str!("builtin/kickstart.tmpl")),
    ("user-data", include_str!("builtin/user-data.tmpl")),
    ("meta-data", include_str!("builtin/meta-data.tmpl")),
    ("vendor-data", include_str!("builtin/vendor-data.tmpl")),
];

/// The source of the built-in `name` (`kickstart` or `kickstart.tmpl` ...).
pub fn builtin(name: &str) -> Option<&'static str> {
    let base = name.strip_suffix(".tmpl").unwrap_or(name);
    BUILTIN.iter().find(|(n, _)| *n == base).map(|(_, s)| *s)
}

/// Whether `value` names a template (see the module doc) rather than being its source.
pub fn is_name(value: &str) -> bool {
    !value.is_empty()
        && !value.contains("{{")
        && !value.contains('/')
        && !value.chars().any(char::is_whitespace)
        && (value.ends_with(".tmpl") || builtin(value).is_some())
}

/// Where a template's source was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The value itself.
    Inline,
    /// A file of a templates directory.
    File(PathBuf),
    /// A built-in.
    Builtin(&'static str),
}

/// The source `value` designates, looked up in `dirs` then the built-ins when it is a
/// name; `Err` says which name was not found where.
pub fn resolve<'a>(value: &'a str, dirs: &[PathBuf]) -> Result<(Cow<'a, str>, Origin), String> {
    if !is_name(value) {
        return Ok((Cow::Borrowed(value), Origin::Inline));
    }
    let file = if value.ends_with(".tmpl") {
        value.to_string()
    } else {
        format!("{value}.tmpl")
    };
    for d in dirs {
        let p = d.join(&file);
        match std::fs::read_to_string(&p) {
            Ok(s) => return Ok((Cow::Owned(s), Origin::File(p))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("template file {}: {e}", p.display())),
        }
    }
    if let Some(s) = builtin(value) {
        return Ok((Cow::Borrowed(s), Origin::Builtin(s)));
    }
    Err(format!(
        "template {value:?} is not a file of the templates directories ({}) nor a built-in ({})",
        list(dirs),
        BUILTIN.map(|(n, _)| n).join(", ")
    ))
}

fn list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "none".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `dir` if it is a directory (for defaults that apply only when present).
pub fn if_dir(dir: &Path) -> Option<PathBuf> {
    dir.is_dir().then(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_inline_sources_are_told_apart() {
        for name in ["rocky.tmpl", "kickstart", "user-data.tmpl", "meta-data"] {
            assert!(is_name(name), "{name}");
        }
        for src in [
            "#!/bin/sh\necho hi",
            "{{ $.host.Name }}.tmpl",
            "rocky",
            "a b.tmpl",
            "../x.tmpl",
            "",
            "kickstart\n",
        ] {
            assert!(!is_name(src), "{src:?}");
        }
    }

    #[test]
    fn files_come_before_builtins_and_missing_names_fail() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rocky.tmpl"), "rocky {{ $.host.Name }}").unwrap();
        std::fs::write(d.path().join("kickstart.tmpl"), "site kickstart").unwrap();
        let dirs = vec![PathBuf::from("/nonexistent-xboot"), d.path().to_path_buf()];
        let (s, o) = resolve("rocky.tmpl", &dirs).unwrap();
        assert_eq!(s, "rocky {{ $.host.Name }}");
        assert_eq!(o, Origin::File(d.path().join("rocky.tmpl")));
        assert_eq!(resolve("kickstart", &dirs).unwrap().0, "site kickstart");
        let (s, o) = resolve("meta-data.tmpl", &dirs).unwrap();
        assert!(matches!(o, Origin::Builtin(_)));
        assert!(s.contains("instance-id"));
        assert_eq!(resolve("x {{ . }}", &dirs).unwrap().1, Origin::Inline);
        let e = resolve("alma.tmpl", &dirs).unwrap_err();
        assert!(e.contains("\"alma.tmpl\""), "{e}");
        assert!(e.contains(&d.path().display().to_string()), "{e}");
    }
}
