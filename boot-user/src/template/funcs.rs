//! Template functions: Go's builtins, the sprig functions ClusterFactory-style
//! templates use, and Grendel's own (`hasTag`, `Split`, `Join`, `Contains`, `Add`,
//! `Mul`, `CryptSHA512`, `CryptSHA256`).
//!
//! Sprig's argument order is kept: the string being worked on comes last
//! (`replace old new s`, `trimSuffix suffix s`, `join sep list`), so that
//! `{{ $.nic.MAC | replace ":" "-" }}` works. Strings are taken leniently: an int or a
//! bool where a string is expected is converted as `toString` would.
//!
//! | group | functions |
//! | --- | --- |
//! | Go builtins | `and or not len index eq ne lt le gt ge print println printf` |
//! | strings | `toString lower upper title trim trimAll trimPrefix trimSuffix nospace replace contains hasPrefix hasSuffix repeat substr trunc quote squote cat indent nindent base` |
//! | lists | `list first last join splitList split` |
//! | defaults | `default empty coalesce ternary` |
//! | numbers | `int atoi add sub mul` |
//! | regex | `regexMatch regexFind regexFindAll regexReplaceAll regexReplaceAllLiteral regexSplit` |
//! | encoding, hashes | `b64enc b64dec sha1sum sha256sum toJson toPrettyJson fromJson` |
//! | maps | `dict get hasKey keys` |
//! | sequences | `until untilStep seq` |
//! | Grendel | `hasTag Split Join Contains Add Mul CryptSHA512 CryptSHA256 ConfigValueString ConfigValueBool ConfigValueStringSlice` |
use super::Value;

/// A template function: arguments (the piped value last) to a value or a message.
pub type Func = fn(&[Value]) -> Result<Value, String>;

/// The function called `name`, if there is one.
pub fn lookup(name: &str) -> Option<Func> {
    FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The names of all functions, for documentation and error messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    FUNCS.iter().map(|(n, _)| *n)
}

const FUNCS: &[(&str, Func)] = &[
    ("and", and),
    ("or", or),
    ("not", |a| Ok(Value::Bool(!one(a, "value")?.truthy()))),
    ("len", len),
    ("index", index),
    ("eq", eq),
    ("ne", |a| Ok(Value::Bool(!truth(&eq(a)?)))),
    ("lt", |a| cmp(a, |o| o.is_lt())),
    ("le", |a| cmp(a, |o| o.is_le())),
    ("gt", |a| cmp(a, |o| o.is_gt())),
    ("ge", |a| cmp(a, |o| o.is_ge())),
    ("print", print),
    ("println", |a| {
        Ok(Value::Str(format!("{}\n", join_display(a, " "))))
    }),
    ("printf", printf),
    ("toString", |a| Ok(Value::Str(one(a, "value")?.to_string()))),
    ("lower", |a| str1(a, |s| s.to_lowercase())),
    ("upper", |a| str1(a, |s| s.to_uppercase())),
    ("title", |a| str1(a, title)),
    ("trim", |a| str1(a, |s| s.trim().to_string())),
    ("nospace", |a| str1(a, |s| s.split_whitespace().collect())),
    ("base", |a| {
        str1(a, |s| s.rsplit('/').next().unwrap_or("").to_string())
    }),
    ("trimAll", |a| {
        str2(a, "cutset string", |c, s| {
            s.trim_matches(|ch| c.contains(ch)).to_string()
        })
    }),
    ("trimPrefix", |a| {
        str2(a, "prefix string", |p, s| {
            s.strip_prefix(p).unwrap_or(s).to_string()
        })
    }),
    ("trimSuffix", |a| {
        str2(a, "suffix string", |p, s| {
            s.strip_suffix(p).unwrap_or(s).to_string()
        })
    }),
    ("contains", |a| {
        pred2(a, "substr string", |sub, s| s.contains(sub))
    }),
    ("hasPrefix", |a| {
        pred2(a, "prefix string", |p, s| s.starts_with(p))
    }),
    ("hasSuffix", |a| {
        pred2(a, "suffix string", |p, s| s.ends_with(p))
    }),
    ("replace", replace),
    ("repeat", |a| {
        int_str(a, "count string", |n, s| s.repeat(n.max(0) as usize))
    }),
    ("trunc", |a| {
        int_str(a, "length string", |n, s| {
            s.chars().take(n.max(0) as usize).collect()
        })
    }),
    ("substr", substr),
    ("indent", |a| int_str(a, "width string", indent)),
    ("nindent", |a| {
        int_str(a, "width string", |n, s| format!("\n{}", indent(n, s)))
    }),
    ("quote", |a| {
        Ok(Value::Str(
            a.iter()
                .map(|v| format!("{:?}", v.to_string()))
                .collect::<Vec<_>>()
                .join(" "),
        ))
    }),
    ("squote", |a| {
        Ok(Value::Str(
            a.iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(" "),
        ))
    }),
    ("cat", |a| {
        Ok(Value::Str(join_display(
            &a.iter()
                .filter(|v| !matches!(v, Value::Nil))
                .cloned()
                .collect::<Vec<_>>(),
            " ",
        )))
    }),
    ("list", |a| Ok(Value::List(a.to_vec()))),
    ("first", |a| {
        Ok(list1(a)?.first().cloned().unwrap_or(Value::Nil))
    }),
    ("last", |a| {
        Ok(list1(a)?.last().cloned().unwrap_or(Value::Nil))
    }),
    ("join", |a| {
        let [sep, l] = args::<2>(a, "separator list")?;
        Ok(Value::Str(join_display(as_list(l)?, &sep.to_string())))
    }),
    ("splitList", |a| {
        let [sep, s] = args::<2>(a, "separator string")?;
        Ok(Value::List(
            s.to_string()
                .split(&sep.to_string())
                .map(Value::from)
                .collect(),
        ))
    }),
    ("split", |a| {
        let [sep, s] = args::<2>(a, "separator string")?;
        let parts = s.to_string();
        Ok(Value::Map(
            parts
                .split(&sep.to_string())
                .enumerate()
                .map(|(i, p)| (format!("_{i}"), Value::from(p)))
                .collect(),
        ))
    }),
    ("default", default),
    ("empty", |a| Ok(Value::Bool(!one(a, "value")?.truthy()))),
    ("coalesce", |a| {
        Ok(a.iter().find(|v| v.truthy()).cloned().unwrap_or(Value::Nil))
    }),
    ("ternary", |a| {
        let [t, f, c] = args::<3>(a, "if-true if-false condition")?;
        Ok(if c.truthy() { t.clone() } else { f.clone() })
    }),
    ("int", |a| {
        Ok(Value::Int(to_int(one(a, "value")?).unwrap_or(0)))
    }),
    ("atoi", |a| {
        Ok(Value::Int(to_int(one(a, "string")?).unwrap_or(0)))
    }),
    ("add", |a| fold_ints(a, 0, |x, y| x.checked_add(y))),
    ("mul", |a| fold_ints(a, 1, |x, y| x.checked_mul(y))),
    ("sub", |a| {
        let [x, y] = args::<2>(a, "a b")?;
        let (x, y) = (need_int(x)?, need_int(y)?);
        x.checked_sub(y)
            .map(Value::Int)
            .ok_or_else(|| "integer overflow".to_string())
    }),
    ("hasTag", has_tag),
    ("Split", |a| {
        let [s, sep] = args::<2>(a, "string separator")?;
        Ok(Value::List(
            s.to_string()
                .split(&sep.to_string())
                .map(Value::from)
                .collect(),
        ))
    }),
    ("Join", |a| {
        let [l, sep] = args::<2>(a, "list separator")?;
        Ok(Value::Str(join_display(as_list(l)?, &sep.to_string())))
    }),
    ("Contains", |a| {
        let [s, sub] = args::<2>(a, "string substr")?;
        Ok(Value::Bool(s.to_string().contains(&sub.to_string())))
    }),
    ("Add", |a| fold_ints(a, 0, |x, y| x.checked_add(y))),
    ("Mul", |a| fold_ints(a, 1, |x, y| x.checked_mul(y))),
    ("CryptSHA512", |a| crypt(a, true)),
    ("CryptSHA256", |a| crypt(a, false)),
    ("regexMatch", |a| {
        let [re, s] = args::<2>(a, "regex string")?;
        Ok(Value::Bool(regex(re)?.is_match(&s.to_string())))
    }),
    ("regexFind", |a| {
        let [re, s] = args::<2>(a, "regex string")?;
        let s = s.to_string();
        Ok(Value::from(
            regex(re)?.find(&s).map(|m| m.as_str()).unwrap_or(""),
        ))
    }),
    ("regexFindAll", |a| {
        let [re, s, n] = args::<3>(a, "regex string count")?;
        let s = s.to_string();
        let re = regex(re)?;
        let all = re.find_iter(&s).map(|m| Value::from(m.as_str()));
        Ok(Value::List(all.take(count(n)?).collect()))
    }),
    ("regexReplaceAll", |a| {
        let [re, s, with] = args::<3>(a, "regex string replacement")?;
        let (s, with) = (s.to_string(), with.to_string());
        let out = regex(re)?.replace_all(&s, with.as_str()).into_owned();
        Ok(Value::from(out))
    }),
    ("regexReplaceAllLiteral", |a| {
        let [re, s, with] = args::<3>(a, "regex string replacement")?;
        let (s, with) = (s.to_string(), with.to_string());
        let out = regex(re)?
            .replace_all(&s, regex::NoExpand(&with))
            .into_owned();
        Ok(Value::from(out))
    }),
    ("regexSplit", |a| {
        let [re, s, n] = args::<3>(a, "regex string count")?;
        let s = s.to_string();
        let re = regex(re)?;
        let parts: Vec<Value> = match need_int(n)? {
            n if n < 0 => re.split(&s).map(Value::from).collect(),
            n => re.splitn(&s, n as usize).map(Value::from).collect(),
        };
        Ok(Value::List(parts))
    }),
    ("b64enc", |a| {
        use base64::Engine;
        str1(a, |s| base64::engine::general_purpose::STANDARD.encode(s))
    }),
    ("b64dec", |a| {
        use base64::Engine;
        let s = one(a, "string")?.to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        String::from_utf8(bytes)
            .map(Value::from)
            .map_err(|_| "decoded bytes are not UTF-8 text".into())
    }),
    ("sha1sum", |a| {
        use sha1::Digest;
        str1(a, |s| hex::encode(sha1::Sha1::digest(s.as_bytes())))
    }),
    ("sha256sum", |a| {
        use sha2::Digest;
        str1(a, |s| hex::encode(sha2::Sha256::digest(s.as_bytes())))
    }),
    ("toJson", |a| {
        Ok(Value::from(to_json(one(a, "value")?).to_string()))
    }),
    ("toPrettyJson", |a| {
        serde_json::to_string_pretty(&to_json(one(a, "value")?))
            .map(Value::from)
            .map_err(|e| e.to_string())
    }),
    ("fromJson", |a| {
        let s = one(a, "string")?.to_string();
        let j: serde_json::Value =
            serde_json::from_str(&s).map_err(|e| format!("not JSON: {e}"))?;
        Ok(from_json(j))
    }),
    ("dict", |a| {
        if a.len() % 2 != 0 {
            return Err("expected key value pairs".into());
        }
        Ok(Value::Map(
            a.chunks(2)
                .map(|kv| (kv[0].to_string(), kv[1].clone()))
                .collect(),
        ))
    }),
    ("get", |a| {
        let [m, k] = args::<2>(a, "map key")?;
        Ok(as_map(m)?
            .get(&k.to_string())
            .cloned()
            .unwrap_or_else(|| Value::from("")))
    }),
    ("hasKey", |a| {
        let [m, k] = args::<2>(a, "map key")?;
        Ok(Value::Bool(as_map(m)?.contains_key(&k.to_string())))
    }),
    ("keys", |a| {
        let mut keys = Vec::new();
        for m in a {
            keys.extend(as_map(m)?.keys().map(|k| Value::from(k.as_str())));
        }
        Ok(Value::List(keys))
    }),
    ("until", |a| {
        let n = need_int(one(a, "count")?)?;
        steps(0, n, if n < 0 { -1 } else { 1 })
    }),
    ("untilStep", |a| {
        let [start, stop, step] = args::<3>(a, "start stop step")?;
        steps(need_int(start)?, need_int(stop)?, need_int(step)?)
    }),
    ("seq", seq),
    ("ConfigValueString", no_config),
    ("ConfigValueBool", no_config),
    ("ConfigValueStringSlice", no_config),
];

/// Stands for the `ConfigValue*` functions where no config is given (they are called
/// through [`config_func`]).
fn no_config(_: &[Value]) -> Result<Value, String> {
    Err("no config in this template's data".into())
}

/// Grendel's `ConfigValueString KEY`, `ConfigValueBool KEY` and
/// `ConfigValueStringSlice KEY`: the config value at the dotted `KEY`
/// (`"provision.listen"`) from `config` (the config as a map), or the empty string,
/// false or empty list when the key is not set. None for other functions.
pub fn config_func(
    name: &str,
    a: &[Value],
    config: Option<&Value>,
) -> Option<Result<Value, String>> {
    let kind = match name {
        "ConfigValueString" => 0,
        "ConfigValueBool" => 1,
        "ConfigValueStringSlice" => 2,
        _ => return None,
    };
    let config = config?;
    Some((|| {
        let key = one(a, "key")?.to_string();
        let found = key.split('.').try_fold(config, |v, k| v.get(k));
        Ok(match (kind, found) {
            (0, Some(v @ (Value::Str(_) | Value::Int(_) | Value::Bool(_)))) => {
                Value::from(v.to_string())
            }
            (0, _) => Value::from(""),
            (1, Some(Value::Bool(b))) => Value::Bool(*b),
            (1, Some(Value::Str(s))) => Value::Bool(matches!(s.as_str(), "true" | "1" | "yes")),
            (1, _) => Value::Bool(false),
            (_, Some(Value::List(l))) => {
                Value::List(l.iter().map(|v| Value::from(v.to_string())).collect())
            }
            (_, Some(Value::Str(s))) => Value::List(
                s.split(',')
                    .map(|x| Value::from(x.trim()))
                    .filter(Value::truthy)
                    .collect(),
            ),
            _ => Value::List(Vec::new()),
        })
    })())
}

/// A JSON value (a config serialized) as a template value.
pub fn json_value(j: serde_json::Value) -> Value {
    from_json(j)
}

/// A compiled regex from a template argument (Go's RE2 syntax, which the `regex` crate
/// shares for everything but a few escapes).
fn regex(re: &Value) -> Result<regex::Regex, String> {
    regex::Regex::new(&re.to_string()).map_err(|e| format!("bad regex: {e}"))
}

/// Sprig's count argument: negative means all.
fn count(n: &Value) -> Result<usize, String> {
    Ok(usize::try_from(need_int(n)?).unwrap_or(usize::MAX))
}

/// Grendel's `CryptSHA512` / `CryptSHA256`: a crypt(3) hash with a random salt and the
/// default 5000 rounds (`$6$salt$hash`, `$5$salt$hash`), as kickstart's `rootpw
/// --iscrypted` and cloud-init take.
fn crypt(a: &[Value], sha512: bool) -> Result<Value, String> {
    let pw = one(a, "password")?.to_string();
    let rounds = sha_crypt::ROUNDS_DEFAULT;
    let out = if sha512 {
        let p = sha_crypt::Sha512Params::new(rounds).map_err(|e| format!("{e:?}"))?;
        sha_crypt::sha512_simple(&pw, &p)
    } else {
        let p = sha_crypt::Sha256Params::new(rounds).map_err(|e| format!("{e:?}"))?;
        sha_crypt::sha256_simple(&pw, &p)
    };
    out.map(Value::from).map_err(|e| format!("{e:?}"))
}

fn as_map(v: &Value) -> Result<&std::collections::BTreeMap<String, Value>, String> {
    match v {
        Value::Map(m) => Ok(m),
        other => Err(format!("expected a map, got a {}", other.kind())),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil | Value::Method(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Str(s) => J::String(s.clone()),
        Value::List(l) => J::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn from_json(j: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Str(n.to_string())),
        J::String(s) => Value::Str(s),
        J::Array(a) => Value::List(a.into_iter().map(from_json).collect()),
        J::Object(o) => Value::Map(o.into_iter().map(|(k, v)| (k, from_json(v))).collect()),
    }
}

/// The integers from `start` towards `stop` (excluded) by `step`, at most 100,000 of
/// them (a template must not eat the server's memory).
fn steps(start: i64, stop: i64, step: i64) -> Result<Value, String> {
    const MAX: usize = 100_000;
    if step == 0 {
        return Err("step 0".into());
    }
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        if out.len() == MAX {
            return Err(format!("more than {MAX} numbers"));
        }
        out.push(Value::Int(i));
        i = i.checked_add(step).ok_or("integer overflow")?;
    }
    Ok(Value::List(out))
}

/// Sprig's `seq`, like the shell's: `seq END`, `seq START END`, `seq START STEP END`,
/// ends included, as one space-separated string.
fn seq(a: &[Value]) -> Result<Value, String> {
    let ints = a.iter().map(need_int).collect::<Result<Vec<_>, _>>()?;
    let (start, step, end) = match ints[..] {
        [end] => (1, if end >= 1 { 1 } else { -1 }, end),
        [start, end] => (start, if end >= start { 1 } else { -1 }, end),
        [start, step, end] => (start, step, end),
        _ => return Err("expected 1 to 3 integers (END, START END, START STEP END)".into()),
    };
    let stop = end.checked_add(step.signum()).ok_or("integer overflow")?;
    let out = steps(start, stop, step)?;
    Ok(Value::Str(join_display(as_list(&out)?, " ")))
}

fn args<'a, const N: usize>(a: &'a [Value], names: &str) -> Result<[&'a Value; N], String> {
    let v: Vec<&Value> = a.iter().collect();
    v.try_into().map_err(|_| {
        let s = if N == 1 { "" } else { "s" };
        format!("expected {N} argument{s} ({names}), got {}", a.len())
    })
}

fn one<'a>(a: &'a [Value], name: &str) -> Result<&'a Value, String> {
    Ok(args::<1>(a, name)?[0])
}

fn truth(v: &Value) -> bool {
    v.truthy()
}

fn str1(a: &[Value], f: impl Fn(&str) -> String) -> Result<Value, String> {
    Ok(Value::Str(f(&one(a, "string")?.to_string())))
}

fn str2(a: &[Value], names: &str, f: impl Fn(&str, &str) -> String) -> Result<Value, String> {
    let [x, s] = args::<2>(a, names)?;
    Ok(Value::Str(f(&x.to_string(), &s.to_string())))
}

fn pred2(a: &[Value], names: &str, f: impl Fn(&str, &str) -> bool) -> Result<Value, String> {
    let [x, s] = args::<2>(a, names)?;
    Ok(Value::Bool(f(&x.to_string(), &s.to_string())))
}

fn int_str(a: &[Value], names: &str, f: impl Fn(i64, &str) -> String) -> Result<Value, String> {
    let [n, s] = args::<2>(a, names)?;
    Ok(Value::Str(f(need_int(n)?, &s.to_string())))
}

fn replace(a: &[Value]) -> Result<Value, String> {
    let [old, new, s] = args::<3>(a, "old new string")?;
    Ok(Value::Str(
        s.to_string().replace(&old.to_string(), &new.to_string()),
    ))
}

fn substr(a: &[Value]) -> Result<Value, String> {
    let [start, end, s] = args::<3>(a, "start end string")?;
    let chars: Vec<char> = s.to_string().chars().collect();
    let start = need_int(start)?.clamp(0, chars.len() as i64) as usize;
    let end = match need_int(end)? {
        e if e < 0 => chars.len(),
        e => (e as usize).clamp(start, chars.len()),
    };
    Ok(Value::Str(chars[start..end].iter().collect()))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = c.is_whitespace();
    }
    out
}

fn indent(n: i64, s: &str) -> String {
    let pad = " ".repeat(n.max(0) as usize);
    s.split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn default(a: &[Value]) -> Result<Value, String> {
    match a {
        [d] => Ok(d.clone()),
        [d, given] if !given.truthy() => Ok(d.clone()),
        [_, given] => Ok(given.clone()),
        _ => Err(format!(
            "expected 2 arguments (default value), got {}",
            a.len()
        )),
    }
}

fn as_list(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::List(l) => Ok(l),
        other => Err(format!("expected a list, got a {}", other.kind())),
    }
}

fn list1(a: &[Value]) -> Result<&[Value], String> {
    as_list(one(a, "list")?)
}

fn join_display(a: &[Value], sep: &str) -> String {
    a.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

fn to_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(*b as i64),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn need_int(v: &Value) -> Result<i64, String> {
    to_int(v).ok_or_else(|| format!("expected an integer, got {} {v:?}", v.kind()))
}

fn fold_ints(a: &[Value], init: i64, f: fn(i64, i64) -> Option<i64>) -> Result<Value, String> {
    let mut acc = init;
    for v in a {
        acc = f(acc, need_int(v)?).ok_or("integer overflow")?;
    }
    Ok(Value::Int(acc))
}

fn and(a: &[Value]) -> Result<Value, String> {
    if a.is_empty() {
        return Err("expected at least 1 argument".into());
    }
    Ok(a.iter()
        .find(|v| !v.truthy())
        .unwrap_or(&a[a.len() - 1])
        .clone())
}

fn or(a: &[Value]) -> Result<Value, String> {
    if a.is_empty() {
        return Err("expected at least 1 argument".into());
    }
    Ok(a.iter()
        .find(|v| v.truthy())
        .unwrap_or(&a[a.len() - 1])
        .clone())
}

fn len(a: &[Value]) -> Result<Value, String> {
    let n = match one(a, "value")? {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        other => return Err(format!("len of a {}", other.kind())),
    };
    Ok(Value::Int(n as i64))
}

fn index(a: &[Value]) -> Result<Value, String> {
    let (first, keys) = a.split_first().ok_or("expected a collection and indexes")?;
    let mut cur = first.clone();
    for k in keys {
        cur = match (&cur, k) {
            (Value::List(l), Value::Int(i)) => {
                match usize::try_from(*i).ok().and_then(|i| l.get(i)) {
                    Some(v) => v.clone(),
                    None => return Err(format!("index {i} out of range (length {})", l.len())),
                }
            }
            (Value::Map(m), key) => m.get(&key.to_string()).cloned().unwrap_or(Value::Nil),
            (Value::Nil, _) => Value::Nil,
            (c, k) => return Err(format!("cannot index a {} with a {}", c.kind(), k.kind())),
        };
    }
    Ok(cur)
}

fn basic_eq(x: &Value, y: &Value) -> Result<bool, String> {
    match (x, y) {
        (Value::Nil, _) | (_, Value::Nil) => Ok(matches!((x, y), (Value::Nil, Value::Nil))),
        (Value::Bool(_), Value::Bool(_))
        | (Value::Int(_), Value::Int(_))
        | (Value::Str(_), Value::Str(_)) => Ok(x == y),
        _ => Err(format!(
            "incompatible types for comparison: {} and {}",
            x.kind(),
            y.kind()
        )),
    }
}

fn eq(a: &[Value]) -> Result<Value, String> {
    let (x, rest) = a.split_first().ok_or("expected at least 2 arguments")?;
    if rest.is_empty() {
        return Err("expected at least 2 arguments".into());
    }
    for y in rest {
        if basic_eq(x, y)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn cmp(a: &[Value], test: fn(std::cmp::Ordering) -> bool) -> Result<Value, String> {
    let [x, y] = args::<2>(a, "a b")?;
    let ord = match (x, y) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        _ => return Err(format!("cannot compare a {} with a {}", x.kind(), y.kind())),
    };
    Ok(Value::Bool(test(ord)))
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
fn print(a: &[Value]) -> Result<Value, String> {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(a[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&v.to_string());
    }
    Ok(Value::Str(out))
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %x %X %t %%`, with
/// `-`/`0` flags and a width.
fn printf(a: &[Value]) -> Result<Value, String> {
    let (fmt, mut rest) = match a.split_first() {
        Some((f, r)) => (f.to_string(), r.iter()),
        None => return Err("expected a format string".into()),
    };
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero, mut width) = (false, false, 0usize);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' if width == 0 => zero = true,
                d if d.is_ascii_digit() => {
                    width = width * 10 + d.to_digit(10).unwrap_or(0) as usize
                }
                _ => break,
            }
            chars.next();
        }
        let verb = chars.next().ok_or("format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = rest
            .next()
            .ok_or_else(|| format!("missing argument for %{verb}"))?;
        let s = match (verb, v) {
            ('v' | 's' | 't', v) => v.to_string(),
            ('d', v) => need_int(v)?.to_string(),
            ('q', v) => format!("{:?}", v.to_string()),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', v) => hex::encode(v.to_string()),
            ('X', v) => hex::encode_upper(v.to_string()),
            (other, _) => return Err(format!("unsupported verb %{other}")),
        };
        let pad = width.saturating_sub(s.chars().count());
        let padded = match (left, zero) {
            (true, _) => format!("{s}{}", " ".repeat(pad)),
            (false, true) if s.starts_with('-') => format!("-{}{}", "0".repeat(pad), &s[1..]),
            (false, true) => format!("{}{s}", "0".repeat(pad)),
            (false, false) => format!("{}{s}", " ".repeat(pad)),
        };
        out.push_str(&padded);
    }
    Ok(Value::Str(out))
}

/// Grendel's `hasTag host tag`.
fn has_tag(a: &[Value]) -> Result<Value, String> {
    let [host, tag] = args::<2>(a, "host tag")?;
    let tags = match host {
        Value::Map(m) => m.get("Tags").cloned().unwrap_or(Value::List(vec![])),
        other => return Err(format!("expected a host, got a {}", other.kind())),
    };
    let tag = tag.to_string();
    Ok(Value::Bool(
        as_list(&tags)?.iter().any(|t| t.to_string() == tag),
    ))
}
