//! Evaluator: renders a parsed tree against a data [`Value`].
//!
//! Rendering always terminates: `range` only walks finite lists and maps, and
//! `{{ template }}` calls nest at most [`MAX_DEPTH`] deep.
use super::parse::{Arg, Base, Block, Cmd, Defines, Node, Pipe};
use super::{funcs, TemplateError, Value};

/// How deep `{{ template }}` calls may nest (a template calling itself stops there).
const MAX_DEPTH: usize = 64;

pub(crate) fn render(
    src: &str,
    nodes: &[Node],
    defines: &Defines,
    root: &Value,
) -> Result<String, TemplateError> {
    let mut ev = Eval {
        src,
        root,
        defines,
        top: root,
        depth: 0,
        vars: vec![],
        out: String::new(),
    };
    ev.nodes(nodes, root)?;
    Ok(ev.out)
}

/// Follows `fields` from `start` (the value of `base`). Used by rendering and by the
/// static check (with the schema as `start`). A map with a `"*"` key in a schema
/// stands for a map with arbitrary keys.
pub(crate) fn walk(start: &Value, base: &Base, fields: &[String]) -> Result<Value, String> {
    let mut cur = start;
    for (i, f) in fields.iter().enumerate() {
        let here = || Arg::chain_text(base, &fields[..i]);
        cur = match cur {
            Value::Map(m) => match m.get(f) {
                Some(v) => v,
                None if m.contains_key("*") => return Ok(Value::Nil),
                None => {
                    let known: Vec<&str> = m.keys().map(String::as_str).collect();
                    return Err(format!(
                        "unknown field {f:?} in {} (it has: {})",
                        here(),
                        known.join(", ")
                    ));
                }
            },
            Value::Nil => return Err(format!("{} is nil, it has no field {f:?}", here())),
            other => {
                return Err(format!(
                    "{} is a {}, it has no field {f:?}",
                    here(),
                    other.kind()
                ))
            }
        };
    }
    Ok(cur.clone())
}

struct Eval<'a> {
    src: &'a str,
    root: &'a Value,
    defines: &'a Defines,
    /// The data rendered (`$` outside `{{ template }}` calls).
    top: &'a Value,
    /// `{{ template }}` calls this rendering is inside.
    depth: usize,
    /// Variables in scope, innermost last; blocks truncate back to their mark.
    vars: Vec<(String, Value)>,
    out: String,
}

impl Eval<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.vars.is_empty() && !matches!(v, Value::Nil) {
                        self.out.push_str(&v.to_string());
                    }
                }
                Node::If(b) => self.if_with(b, dot, false)?,
                Node::With(b) => self.if_with(b, dot, true)?,
                Node::Range(b) => self.range(b, dot)?,
                Node::Template { pos, name, pipe } => {
                    let arg = match pipe {
                        Some(p) => self.pipe(p, dot)?,
                        None => Value::Nil,
                    };
                    if self.depth == MAX_DEPTH {
                        return Err(self.err(
                            *pos,
                            format!("template {name:?}: calls nest more than {MAX_DEPTH} deep"),
                        ));
                    }
                    let body = &self.defines[name];
                    let mut sub = Eval {
                        src: self.src,
                        root: &arg,
                        defines: self.defines,
                        top: self.top,
                        depth: self.depth + 1,
                        vars: vec![],
                        out: String::new(),
                    };
                    sub.nodes(body, &arg)?;
                    self.out.push_str(&sub.out);
                }
            }
        }
        Ok(())
    }

    /// Calls function `name`; Grendel's `ConfigValue*` read the data's `config` map
    /// (the top-level data, even inside a `{{ template }}` call).
    fn call_func(&self, pos: usize, name: &str, a: &[Value]) -> Result<Value, TemplateError> {
        let r = match funcs::config_func(name, a, self.top.get("config")) {
            Some(r) => r,
            None => funcs::lookup(name).expect("the parser checked function names")(a),
        };
        r.map_err(|m| self.err(pos, format!("{name}: {m}")))
    }

    fn if_with(&mut self, b: &Block, dot: &Value, with: bool) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        let v = self.pipe(&b.pipe, dot)?;
        let r = match (v.truthy(), with) {
            (true, true) => self.nodes(&b.then, &v),
            (true, false) => self.nodes(&b.then, dot),
            (false, _) => self.nodes(&b.els, dot),
        };
        self.vars.truncate(mark);
        r
    }

    fn range(&mut self, b: &Block, dot: &Value) -> Result<(), TemplateError> {
        let over = self.cmds(&b.pipe, dot)?;
        let entries: Vec<(Value, Value)> = match over {
            Value::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i as i64), v))
                .collect(),
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
            Value::Nil => vec![],
            other => {
                return Err(self.err(
                    b.pipe.pos,
                    format!("range can't iterate over a {}", other.kind()),
                ))
            }
        };
        if entries.is_empty() {
            return self.nodes(&b.els, dot);
        }
        for (key, elem) in entries {
            let mark = self.vars.len();
            match &b.pipe.vars[..] {
                [] => {}
                [v] => self.set_var(b.pipe.pos, v, elem.clone(), b.pipe.assign)?,
                [k, v, ..] => {
                    self.set_var(b.pipe.pos, k, key, b.pipe.assign)?;
                    self.set_var(b.pipe.pos, v, elem.clone(), b.pipe.assign)?;
                }
            }
            let r = self.nodes(&b.then, &elem);
            self.vars.truncate(mark);
            r?;
        }
        Ok(())
    }

    fn set_var(
        &mut self,
        pos: usize,
        name: &str,
        v: Value,
        assign: bool,
    ) -> Result<(), TemplateError> {
        if !assign {
            self.vars.push((name.to_string(), v));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(self.err(pos, format!("undefined variable {name}"))),
        }
    }

    /// Evaluates a pipeline and performs its declaration, if any.
    fn pipe(&mut self, p: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let v = self.cmds(p, dot)?;
        if let Some(name) = p.vars.first() {
            self.set_var(p.pos, name, v.clone(), p.assign)?;
        }
        Ok(v)
    }

    fn cmds(&mut self, p: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let mut v = None;
        for c in &p.cmds {
            v = Some(self.cmd(c, dot, v)?);
        }
        Ok(v.unwrap_or(Value::Nil))
    }

    fn cmd(&mut self, c: &Cmd, dot: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
        let (first, rest) = c
            .args
            .split_first()
            .expect("the parser never builds an empty command");
        let args = |ev: &mut Self| -> Result<Vec<Value>, TemplateError> {
            let mut a = rest
                .iter()
                .map(|x| ev.arg(x, dot))
                .collect::<Result<Vec<_>, _>>()?;
            a.extend(piped.clone());
            Ok(a)
        };
        match first {
            Arg::Func { pos, name } => {
                let a = args(self)?;
                self.call_func(*pos, name, &a)
            }
            _ => {
                let v = self.operand(first, dot)?;
                if let Value::Method(m) = &v {
                    let a = args(self)?;
                    return (m.0)(&a).map_err(|e| self.err(c.pos, e));
                }
                if !rest.is_empty() || piped.is_some() {
                    return Err(self.err(
                        c.pos,
                        format!("a {} is not a function, it cannot take arguments", v.kind()),
                    ));
                }
                Ok(v)
            }
        }
    }

    /// An operand in first position: a method value is returned uncalled.
    fn operand(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        match a {
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func { pos, name } => self.call_func(*pos, name, &[]),
            Arg::Chain { pos, base, fields } => {
                let start = match base {
                    Base::Dot => Some(dot),
                    Base::Var(v) if v == "$" => Some(self.root),
                    Base::Var(v) => self
                        .vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == v)
                        .map(|(_, val)| val),
                };
                match start {
                    Some(start) => walk(start, base, fields).map_err(|m| self.err(*pos, m)),
                    None => Err(self.err(
                        *pos,
                        format!("undefined variable {}", Arg::chain_text(base, &[])),
                    )),
                }
            }
            Arg::Sub { pos, pipe, fields } => {
                let v = self.cmds(pipe, dot)?;
                walk(&v, &Base::Var("(...)".into()), fields).map_err(|m| self.err(*pos, m))
            }
        }
    }

    /// An operand in argument position: methods are called with no arguments.
    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        let v = self.operand(a, dot)?;
        match v {
            Value::Method(m) => {
                let pos = match a {
                    Arg::Chain { pos, .. } | Arg::Sub { pos, .. } | Arg::Func { pos, .. } => *pos,
                    Arg::Lit(_) => 0,
                };
                (m.0)(&[]).map_err(|e| self.err(pos, e))
            }
            v => Ok(v),
        }
    }
}
