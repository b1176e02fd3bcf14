//! ClusterShell-style node sets: `cn[001-100]`, `cn[1,3,5-7]`, `r[1-2]n[01-40/2]`, unions
//! with commas (`cn[1-4],gpu[1-2]`), zero-padding kept, and folding a list of names back
//! into the compact form.
//!
//! Parsing, set algebra and folding come from the `nodeset` crate (a maintained Rust port of
//! ClusterShell's NodeSet); this module adds the checks and messages xboot wants: bracket
//! errors that say where, no node groups (`@group` needs ClusterShell's group files, which an
//! xboot server does not read), and a cap on expansion so that `cn[1-999999999]` cannot make
//! the server allocate gigabytes. Pure: no I/O.
use std::collections::HashSet;
use std::fmt;

/// Most names one node set may expand to.
pub const MAX_EXPAND: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    #[error("empty nodeset")]
    Empty,
    #[error("invalid nodeset {input:?}: {message}")]
    Syntax { input: String, message: String },
    #[error("nodeset {input:?} expands to {count} names, more than the limit of {MAX_EXPAND}")]
    TooLarge { input: String, count: usize },
}

/// A parsed node set. `Display` prints it folded (`cn[1-3,10]`).
#[derive(Clone, Debug)]
pub struct NodeSet(nodeset::NodeSet);

impl NodeSet {
    /// Parses a node set expression.
    pub fn parse(input: &str) -> Result<NodeSet, NodeSetError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NodeSetError::Empty);
        }
        let syntax = |message: String| NodeSetError::Syntax {
            input: input.to_string(),
            message,
        };
        check_brackets(trimmed).map_err(syntax)?;
        if trimmed.contains('@') {
            return Err(syntax(
                "node groups (@name) are not supported; list the nodes".into(),
            ));
        }
        let ns: nodeset::NodeSet = trimmed
            .parse()
            .map_err(|e: nodeset::NodeSetParseError| syntax(e.to_string()))?;
        Ok(NodeSet(ns))
    }

    /// The set made of these names (each name parsed as a one-element set).
    pub fn from_names<S: AsRef<str>>(
        names: impl IntoIterator<Item = S>,
    ) -> Result<NodeSet, NodeSetError> {
        let joined: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
        if joined.is_empty() {
            return Ok(NodeSet(nodeset::NodeSet::new()));
        }
        NodeSet::parse(&joined.join(","))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every name, in the set's order (by prefix, then index), refusing sets above
    /// [`MAX_EXPAND`].
    pub fn names(&self) -> Result<Vec<String>, NodeSetError> {
        let count = self.len();
        if count > MAX_EXPAND {
            return Err(NodeSetError::TooLarge {
                input: self.to_string(),
                count,
            });
        }
        Ok(self.0.iter().collect())
    }

    pub fn intersection(&self, other: &NodeSet) -> NodeSet {
        NodeSet(self.0.intersection(&other.0))
    }

    pub fn difference(&self, other: &NodeSet) -> NodeSet {
        NodeSet(self.0.difference(&other.0))
    }

    pub fn union(&self, other: &NodeSet) -> NodeSet {
        NodeSet(self.0.union(&other.0))
    }
}

impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Expands a node set expression into its names.
pub fn expand(input: &str) -> Result<Vec<String>, NodeSetError> {
    NodeSet::parse(input)?.names()
}

/// Folds names into the shortest node set expression (`cn1 cn2 cn3 cn10` -> `cn[1-3,10]`).
/// Names that are not valid node set members are listed as they are.
pub fn fold<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    match NodeSet::from_names(&names) {
        Ok(ns) => ns.to_string(),
        Err(_) => names.join(","),
    }
}

/// Which of `names` a query selects, and the part of the query that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Selected names, in the order `names` gave them.
    pub matched: Vec<String>,
    /// The folded part of the query naming none of `names` (empty if all matched).
    pub missing: String,
}

/// Selects the names a query covers without expanding the query: `cn[1-999999]` against a
/// hundred hosts costs a hundred lookups, not a million.
pub fn select<S: AsRef<str>>(query: &str, names: &[S]) -> Result<Selection, NodeSetError> {
    let q = NodeSet::parse(query)?;
    let all = NodeSet::from_names(names.iter().map(|n| n.as_ref()))?;
    let hit: HashSet<String> = q.intersection(&all).0.iter().collect();
    let matched = names
        .iter()
        .map(|n| n.as_ref().to_string())
        .filter(|n| hit.contains(n))
        .collect();
    let missing = q.difference(&all);
    let missing = if missing.is_empty() {
        String::new()
    } else {
        missing.to_string()
    };
    Ok(Selection { matched, missing })
}

/// Orders names the way a person counts: `cn2` before `cn10` (digit runs compare by value,
/// then by length so that `cn01` and `cn1` stay distinct).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len()
                .cmp(&tb.len())
                .then_with(|| ta.cmp(tb))
                .then_with(|| xa.len().cmp(&xb.len()))
        } else {
            xa.cmp(xb)
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Checks that brackets pair up and do not nest, naming the offending position.
fn check_brackets(s: &str) -> Result<(), String> {
    let mut open: Option<usize> = None;
    for (i, c) in s.char_indices() {
        match (c, open) {
            ('[', Some(o)) => {
                return Err(format!("nested '[' at {i} (the '[' at {o} is not closed)"))
            }
            ('[', None) => open = Some(i),
            (']', None) => return Err(format!("']' at {i} without a matching '['")),
            (']', Some(o)) if o + 1 == i => return Err(format!("empty brackets at {o}")),
            (']', Some(_)) => open = None,
            _ => {}
        }
    }
    match open {
        Some(o) => Err(format!("'[' at {o} is not closed")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_table() {
        let table: &[(&str, &[&str])] = &[
            ("cn1", &["cn1"]),
            ("cn[1-3]", &["cn1", "cn2", "cn3"]),
            ("cn[001-003]", &["cn001", "cn002", "cn003"]),
            ("cn[1,3,5-7]", &["cn1", "cn3", "cn5", "cn6", "cn7"]),
            ("cn[08-11]", &["cn08", "cn09", "cn10", "cn11"]),
            (
                "r[1-2]n[01-05/2]",
                &["r1n01", "r1n03", "r1n05", "r2n01", "r2n03", "r2n05"],
            ),
            ("cn[1-2],gpu[1-2]", &["cn1", "cn2", "gpu1", "gpu2"]),
            (
                "cn[1-2].example.com",
                &["cn1.example.com", "cn2.example.com"],
            ),
            ("cn-1", &["cn-1"]),
            ("cn[2-3],cn[1-2]", &["cn1", "cn2", "cn3"]),
            ("login", &["login"]),
        ];
        for (input, want) in table {
            assert_eq!(expand(input).unwrap(), *want, "expanding {input}");
        }
        assert_eq!(expand("cn[001-100]").unwrap().len(), 100);
        assert_eq!(expand("cn[001-100]").unwrap()[99], "cn100");
        assert_eq!(expand("r[1-2]n[01-40/2]").unwrap().len(), 40);
    }

    #[test]
    fn fold_table() {
        let table: &[(&[&str], &str)] = &[
            (&["cn1", "cn2", "cn3", "cn10"], "cn[1-3,10]"),
            (&["cn003", "cn001", "cn002"], "cn[001-003]"),
            (&["cn1", "gpu1", "gpu2"], "cn1,gpu[1-2]"),
            (&["login"], "login"),
            (&["r1n1", "r1n2", "r2n1", "r2n2"], "r[1-2]n[1-2]"),
            (&[], ""),
        ];
        for (names, want) in table {
            assert_eq!(fold(names.iter()), *want, "folding {names:?}");
        }
        // Fold then expand gives the names back.
        let names = expand("r[1-2]n[01-40/2],cn[1,3,5-7]").unwrap();
        assert_eq!(expand(&fold(&names)).unwrap(), names);
    }

    #[test]
    fn errors_table() {
        let table: &[(&str, &str)] = &[
            ("", "empty nodeset"),
            ("   ", "empty nodeset"),
            ("cn[1-3", "'[' at 2 is not closed"),
            ("cn1-3]", "']' at 5 without a matching '['"),
            ("cn[[1]]", "nested '['"),
            ("cn[]", "empty brackets"),
            ("cn[3-1]", "invalid nodeset \"cn[3-1]\""),
            ("cn[a-b]", "invalid nodeset \"cn[a-b]\""),
            ("@compute", "node groups"),
        ];
        for (input, want) in table {
            let err = NodeSet::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: got {err:?}, want {want:?}");
        }
        let big = expand("cn[1-2000000]").unwrap_err();
        assert!(
            matches!(
                big,
                NodeSetError::TooLarge {
                    count: 2_000_000,
                    ..
                }
            ),
            "{big}"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cn10", "cn2", "gpu1", "cn1", "cn01", "login", "cn2a", ""];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["", "cn1", "cn01", "cn2", "cn2a", "cn10", "gpu1", "login"]
        );
    }

    #[test]
    fn select_without_expanding() {
        let names = ["cn3", "cn1", "cn2", "gpu1"];
        let s = select("cn[1-999999]", &names).unwrap();
        assert_eq!(s.matched, ["cn3", "cn1", "cn2"]);
        assert_eq!(s.missing, "cn[4-999999]");
        let s = select("gpu1,cn2", &names).unwrap();
        assert_eq!(s.matched, ["cn2", "gpu1"]);
        assert_eq!(s.missing, "");
        assert!(select("cn[", &names).is_err());
    }
}
