//! ClusterShell-style node sets: `cn[001-100]`, `cn[1,3,5-7]`, `r[1-2]n[01-40/2]`, unions
//! with commas (`cn[1-4],gpu[1-2]`), zero-padding kept, and folding a list of names back
//! into the compact form.
//!
//! A parsed set is kept as its ranges, never as its names: each element of the union is a
//! pattern of literal text and bracketed index sets, and a name is tested against it by
//! reading the name's digit runs. Selecting hosts from an inventory ([`select`]) costs a
//! test per host, whatever the set spans (`cn[1-2147483647]` against 100 hosts is 100
//! tests), and what the set names beyond the inventory is computed as ranges too. Only
//! [`NodeSet::names`] lists names, and refuses sets above [`MAX_EXPAND`] before listing
//! any. Folding names ([`fold`]) uses the `nodeset` crate (a Rust port of ClusterShell's
//! NodeSet), whose sets hold every index: it is only given names that exist.
//!
//! The keyword `all` ([`ALL`]) selects every host of the inventory ([`select`]).
//!
//! Not supported: node groups (`@group`, which need ClusterShell's group files), the set
//! operators `!`, `&`, `^`, and two bracket groups with nothing between them. Names match
//! exactly (case included): `cn1` and `cn01` are different names, as in ClusterShell.
//! Pure: no I/O.
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The node set naming every host of the inventory (Grendel's `all`): a keyword, not a
/// host name, wherever hosts are selected from an inventory ([`select`]).
pub const ALL: &str = "all";

/// Whether `query` is the keyword [`ALL`].
pub fn is_all(query: &str) -> bool {
    query.trim() == ALL
}

/// Most names one node set may expand to.
pub const MAX_EXPAND: usize = 1_000_000;
/// Longest node set expression accepted, in bytes.
pub const MAX_INPUT: usize = 65_536;
/// Most bracket groups in one element (`r[1-2]n[1-4]` has two).
const MAX_GROUPS: usize = 16;
/// Most digits of an index: 18 keep every sum of indexes and steps inside a u64.
const MAX_DIGITS: usize = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSetError {
    #[error("empty nodeset")]
    Empty,
    #[error("invalid nodeset {input:?}: {message}")]
    Syntax { input: String, message: String },
    #[error("nodeset {input:?} expands to {count} names, more than the limit of {MAX_EXPAND}")]
    TooLarge { input: String, count: u128 },
}

/// One index range of a bracket group: `lo-hi/step`, printed `pad` digits wide at least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct IdRange {
    pad: usize,
    lo: u64,
    /// The last index of the range (`lo` plus a multiple of `step`).
    hi: u64,
    step: u64,
}

impl IdRange {
    fn count(&self) -> u64 {
        (self.hi - self.lo) / self.step + 1
    }

    /// Whether `digits` (ASCII digits only) is the text of one of the range's indexes.
    fn contains(&self, digits: &str) -> bool {
        let Some(n) = index_value(digits) else {
            return false;
        };
        // A digit string is fixed by its value and its length: the range's text for `n`
        // is `n` padded to `pad`, so only the length is left to compare.
        (self.lo..=self.hi).contains(&n)
            && (n - self.lo).is_multiple_of(self.step)
            && digits.len() == self.pad.max(digit_count(n))
    }

    fn text(&self, n: u64) -> String {
        format!("{n:0w$}", w = self.pad)
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.count()).map(|k| self.lo + k * self.step)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.lo == self.hi, self.step) {
            (true, _) => f.write_str(&self.text(self.lo)),
            (false, 1) => write!(f, "{}-{}", self.text(self.lo), self.text(self.hi)),
            (false, s) => write!(f, "{}-{}/{s}", self.text(self.lo), self.text(self.hi)),
        }
    }
}

fn digit_count(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// The value of an index's digits, if it has between 1 and [`MAX_DIGITS`] of them.
fn index_value(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

/// The indexes of one bracket group, kept sorted and merged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct IdSet(Vec<IdRange>);

impl IdSet {
    fn count(&self) -> u128 {
        self.0.iter().map(|r| u128::from(r.count())).sum()
    }

    fn contains(&self, digits: &str) -> bool {
        self.0.iter().any(|r| r.contains(digits))
    }

    /// Sorts the ranges and merges step-1 ranges of the same padding that touch.
    fn normalize(&mut self) {
        self.0.sort();
        self.0.dedup();
        let mut out: Vec<IdRange> = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            let contiguous = |r: &IdRange| r.step == 1 || r.lo == r.hi;
            match out.last_mut() {
                Some(last)
                    if last.pad == r.pad
                        && contiguous(last)
                        && contiguous(&r)
                        && r.lo <= last.hi + 1 =>
                {
                    last.hi = last.hi.max(r.hi);
                    last.step = 1;
                }
                _ => out.push(r),
            }
        }
        self.0 = out;
    }

    /// The set without the indexes spelled by `texts`.
    fn minus(&self, texts: &[&str]) -> IdSet {
        let mut out = Vec::new();
        for r in &self.0 {
            let mut gone: Vec<u64> = texts
                .iter()
                .filter(|t| r.contains(t))
                .filter_map(|t| index_value(t))
                .collect();
            gone.sort_unstable();
            gone.dedup();
            let mut lo = r.lo;
            let mut left = true;
            for n in gone {
                if n > lo {
                    out.push(IdRange {
                        hi: n - r.step,
                        lo,
                        ..*r
                    });
                }
                match n.checked_add(r.step).filter(|next| *next <= r.hi) {
                    Some(next) => lo = next,
                    None => {
                        left = false;
                        break;
                    }
                }
            }
            if left {
                out.push(IdRange { lo, ..*r });
            }
        }
        let mut set = IdSet(out);
        set.normalize();
        set
    }

    /// The one index text of a one-index set.
    fn single(&self) -> Option<String> {
        match self.0.as_slice() {
            [r] if r.lo == r.hi => Some(r.text(r.lo)),
            _ => None,
        }
    }
}

impl fmt::Display for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(one) = self.single() {
            return f.write_str(&one);
        }
        f.write_str("[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        f.write_str("]")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Ids(IdSet),
}

/// One element of the union: literal text and bracket groups, never two of either kind
/// side by side.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern(Vec<Part>);

impl Pattern {
    /// Appends, merging literals.
    fn push(&mut self, part: Part) {
        match (self.0.last_mut(), part) {
            (Some(Part::Lit(a)), Part::Lit(b)) => a.push_str(&b),
            (_, Part::Lit(b)) if b.is_empty() => {}
            (_, p) => self.0.push(p),
        }
    }

    fn count(&self) -> u128 {
        self.0
            .iter()
            .map(|p| match p {
                Part::Lit(_) => 1,
                Part::Ids(ids) => ids.count(),
            })
            .fold(1u128, u128::saturating_mul)
    }

    fn groups(&self) -> usize {
        self.0.iter().filter(|p| matches!(p, Part::Ids(_))).count()
    }

    fn prefix(&self) -> &str {
        match self.0.first() {
            Some(Part::Lit(l)) => l,
            _ => "",
        }
    }

    /// The literal name of a pattern without bracket groups.
    fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// The literals around the one bracket group of a one-group pattern: patterns with
    /// the same key are merged into one.
    fn key(&self) -> Option<(String, String)> {
        let lit = |p: Option<&Part>| match p {
            Some(Part::Lit(l)) => Some(l.clone()),
            None => Some(String::new()),
            Some(Part::Ids(_)) => None,
        };
        let i = self.0.iter().position(|p| matches!(p, Part::Ids(_)))?;
        if self.groups() != 1 {
            return None;
        }
        let before = if i == 0 {
            Some(String::new())
        } else {
            lit(self.0.get(i - 1))
        };
        Some((before?, lit(self.0.get(i + 1))?))
    }

    fn ids_mut(&mut self) -> Option<&mut IdSet> {
        self.0.iter_mut().find_map(|p| match p {
            Part::Ids(ids) => Some(ids),
            Part::Lit(_) => None,
        })
    }

    /// The index texts `name` has in this pattern (one per bracket group), if it is one of
    /// its names.
    fn matches<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        let mut failed = HashSet::new();
        let mut found = Vec::new();
        match_from(&self.0, name, 0, 0, &mut failed, &mut found).then_some(found)
    }
}

/// Matches `parts[i..]` against `name[pos..]`. A bracket group followed by text starting
/// with a digit can take digit runs of several lengths: `failed` remembers the (part,
/// position) pairs that cannot match, so no pair is tried twice.
fn match_from<'a>(
    parts: &[Part],
    name: &'a str,
    i: usize,
    pos: usize,
    failed: &mut HashSet<(usize, usize)>,
    found: &mut Vec<&'a str>,
) -> bool {
    let Some(part) = parts.get(i) else {
        return pos == name.len();
    };
    if failed.contains(&(i, pos)) {
        return false;
    }
    let rest = &name[pos..];
    let ok = match part {
        Part::Lit(l) => {
            rest.starts_with(l.as_str())
                && match_from(parts, name, i + 1, pos + l.len(), failed, found)
        }
        Part::Ids(ids) => {
            let run = rest.bytes().take_while(u8::is_ascii_digit).count();
            (1..=run.min(MAX_DIGITS)).rev().any(|len| {
                let digits = &rest[..len];
                if !ids.contains(digits) {
                    return false;
                }
                found.push(digits);
                let ok = match_from(parts, name, i + 1, pos + len, failed, found);
                if !ok {
                    found.pop();
                }
                ok
            })
        }
    };
    if !ok {
        failed.insert((i, pos));
    }
    ok
}

/// The names of `parts` that are not among `hits` (the index texts of names of `parts`,
/// one per bracket group), as patterns.
fn minus(parts: &[Part], hits: &[Vec<&str>]) -> Vec<Pattern> {
    if hits.is_empty() {
        return vec![Pattern(parts.to_vec())];
    }
    let Some(k) = parts.iter().position(|p| matches!(p, Part::Ids(_))) else {
        return vec![];
    };
    let Part::Ids(ids) = &parts[k] else {
        unreachable!("position found a group")
    };
    let (head, tail) = (&parts[..k], &parts[k + 1..]);
    let mut by_first: Vec<(&str, Vec<Vec<&str>>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for hit in hits {
        let i = *index.entry(hit[0]).or_insert_with(|| {
            by_first.push((hit[0], Vec::new()));
            by_first.len() - 1
        });
        by_first[i].1.push(hit[1..].to_vec());
    }
    by_first.sort_by(|a, b| natural_cmp(a.0, b.0));
    let build = |middle: Part, rest: &[Part]| {
        let mut p = Pattern(Vec::new());
        for part in head
            .iter()
            .cloned()
            .chain([middle])
            .chain(rest.iter().cloned())
        {
            p.push(part);
        }
        p
    };
    let firsts: Vec<&str> = by_first.iter().map(|(t, _)| *t).collect();
    let mut out = Vec::new();
    let others = ids.minus(&firsts);
    if !others.0.is_empty() {
        out.push(build(Part::Ids(others), tail));
    }
    for (first, sub) in &by_first {
        for piece in minus(tail, sub) {
            out.push(build(Part::Lit(first.to_string()), &piece.0));
        }
    }
    out
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Part::Lit(l) => f.write_str(l)?,
                Part::Ids(ids) => write!(f, "{ids}")?,
            }
        }
        Ok(())
    }
}

/// A parsed node set: the union of its patterns. `Display` prints it folded
/// (`cn[1-3,10]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet(Vec<Pattern>);

impl NodeSet {
    /// Parses a node set expression.
    pub fn parse(input: &str) -> Result<NodeSet, NodeSetError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(NodeSetError::Empty);
        }
        let syntax = |message: String| NodeSetError::Syntax {
            input: shortened(input),
            message,
        };
        if trimmed.len() > MAX_INPUT {
            return Err(syntax(format!("longer than {MAX_INPUT} bytes")));
        }
        check_brackets(trimmed).map_err(syntax)?;
        let mut patterns: Vec<Pattern> = Vec::new();
        // Literal names seen, and one-group patterns by the literals around their group:
        // `cn1,cn1` is one name, `cn[1-2],cn[5]` one pattern `cn[1-2,5]`.
        let mut literals = HashSet::new();
        let mut by_key: HashMap<(String, String), usize> = HashMap::new();
        for (offset, element) in split_elements(trimmed) {
            let mut p = parse_element(element, offset).map_err(syntax)?;
            if let Some(name) = p.literal() {
                if literals.insert(name.to_string()) {
                    patterns.push(p);
                }
                continue;
            }
            if let Some(key) = p.key() {
                if let Some(&i) = by_key.get(&key) {
                    let (Some(ids), Some(more)) = (patterns[i].ids_mut(), p.ids_mut()) else {
                        unreachable!("patterns with a key have a group")
                    };
                    ids.0.append(&mut more.0);
                    continue;
                }
                by_key.insert(key, patterns.len());
            }
            patterns.push(p);
        }
        for i in by_key.into_values() {
            if let Some(ids) = patterns[i].ids_mut() {
                ids.normalize();
            }
        }
        Ok(NodeSet(patterns))
    }

    /// How many names the set spans (a name two elements both span counts twice).
    pub fn len(&self) -> usize {
        usize::try_from(self.count()).unwrap_or(usize::MAX)
    }

    fn count(&self) -> u128 {
        self.0
            .iter()
            .map(Pattern::count)
            .fold(0u128, u128::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every name, in natural order (`cn2` before `cn10`), each once, refusing sets above
    /// [`MAX_EXPAND`] before listing any.
    pub fn names(&self) -> Result<Vec<String>, NodeSetError> {
        let count = self.count();
        if count > MAX_EXPAND as u128 {
            return Err(NodeSetError::TooLarge {
                input: shortened(&self.to_string()),
                count,
            });
        }
        let mut seen = HashSet::new();
        let mut names = Vec::with_capacity(count as usize);
        for p in &self.0 {
            let mut partial = vec![String::new()];
            for part in &p.0 {
                partial = match part {
                    Part::Lit(l) => partial.into_iter().map(|s| s + l).collect(),
                    Part::Ids(ids) => partial
                        .iter()
                        .flat_map(|s| {
                            ids.0.iter().flat_map(move |r| {
                                r.iter().map(move |n| format!("{s}{}", r.text(n)))
                            })
                        })
                        .collect(),
                };
            }
            names.extend(partial.into_iter().filter(|n| seen.insert(n.clone())));
        }
        names.sort_by(|a, b| natural_cmp(a, b));
        Ok(names)
    }
}

impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The input as error messages quote it: its first 100 characters.
fn shortened(input: &str) -> String {
    match input.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &input[..i]),
        None => input.to_string(),
    }
}

/// The comma-separated elements outside brackets, trimmed, with their byte offsets.
fn split_elements(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut inside) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '[' => inside = true,
            ']' => inside = false,
            ',' if !inside => {
                out.push((start, &s[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push((start, &s[start..]));
    out.into_iter()
        .map(|(o, e)| (o + e.len() - e.trim_start().len(), e.trim()))
        .collect()
}

/// Parses one element (`r[1-2]n[01-40/2].lab`); `offset` is its position in the input.
/// Brackets are known to pair up.
fn parse_element(el: &str, offset: usize) -> Result<Pattern, String> {
    if el.is_empty() {
        return Err(format!("empty element at {offset}"));
    }
    let mut p = Pattern(Vec::new());
    let mut i = 0;
    while let Some(c) = el[i..].chars().next() {
        let at = offset + i;
        match c {
            '[' => {
                let close = i + el[i..].find(']').ok_or("unclosed '['")?;
                if matches!(p.0.last(), Some(Part::Ids(_))) {
                    return Err(format!(
                        "bracket group at {at} follows another: put text between them"
                    ));
                }
                if p.groups() == MAX_GROUPS {
                    return Err(format!("more than {MAX_GROUPS} bracket groups in one name"));
                }
                p.push(Part::Ids(parse_group(&el[i + 1..close], at + 1)?));
                i = close + 1;
                continue;
            }
            '@' => return Err("node groups (@name) are not supported; list the nodes".into()),
            '!' | '&' | '^' => {
                return Err(format!(
                    "set operator {c:?} at {at} is not supported; list the nodes"
                ))
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') => {
                p.push(Part::Lit(c.to_string()))
            }
            c => return Err(format!("character {c:?} at {at} is not allowed in a name")),
        }
        i += c.len_utf8();
    }
    Ok(p)
}

/// Parses a bracket group's inside (`1,3,5-7,10-20/2`); `offset` is its position.
fn parse_group(s: &str, offset: usize) -> Result<IdSet, String> {
    let mut set = IdSet::default();
    let mut at = offset;
    for item in s.split(',') {
        let bad = |what: &str| format!("{what} in {item:?} at {at}");
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (item, None),
        };
        let (lo_text, hi_text) = match range.split_once('-') {
            Some((a, b)) => (a, b),
            None => (range, range),
        };
        let number = |t: &str| {
            index_value(t).ok_or_else(|| {
                if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                    bad(&format!("index longer than {MAX_DIGITS} digits"))
                } else {
                    bad(&format!("{t:?} is not an index"))
                }
            })
        };
        let (lo, hi) = (number(lo_text)?, number(hi_text)?);
        let step = match step {
            None => 1,
            Some(t) => match number(t)? {
                0 => return Err(bad("step 0 (a step is at least 1)")),
                n => n,
            },
        };
        if lo > hi {
            return Err(bad("range starts above its end"));
        }
        let pad = if lo_text.len() > 1 && lo_text.starts_with('0') {
            lo_text.len()
        } else {
            0
        };
        set.0.push(IdRange {
            pad,
            lo,
            hi: lo + (hi - lo) / step * step,
            step,
        });
        at += item.len() + 1;
    }
    set.normalize();
    Ok(set)
}

/// The one name a query of one literal name gives (`cn5`), or None for anything else
/// (ranges, lists, `all`: [`select`] matches those against the names). A caller with an
/// index by name answers it without reading every name.
pub fn single_name(query: &str) -> Option<String> {
    if is_all(query) {
        return None;
    }
    match NodeSet::parse(query).ok()?.0.as_slice() {
        [p] => p.literal().filter(|l| !l.is_empty()).map(String::from),
        _ => None,
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
    if names.is_empty() {
        return String::new();
    }
    // Only names reach the crate (never ranges): what it holds is what we were given.
    let plain = names.iter().all(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    });
    let folded = plain
        .then(|| names.join(",").parse::<nodeset::NodeSet>().ok())
        .flatten();
    match folded {
        Some(ns) => ns.to_string(),
        None => names.join(","),
    }
}

/// Which of `names` a query selects, and the part of the query that matched nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Selected names, in the order `names` gave them.
    pub matched: Vec<String>,
    /// The part of the query naming none of `names`, as a node set (empty if all matched).
    pub missing: String,
}

/// Selects the names a query covers without expanding the query: `cn[1-999999]` against a
/// hundred hosts costs a hundred tests, not a million, and each element of the query is
/// tested only against the names that start with its literal prefix.
///
/// The query [`ALL`] (`all`, Grendel's keyword) selects every name.
pub fn select<S: AsRef<str>>(query: &str, names: &[S]) -> Result<Selection, NodeSetError> {
    if is_all(query) {
        return Ok(Selection {
            matched: names.iter().map(|n| n.as_ref().to_string()).collect(),
            missing: String::new(),
        });
    }
    let q = NodeSet::parse(query)?;
    let by_name: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .rev()
        .map(|(i, n)| (n.as_ref(), i))
        .collect();
    let mut sorted: Vec<(&str, usize)> = by_name.iter().map(|(n, i)| (*n, *i)).collect();
    sorted.sort_unstable();
    let mut hit = vec![false; names.len()];
    let mut missing = Vec::new();
    for p in &q.0 {
        if let Some(name) = p.literal() {
            match by_name.get(name) {
                Some(&i) => hit[i] = true,
                None => missing.push(p.clone()),
            }
            continue;
        }
        // Only the names that start with the pattern's literal prefix are tested: they
        // sit together in byte order.
        let prefix = p.prefix();
        let from = sorted.partition_point(|(n, _)| *n < prefix);
        let mut found = Vec::new();
        for &(n, i) in sorted[from..]
            .iter()
            .take_while(|(n, _)| n.starts_with(prefix))
        {
            if let Some(texts) = p.matches(n) {
                hit[i] = true;
                found.push(texts);
            }
        }
        missing.extend(minus(&p.0, &found));
    }
    let matched = names
        .iter()
        .zip(&hit)
        .filter(|(_, h)| **h)
        .map(|(n, _)| n.as_ref().to_string())
        .collect();
    Ok(Selection {
        matched,
        missing: NodeSet(missing).to_string(),
    })
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
        // Names the crate cannot hold (indexes above u32) are listed as they are.
        for names in [
            &["cn99999999999", "cn1"][..],
            &["cn4294967296"],
            &["a1b2c3d4e5f6g7h8i9j0"],
            &["cn-", "-", "."],
        ] {
            let _ = fold(names.iter());
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
    fn all_selects_every_name() {
        let names = ["cn1", "gpu2", "login"];
        let sel = select("all", &names).unwrap();
        assert_eq!(sel.matched, names);
        assert_eq!(sel.missing, "");
        assert_eq!(select(" all ", &names).unwrap().matched.len(), 3);
        // Only the keyword: a set naming `all1` or `all[1-2]` is a node set.
        assert_eq!(select("all[1-2]", &names).unwrap().missing, "all[1-2]");
    }

    #[test]
    fn single_name_only_for_one_literal() {
        assert_eq!(single_name("cn5"), Some("cn5".to_string()));
        assert_eq!(single_name(" cn5 "), Some("cn5".to_string()));
        for q in ["all", "cn[1-2]", "cn1,cn2", "", "cn["] {
            assert_eq!(single_name(q), None, "{q:?}");
        }
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

    #[test]
    fn huge_ranges_are_matched_without_expanding() {
        let names = ["cn1", "cn2", "cn5"];
        let s = select("cn[1-2147483647]", &names).unwrap();
        assert_eq!(s.matched, ["cn1", "cn2", "cn5"]);
        assert_eq!(s.missing, "cn[3-4,6-2147483647]");
        let s = select("cn[1-1000000000000]", &names).unwrap();
        assert_eq!(s.matched.len(), 3);
        assert!(matches!(
            expand("cn[1-1000000000000]"),
            Err(NodeSetError::TooLarge { .. })
        ));
    }

    #[test]
    fn step_zero_is_an_error() {
        for input in ["cn[1-10/0]", "cn[5/0]", "r[1-2]n[1-4/0]"] {
            let err = NodeSet::parse(input).unwrap_err().to_string();
            assert!(err.contains("step"), "{input}: {err}");
        }
    }

    #[test]
    fn names_without_digits_are_selected() {
        let names = ["login", "node-a", "cn1"];
        let s = select("login,cn1", &names).unwrap();
        assert_eq!(s.matched, ["login", "cn1"]);
        assert_eq!(s.missing, "");
        let s = select("node-a,node-b,cn[1-2]", &names).unwrap();
        assert_eq!(s.matched, ["node-a", "cn1"]);
        assert_eq!(s.missing, "node-b,cn2");
    }

    #[test]
    fn matching_table() {
        // (query, names, matched, missing)
        let table: &[(&str, &[&str], &[&str], &str)] = &[
            ("cn[1-3]", &["cn01", "cn1", "cn3x"], &["cn1"], "cn[2-3]"),
            (
                "cn[01-10]",
                &["cn01", "cn1", "cn10"],
                &["cn01", "cn10"],
                "cn[02-09]",
            ),
            (
                "cn[1-20]0",
                &["cn10", "cn200", "cn0"],
                &["cn10", "cn200"],
                "cn[2-19]0",
            ),
            ("cn[1-9/2]", &["cn3", "cn4"], &["cn3"], "cn[1,5-9/2]"),
            (
                "r[1-2]n[1-4]",
                &["r1n1", "r1n2", "r1n3", "r1n4", "r2n3"],
                &["r1n1", "r1n2", "r1n3", "r1n4", "r2n3"],
                "r2n[1-2,4]",
            ),
            ("r[1-3]n[1-2]", &["r2n1"], &["r2n1"], "r[1,3]n[1-2],r2n2"),
            ("cn[1-2],cn[2-3]", &["cn2"], &["cn2"], "cn[1,3]"),
            ("CN1", &["cn1"], &[], "CN1"),
        ];
        for (query, names, matched, missing) in table {
            let s = select(query, names).unwrap();
            assert_eq!(s.matched, *matched, "{query} matched");
            assert_eq!(s.missing, *missing, "{query} missing");
        }
    }

    #[test]
    fn unsupported_syntax_is_refused() {
        let long = "cn1,".repeat(MAX_INPUT / 4 + 1);
        let groups = "a[1]".repeat(MAX_GROUPS + 1);
        for (input, want) in [
            ("cn[1-2]!cn1", "set operator '!'"),
            ("cn[1-2][3-4]", "follows another"),
            ("cn1,,cn2", "empty element at 4"),
            ("cn 1", "character ' '"),
            ("cn[1-1234567890123456789]", "longer than 18 digits"),
            (long.as_str(), "longer than"),
            (groups.as_str(), "bracket groups"),
        ] {
            let err = NodeSet::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{input:.40}: got {err:.200}, want {want:?}"
            );
            assert!(err.len() < 300, "the input is quoted shortened: {err:.200}");
        }
        assert_eq!(
            NodeSet::parse(" cn1 , cn[2-3] ").unwrap().to_string(),
            "cn1,cn[2-3]"
        );
    }

    /// A query of thousands of distinct elements against thousands of hosts stays quick:
    /// each element meets only the names sharing its prefix.
    #[test]
    fn many_elements_against_many_hosts() {
        let names: Vec<String> = (0..5000).map(|i| format!("r{i}n1")).collect();
        let query: Vec<String> = (0..5000).map(|i| format!("r{i}n[1-9]")).collect();
        let started = std::time::Instant::now();
        let s = select(&query.join(","), &names).unwrap();
        assert_eq!(s.matched.len(), 5000);
        assert!(
            s.missing.starts_with("r0n[2-9],r1n[2-9],"),
            "{:.40}",
            s.missing
        );
        let one: Vec<String> = (0..5_000).map(|i| format!("cn[{i}]")).collect();
        assert_eq!(
            NodeSet::parse(&one.join(",")).unwrap().to_string(),
            "cn[0-4999]"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A well-formed node set of one or two elements, small enough to expand.
        fn small_set() -> impl Strategy<Value = String> {
            let range =
                (0u64..30, 0u64..12, 1u64..4, any::<bool>()).prop_map(|(lo, len, step, pad)| {
                    let (a, b) = if pad {
                        (format!("{lo:03}"), format!("{:03}", lo + len))
                    } else {
                        (lo.to_string(), (lo + len).to_string())
                    };
                    match (len, step) {
                        (0, _) => a,
                        (_, 1) => format!("{a}-{b}"),
                        _ => format!("{a}-{b}/{step}"),
                    }
                });
            let group =
                prop::collection::vec(range, 1..4).prop_map(|r| format!("[{}]", r.join(",")));
            let element = (
                "[a-c]{1,3}",
                group.clone(),
                prop::option::of(("-[a-c]", group)),
            )
                .prop_map(|(p, g, more)| match more {
                    Some((mid, g2)) => format!("{p}{g}{mid}{g2}"),
                    None => format!("{p}{g}"),
                });
            prop::collection::vec(element, 1..3).prop_map(|e| e.join(","))
        }

        proptest! {
            /// No input panics the parser or the matcher.
            #[test]
            fn parse_and_select_never_panic(
                input in "[a-c0-9\\[\\]\\-,/ .@!_]{0,40}",
                names in prop::collection::vec("[a-c0-9\\-.]{0,12}", 0..8),
            ) {
                if let Ok(ns) = NodeSet::parse(&input) {
                    let _ = ns.len();
                    let _ = ns.to_string();
                    if let Ok(all) = ns.names() {
                        let _ = fold(&all);
                    }
                }
                let _ = select(&input, &names);
            }

            /// Selecting from any subset of a set's names gives that subset, and the
            /// missing part names exactly the rest; printing a set and parsing it again
            /// gives the same names.
            #[test]
            fn select_agrees_with_expansion(query in small_set(), mask in any::<u64>()) {
                let all = expand(&query).unwrap();
                let again = expand(&NodeSet::parse(&query).unwrap().to_string()).unwrap();
                prop_assert_eq!(&again, &all);
                let some: Vec<&String> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask >> (i % 64) & 1 == 1)
                    .map(|(_, n)| n)
                    .collect();
                let s = select(&query, &some).unwrap();
                prop_assert_eq!(s.matched.iter().collect::<Vec<_>>(), some.clone());
                let mut missing = if s.missing.is_empty() { vec![] } else { expand(&s.missing).unwrap() };
                prop_assert!(missing.iter().all(|m| !some.contains(&m)), "{} overlaps", s.missing);
                missing.extend(some.iter().map(|n| n.to_string()));
                missing.sort_by(|a, b| natural_cmp(a, b));
                missing.dedup();
                prop_assert_eq!(missing, all);
            }
        }
    }
}
