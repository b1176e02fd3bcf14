//! The template engine for kernel command lines, iPXE scripts and postscripts.
//!
//! Grendel (and so ClusterFactory's deployment guide) writes these as Go `text/template`
//! templates with sprig functions, e.g.
//! `BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }} grendel.hostname={{ $.host.Name }}`.
//! This module implements the subset of that language such templates use:
//! text and `{{ }}` actions with `{{-`/`-}}` trimming and `{{/* comments */}}`; pipelines
//! (`a | f x | g`), parenthesised pipelines, field chains (`.a.b`, `$.a.b`, `$x.a`),
//! variables (`$x := ...`, `$x = ...`), string (`"..."`, `` `raw` ``), integer, `true`,
//! `false` and `nil` literals; `if`/`else if`/`else`, `range` (with `$i, $v :=`) and
//! `with` blocks; `define`/`template`/`block` within one template (a defined body's
//! fields are checked when it renders, as its `.` is what it is called with); and the
//! functions listed in [`funcs`]. Floats, character literals, `break` and `continue`
//! are refused with a clear error.
//!
//! Why not the `gtmpl` crate (Go templates in Rust): tried first, its lexer spins
//! forever on an unclosed action such as `{{ $.host.Name ` (a typo in an inventory must
//! not hang the server), it renders unknown map keys as `<no value>` instead of failing,
//! and its errors carry a line but no column. The subset needed here is small, so it is
//! written out below with table tests.
//!
//! Templates are checked when parsed: syntax, function names, variable names, and every
//! field chain rooted at `$` (or at `.` outside `range`/`with`) against the boot data
//! model of [`data`], so a template error surfaces at inventory load with its position,
//! not when a node boots.
//!
//! # Layout
//! - [`lex`]: source text to items (text runs and the tokens of each action).
//! - [`parse`]: items to a tree; static checks.
//! - [`eval`]: renders a tree against a [`Value`].
//! - [`funcs`]: Go's builtin functions and the sprig/Grendel ones.
//! - [`data`]: the data templates see (`$.host`, `$.nic`, `$.image`, `$.endpoints` ...).
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub mod data;
mod eval;
pub mod files;
pub mod funcs;
mod lex;
mod parse;

pub use data::Data;

/// A template error, with the 1-based line and column it points at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl TemplateError {
    /// An error at byte offset `pos` of `src`.
    pub(crate) fn at(src: &str, pos: usize, msg: impl Into<String>) -> TemplateError {
        let pos = pos.min(src.len());
        let before = &src[..pos];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        TemplateError {
            line,
            col,
            msg: msg.into(),
        }
    }
}

/// A parsed, checked template.
#[derive(Clone, Debug)]
pub struct Template {
    src: String,
    nodes: Vec<parse::Node>,
    defines: parse::Defines,
}

impl Template {
    /// Parses `src` and checks it against the boot data model ([`Data::schema`]):
    /// unknown functions, undefined variables and unknown fields are errors here.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let t = Template::parse_unchecked(src)?;
        parse::check_fields(&t.src, &t.nodes, Data::schema())?;
        Ok(t)
    }

    /// [`Template::parse`], where a `{{ template "NAME" }}` that `src` does not define
    /// calls a file of `dirs` (the templates directories, in order): the file `NAME`
    /// (or `NAME.tmpl`), else a `{{ define "NAME" }}` in one of their `*.tmpl` files,
    /// as Grendel's templates, one set of all the files, see each other's. The file's
    /// own calls are resolved the same way (a name is loaded once, so files may call
    /// each other). Errors point at the call, and name the file and its position when
    /// the file is at fault.
    pub fn parse_with_dirs(src: &str, dirs: &[PathBuf]) -> Result<Template, TemplateError> {
        let items = lex::lex(src)?;
        let (nodes, mut defines, calls) = parse::parse_open(src, items)?;
        parse::check_fields(src, &nodes, Data::schema())?;
        let mut pending: Vec<(usize, String)> = calls;
        let mut files = 0;
        while let Some((pos, name)) = pending.pop() {
            if defines.contains_key(&name) {
                continue;
            }
            let at = |msg: String| TemplateError::at(src, pos, msg);
            if files == MAX_FILES {
                return Err(at(format!(
                    "template {name:?}: more than {MAX_FILES} template files called"
                )));
            }
            files += 1;
            let Some((path, file_src, define)) = find_template(&name, dirs) else {
                return Err(at(format!(
                    "no template {name:?} is defined, here or in a file of the templates \
                     directories ({})",
                    if dirs.is_empty() {
                        "none".to_string()
                    } else {
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            };
            let in_file = |e: TemplateError| {
                at(format!(
                    "template {name:?} ({}), line {}, column {}: {}",
                    path.display(),
                    e.line,
                    e.col,
                    e.msg
                ))
            };
            let items = lex::lex(&file_src).map_err(in_file)?;
            let (fnodes, fdefines, fcalls) =
                parse::parse_open(&file_src, items).map_err(in_file)?;
            for (k, v) in fdefines {
                defines.entry(k).or_insert(v);
            }
            if !define {
                defines.insert(name.clone(), fnodes);
            }
            // Runtime errors in a file's body point at the call.
            pending.extend(fcalls.into_iter().map(|(_, n)| (pos, n)));
        }
        Ok(Template {
            src: src.to_string(),
            nodes,
            defines,
        })
    }

    /// Parses `src` checking syntax, functions and variables but not fields, for
    /// templates rendered against other data than the boot data model.
    pub fn parse_unchecked(src: &str) -> Result<Template, TemplateError> {
        let items = lex::lex(src)?;
        let (nodes, defines) = parse::parse(src, items)?;
        Ok(Template {
            src: src.to_string(),
            nodes,
            defines,
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Renders with the boot data of one host.
    pub fn render(&self, data: &Data) -> Result<String, TemplateError> {
        self.render_value(data.value())
    }

    /// Renders with any data (`.` and `$` are `root`).
    pub fn render_value(&self, root: &Value) -> Result<String, TemplateError> {
        eval::render(&self.src, &self.nodes, &self.defines, root)
    }
}

/// The most template files one template may call, directly or not.
const MAX_FILES: usize = 64;

/// Where `{{ template "name" }}` is found in `dirs`: (file, its source, whether `name`
/// is a `define` in it rather than the file itself).
fn find_template(name: &str, dirs: &[PathBuf]) -> Option<(PathBuf, String, bool)> {
    // A file name: one path component, not hidden.
    let plain =
        !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0');
    if plain {
        for d in dirs {
            for file in [name.to_string(), format!("{name}.tmpl")] {
                let p = d.join(&file);
                if let Ok(s) = std::fs::read_to_string(&p) {
                    return Some((p, s, false));
                }
            }
        }
    }
    let needle = format!("\"{name}\"");
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tmpl"))
            .collect();
        paths.sort();
        for p in paths {
            let Ok(s) = std::fs::read_to_string(&p) else {
                continue;
            };
            if !s.contains(&needle) {
                continue;
            }
            let defines = lex::lex(&s)
                .ok()
                .and_then(|items| parse::parse_open(&s, items).ok())
                .is_some_and(|(_, d, _)| d.contains_key(name));
            if defines {
                return Some((p, s, true));
            }
        }
    }
    None
}

/// Parses every template of `image` (its cmdline and each provision template) as
/// [`Template::parse`] does, for validation at inventory load. Returns
/// `(what, error)` pairs: `what` is `cmdline` or `provision_templates.NAME`.
pub fn check_image(image: &crate::inventory::Image) -> Vec<(String, TemplateError)> {
    let named = image
        .provision_templates
        .iter()
        .map(|(k, v)| (format!("provision_templates.{k}"), v));
    std::iter::once(("cmdline".to_string(), &image.cmdline))
        .chain(named)
        .filter_map(|(what, src)| Template::parse(src).err().map(|e| (what, e)))
        .collect()
}

/// A method value: a field that takes arguments, like Grendel's
/// `{{ $.endpoints.InitrdURL 0 }}`.
#[derive(Clone)]
pub struct Method(pub Arc<MethodFn>);

/// The function behind a [`Method`]: arguments to a value or a message.
pub type MethodFn = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<method>")
    }
}

/// The values templates compute with (Go's dynamic values, reduced to what the boot
/// data model needs).
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Method(Method),
}

impl Value {
    /// Go's notion of truth: false, 0, nil and empty strings/lists/maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Method(_) => true,
        }
    }

    /// The value of map key `k` (None for other kinds).
    pub fn get(&self, k: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.get(k),
            _ => None,
        }
    }

    /// The kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Method(_) => "method",
        }
    }

    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

/// Printed as Go's `fmt` `%v` prints them (lists `[a b]`, maps `map[k:v]`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("<nil>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("map[")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{k}:{v}")?;
                }
                f.write_str("]")
            }
            Value::Method(_) => f.write_str("<method>"),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests;
