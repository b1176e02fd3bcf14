//! Reading inventory files: Grendel's hosts.json / images.json and xboot's TOML files.
//!
//! Accepted shapes (see config/README.md, "Inventory files"):
//! - JSON array of hosts or of images (what `grendel serve --hosts/--images` and the
//!   ClusterFactory chart use); the caller says which one it expects ([`Kind`]);
//! - JSON object `{"hosts": [...], "images": [...]}`;
//! - Grendel's `db dump` object `{"Users": [...], "Hosts": [...], "Images": [...]}` (users
//!   are skipped with a warning: Grendel's accounts are not imported);
//! - TOML with `[[host]]` and `[[image]]` tables (either or both, whatever flag names it).
//!
//! Each entry is decoded on its own, so an entry that cannot be read is reported by index
//! and name and the others are still checked. Relative kernel/initrd/liveimg paths are
//! resolved against the file's directory. Keys xboot does not know become warnings; the
//! Grendel bookkeeping keys (`ID`, `HostID`, `kickstart`) are dropped silently.
use std::path::{Path, PathBuf};

use serde::de::Deserialize;

use super::model::{Host, Image};
use super::validate::{ValidationError, ValidationErrors};

/// What a JSON array in the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hosts,
    Images,
}

/// File syntax, normally chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read inventory file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid inventory file {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("invalid inventory file {origin}: {errors}")]
    Entries {
        origin: String,
        errors: ValidationErrors,
    },
}

/// The entries read from one file (not validated as a whole yet).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub hosts: Vec<Host>,
    pub images: Vec<Image>,
    /// Unknown keys, named by entry.
    pub warnings: Vec<String>,
    /// Entries that could not be read (lenient reads only; strict ones fail instead).
    pub errors: Vec<ValidationError>,
    /// Names of the images among those entries, so that hosts naming them are not also
    /// reported as naming an unknown image.
    pub unreadable_images: Vec<String>,
}

impl Loaded {
    /// Fails with every unreadable entry, if there is any.
    pub fn strict(mut self, origin: &str) -> Result<Loaded, LoadError> {
        if self.errors.is_empty() {
            return Ok(self);
        }
        Err(LoadError::Entries {
            origin: origin.into(),
            errors: ValidationErrors(std::mem::take(&mut self.errors)),
        })
    }
}

/// The keys of Grendel's `db dump` object.
const DUMP_KEYS: &[&str] = &["Users", "Hosts", "Images"];

/// Grendel keys that carry its database bookkeeping: not worth a warning.
const GRENDEL_BOOKKEEPING: &[&str] = &["ID", "HostID", "kickstart"];

/// Reads an inventory file. `kind` says what a bare JSON array holds. Fails if any entry
/// cannot be read.
pub fn load_file(path: &Path, kind: Kind) -> Result<Loaded, LoadError> {
    read_file(path, kind)?.strict(&path.display().to_string())
}

/// Reads an inventory file, keeping the readable entries and listing the others in
/// [`Loaded::errors`] (so that a whole-inventory check can report everything at once).
pub fn read_file(path: &Path, kind: Kind) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.into(),
        source,
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        _ if serde_json::from_str::<serde_json::Value>(&text).is_ok() => Format::Json,
        _ => Format::Toml,
    };
    parse_lenient(&text, format, kind, &base, &path.display().to_string())
}

/// Parses inventory text. `base` resolves relative file paths; `origin` names the source
/// in messages. Fails if any entry cannot be read.
pub fn parse(
    text: &str,
    format: Format,
    kind: Kind,
    base: &Path,
    origin: &str,
) -> Result<Loaded, LoadError> {
    parse_lenient(text, format, kind, base, origin)?.strict(origin)
}

/// [`parse`], keeping unreadable entries in [`Loaded::errors`].
pub fn parse_lenient(
    text: &str,
    format: Format,
    kind: Kind,
    base: &Path,
    origin: &str,
) -> Result<Loaded, LoadError> {
    let syntax = |message: String| LoadError::Syntax {
        origin: origin.to_string(),
        message,
    };
    let mut acc = Acc::default();
    match format {
        Format::Json => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?;
            acc.json_value(v, kind).map_err(syntax)?;
        }
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
            for (key, value) in table {
                let kind = match key.as_str() {
                    "host" => Kind::Hosts,
                    "image" => Kind::Images,
                    _ => {
                        return Err(syntax(format!(
                            "unknown key {key:?} (expected [[host]] and [[image]] tables)"
                        )))
                    }
                };
                let toml::Value::Array(items) = value else {
                    return Err(syntax(format!(
                        "{key:?} must be an array of tables ([[{key}]])"
                    )));
                };
                acc.toml_list(items, kind);
            }
        }
    }
    for im in &mut acc.loaded.images {
        resolve_paths(im, base);
    }
    acc.loaded.errors = acc.errors;
    Ok(acc.loaded)
}

/// Makes relative kernel, initrd and liveimg paths absolute against `base`.
pub fn resolve_paths(image: &mut Image, base: &Path) {
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            let joined: PathBuf = base.join(p.as_str()).components().collect();
            *p = joined.display().to_string();
        }
    };
    fix(&mut image.kernel);
    image.initrd.iter_mut().for_each(fix);
    fix(&mut image.liveimg);
}

#[derive(Default)]
struct Acc {
    loaded: Loaded,
    errors: Vec<ValidationError>,
    next_host: usize,
    next_image: usize,
    /// Names seen in this file: a name twice in one file is an error (merging would
    /// otherwise keep the last one silently).
    seen: std::collections::HashSet<(bool, String)>,
}

impl Acc {
    fn json_value(&mut self, v: serde_json::Value, kind: Kind) -> Result<(), String> {
        match v {
            serde_json::Value::Array(items) => self.json_list(items, kind),
            serde_json::Value::Object(mut map)
                if !map.is_empty() && map.keys().all(|k| k == "hosts" || k == "images") =>
            {
                for (key, kind) in [("hosts", Kind::Hosts), ("images", Kind::Images)] {
                    match map.remove(key) {
                        None => {}
                        Some(serde_json::Value::Array(items)) => self.json_list(items, kind),
                        Some(_) => return Err(format!("{key:?} must be an array")),
                    }
                }
            }
            // Grendel's `db dump` (`{"Users": [...], "Hosts": [...], "Images": [...]}`):
            // hosts and images; Grendel's users (its roles, its hashes) are not imported: skipped with a
            // warning (their password hashes are not kept anywhere).
            serde_json::Value::Object(mut map)
                if !map.is_empty()
                    && map.keys().all(|k| DUMP_KEYS.contains(&k.as_str()))
                    && !map.contains_key("name") =>
            {
                for (key, kind) in [("Hosts", Kind::Hosts), ("Images", Kind::Images)] {
                    match map.remove(key) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::Array(items)) => self.json_list(items, kind),
                        Some(_) => return Err(format!("{key:?} must be an array")),
                    }
                }
                match map.remove("Users") {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::Array(users)) if users.is_empty() => {}
                    Some(serde_json::Value::Array(users)) => {
                        let names: Vec<&str> = users
                            .iter()
                            .filter_map(|u| u.get("username").and_then(|n| n.as_str()))
                            .collect();
                        self.loaded.warnings.push(format!(
                            "{} user{} skipped ({}): Grendel's accounts are not imported (create xboot's with `xboot user add NAME --role ROLE`)",
                            users.len(),
                            if users.len() == 1 { "" } else { "s" },
                            names.join(", ")
                        ));
                    }
                    Some(_) => return Err("\"Users\" must be an array".into()),
                }
            }
            serde_json::Value::Object(_) => self.json_list(vec![v], kind),
            _ => return Err("expected a JSON array of entries, one entry, {\"hosts\": [...], \"images\": [...]} or Grendel's {\"Users\", \"Hosts\", \"Images\"} dump".into()),
        }
        Ok(())
    }

    fn json_list(&mut self, items: Vec<serde_json::Value>, kind: Kind) {
        for v in items {
            // serde would also read a struct from an array of its fields in order:
            // an entry is an object, nothing else.
            if !v.is_object() {
                let (label, index) = match kind {
                    Kind::Hosts => ("host", &mut self.next_host),
                    Kind::Images => ("image", &mut self.next_image),
                };
                self.errors.push(ValidationError::Entry {
                    entry: format!("{label} #{index}"),
                    message: format!(
                        "expected a JSON object, got {}",
                        match v {
                            serde_json::Value::Array(_) => "an array",
                            serde_json::Value::String(_) => "a string",
                            serde_json::Value::Number(_) => "a number",
                            serde_json::Value::Bool(_) => "a boolean",
                            _ => "null",
                        }
                    ),
                });
                *index += 1;
                continue;
            }
            let name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
            self.entry(v, name, kind);
        }
    }

    fn toml_list(&mut self, items: Vec<toml::Value>, kind: Kind) {
        for v in items {
            let name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
            self.entry(v, name, kind);
        }
    }

    fn entry<'de, D>(&mut self, value: D, name: Option<String>, kind: Kind)
    where
        D: serde::Deserializer<'de>,
        D::Error: std::fmt::Display,
    {
        let (label, index) = match kind {
            Kind::Hosts => ("host", &mut self.next_host),
            Kind::Images => ("image", &mut self.next_image),
        };
        let entry = match &name {
            Some(n) if !n.is_empty() => format!("{label} {n}"),
            _ => format!("{label} #{index}"),
        };
        *index += 1;
        if let Some(n) = name.as_ref().filter(|n| !n.is_empty()) {
            if !self.seen.insert((kind == Kind::Hosts, n.clone())) {
                self.errors.push(match kind {
                    Kind::Hosts => ValidationError::DuplicateHost { host: n.clone() },
                    Kind::Images => ValidationError::DuplicateImage { image: n.clone() },
                });
            }
        }
        let warnings = &mut self.loaded.warnings;
        let errors = &mut self.errors;
        match kind {
            Kind::Hosts => {
                if let Some(h) = decode::<Host, D>(value, &entry, warnings, errors) {
                    self.loaded.hosts.push(h);
                }
            }
            Kind::Images => match decode::<Image, D>(value, &entry, warnings, errors) {
                Some(i) => self.loaded.images.push(i),
                None => self.loaded.unreadable_images.extend(name),
            },
        }
    }
}

fn decode<'de, T, D>(
    value: D,
    entry: &str,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ValidationError>,
) -> Option<T>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    let mut unknown = Vec::new();
    match serde_ignored::deserialize(value, |p| unknown.push(p.to_string())) {
        Ok(v) => {
            for key in unknown {
                // A null-tolerant field reads through an Option, which serde_ignored
                // names `?`: not part of the key's path as the file has it.
                let key = key.replace("?.", "");
                let last = key.rsplit('.').next().unwrap_or(&key);
                if !GRENDEL_BOOKKEEPING.contains(&last) {
                    warnings.push(format!("{entry}: unknown key {key:?} ignored"));
                }
            }
            Some(v)
        }
        Err(e) => {
            errors.push(ValidationError::Entry {
                entry: entry.to_string(),
                message: e.to_string(),
            });
            None
        }
    }
}

/// Serializes hosts as a Grendel hosts.json array.
pub fn hosts_to_json(hosts: &[Host]) -> String {
    serde_json::to_string_pretty(hosts).expect("hosts serialize")
}

/// Serializes images as a Grendel images.json array.
pub fn images_to_json(images: &[Image]) -> String {
    serde_json::to_string_pretty(images).expect("images serialize")
}

/// Serializes hosts and images as an xboot TOML inventory (`[[host]]`, `[[image]]`).
pub fn to_toml(hosts: &[Host], images: &[Image]) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        #[serde(skip_serializing_if = "<[Host]>::is_empty")]
        host: &'a [Host],
        #[serde(skip_serializing_if = "<[Image]>::is_empty")]
        image: &'a [Image],
    }
    toml::to_string(&File {
        host: hosts,
        image: images,
    })
    .map_err(|e| e.to_string())
}

/// Decodes entries from a JSON value (an API request body): an array of entries, one entry,
/// or `{"hosts": [...], "images": [...]}`. Paths are not resolved (validation wants them
/// absolute).
pub fn from_json_value(
    v: serde_json::Value,
    kind: Kind,
    origin: &str,
) -> Result<Loaded, LoadError> {
    let mut acc = Acc::default();
    acc.json_value(v, kind)
        .map_err(|message| LoadError::Syntax {
            origin: origin.into(),
            message,
        })?;
    if !acc.errors.is_empty() {
        return Err(LoadError::Entries {
            origin: origin.into(),
            errors: ValidationErrors(acc.errors),
        });
    }
    Ok(acc.loaded)
}

/// The whole inventory as Grendel's `db dump` object (`{"Users": [], "Hosts": [...],
/// "Images": [...]}`): what `xboot db dump` prints and `xboot db restore` (or Grendel's)
/// reads back. xboot has no users, so `Users` is always empty.
pub fn to_dump(hosts: &[Host], images: &[Image]) -> serde_json::Value {
    serde_json::json!({ "Users": [], "Hosts": hosts, "Images": images })
}
