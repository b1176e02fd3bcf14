//! Parser: lexer items to a tree of nodes, with the static checks (functions, variables,
//! block structure, and field chains against a schema value).
use super::lex::{Item, Tok, Token};
use super::{funcs, TemplateError, Value};

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Text(String),
    /// `{{ pipeline }}`: prints the value unless the pipeline declares a variable.
    Action(Pipe),
    If(Block),
    Range(Block),
    With(Block),
    /// `{{ template "name" pipeline }}` (and the call half of `{{ block }}`).
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
}

/// The bodies of `{{ define "name" }}` (and `{{ block }}`) in a template, by name.
pub(crate) type Defines = std::collections::BTreeMap<String, Vec<Node>>;

#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub pipe: Pipe,
    pub then: Vec<Node>,
    pub els: Vec<Node>,
}

#[derive(Clone, Debug)]
pub(crate) struct Pipe {
    pub pos: usize,
    /// Variables declared (`:=`) or assigned (`=`) by this pipeline.
    pub vars: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

#[derive(Clone, Debug)]
pub(crate) struct Cmd {
    pub pos: usize,
    pub args: Vec<Arg>,
}

#[derive(Clone, Debug)]
pub(crate) enum Arg {
    /// `.`, `.a.b`, `$`, `$x.a`.
    Chain {
        pos: usize,
        base: Base,
        fields: Vec<String>,
    },
    /// `(pipeline).a.b`.
    Sub {
        pos: usize,
        pipe: Box<Pipe>,
        fields: Vec<String>,
    },
    Func {
        pos: usize,
        name: String,
    },
    Lit(Value),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Base {
    Dot,
    Var(String),
}

impl Arg {
    /// Source-like text of a chain (`$.host.Name`), for messages.
    pub fn chain_text(base: &Base, fields: &[String]) -> String {
        let mut s = match base {
            Base::Dot if !fields.is_empty() => String::new(),
            Base::Dot => ".".into(),
            Base::Var(v) => v.clone(),
        };
        for f in fields {
            s.push('.');
            s.push_str(f);
        }
        s
    }
}

enum Stop {
    Eof,
    End(usize),
    /// `{{ else }}` / `{{ else if ... }}`: position and the tokens after `else`.
    Else(usize, Vec<Token>),
}

pub(crate) fn parse(src: &str, items: Vec<Item>) -> Result<(Vec<Node>, Defines), TemplateError> {
    let (nodes, defines, calls) = parse_open(src, items)?;
    if let Some((pos, name)) = calls.iter().find(|(_, n)| !defines.contains_key(n)) {
        return Err(TemplateError::at(
            src,
            *pos,
            format!("no template {name:?} is defined"),
        ));
    }
    Ok((nodes, defines))
}

/// `{{ template }}` calls: (position, name).
pub(crate) type Calls = Vec<(usize, String)>;

/// [`parse`], leaving `{{ template }}` calls of names defined elsewhere (another file
/// of the set) to the caller: they are returned with every other call.
pub(crate) fn parse_open(
    src: &str,
    items: Vec<Item>,
) -> Result<(Vec<Node>, Defines, Calls), TemplateError> {
    let mut p = Parser {
        src,
        items: items.into_iter(),
        scopes: vec![vec!["$".into()]],
        defines: Defines::new(),
        calls: Vec::new(),
    };
    let (nodes, stop) = p.list()?;
    match stop {
        Stop::Eof => Ok((nodes, p.defines, p.calls)),
        Stop::End(pos) => Err(p.err(pos, "unexpected {{end}}: no open if, range or with")),
        Stop::Else(pos, _) => Err(p.err(pos, "unexpected {{else}}: no open if, range or with")),
    }
}

struct Parser<'a> {
    src: &'a str,
    items: std::vec::IntoIter<Item>,
    /// Variables in scope, one frame per open block.
    scopes: Vec<Vec<String>>,
    defines: Defines,
    /// `{{ template }}` calls (position, name), checked against `defines` at the end.
    calls: Vec<(usize, String)>,
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let (pos, toks) = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action { pos, toks } => (pos, toks),
            };
            let keyword = match toks.first().map(|t| &t.tok) {
                Some(Tok::Ident(k)) => k.as_str(),
                Some(_) => "",
                None => return Err(self.err(pos, "missing value: empty action")),
            };
            match keyword {
                "end" => {
                    self.no_args(&toks, "end")?;
                    return Ok((nodes, Stop::End(pos)));
                }
                "else" => return Ok((nodes, Stop::Else(pos, toks[1..].to_vec()))),
                "if" | "range" | "with" => nodes.push(self.block(keyword, pos, &toks[1..])?),
                "define" => {
                    self.define(pos, &toks, false)?;
                }
                "block" => nodes.push(self.define(pos, &toks, true)?.expect("a block calls")),
                "template" => nodes.push(self.call(pos, &toks)?),
                "break" | "continue" => {
                    return Err(self.err(toks[0].pos, format!("{{{{{keyword}}}}} is not supported")))
                }
                _ => nodes.push(Node::Action(self.pipe(pos, &toks, false)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// The quoted name after `define`, `template` or `block`.
    fn template_name(&self, pos: usize, toks: &[Token]) -> Result<String, TemplateError> {
        let kw = match &toks[0].tok {
            Tok::Ident(k) => k.clone(),
            _ => String::new(),
        };
        match toks.get(1) {
            Some(Token {
                tok: Tok::Str(name),
                ..
            }) => Ok(name.clone()),
            Some(t) => Err(self.err(t.pos, format!("{kw} takes a quoted template name"))),
            None => Err(self.err(pos, format!("{kw} takes a quoted template name"))),
        }
    }

    /// `{{ template "name" [pipeline] }}`.
    fn call(&mut self, pos: usize, toks: &[Token]) -> Result<Node, TemplateError> {
        let name = self.template_name(pos, toks)?;
        let pipe = match &toks[2..] {
            [] => None,
            rest => Some(self.pipe(rest[0].pos, rest, false)?),
        };
        self.calls.push((toks[0].pos, name.clone()));
        Ok(Node::Template { pos, name, pipe })
    }

    /// `{{ define "name" }}body{{ end }}`, or with `block`, `{{ block "name" pipeline }}`:
    /// the body is stored, and `block` returns its call. The body sees only `$` (set to
    /// the value it is called with), as in Go.
    fn define(
        &mut self,
        pos: usize,
        toks: &[Token],
        block: bool,
    ) -> Result<Option<Node>, TemplateError> {
        let name = self.template_name(pos, toks)?;
        let call = if block {
            Some(self.call(pos, toks)?)
        } else {
            self.no_args(&toks[1..], "the template name")?;
            None
        };
        let outer = std::mem::replace(&mut self.scopes, vec![vec!["$".into()]]);
        let body = self.list();
        self.scopes = outer;
        let (body, stop) = body?;
        let kw = if block { "block" } else { "define" };
        match stop {
            Stop::End(_) => {}
            Stop::Eof => {
                return Err(self.err(
                    pos,
                    format!("unclosed {{{{{kw}}}}}: no matching {{{{end}}}}"),
                ))
            }
            Stop::Else(p, _) => {
                return Err(self.err(p, format!("unexpected {{{{else}}}} in {{{{{kw}}}}}")))
            }
        }
        if self.defines.insert(name.clone(), body).is_some() {
            return Err(self.err(toks[1].pos, format!("template {name:?} is defined twice")));
        }
        Ok(call)
    }

    fn no_args(&self, toks: &[Token], what: &str) -> Result<(), TemplateError> {
        match toks.get(1) {
            Some(t) => Err(self.err(t.pos, format!("unexpected argument after {what}"))),
            None => Ok(()),
        }
    }

    /// Parses `keyword pipeline`, its body and its optional else part.
    fn block(&mut self, keyword: &str, pos: usize, toks: &[Token]) -> Result<Node, TemplateError> {
        // Variables the pipeline declares are visible in both branches; those declared
        // in a branch end with it.
        self.scopes.push(vec![]);
        let pipe = self.pipe(pos, toks, keyword == "range")?;
        self.scopes.push(vec![]);
        let (then, stop) = self.list()?;
        self.scopes.pop();
        let els = match stop {
            Stop::Eof => Err(self.err(
                pos,
                format!("unclosed {{{{{keyword}}}}}: no matching {{{{end}}}}"),
            )),
            Stop::End(_) => Ok(vec![]),
            Stop::Else(epos, rest) => self.else_part(keyword, epos, rest),
        };
        self.scopes.pop();
        let els = els?;
        let block = Block { pipe, then, els };
        Ok(match keyword {
            "if" => Node::If(block),
            "range" => Node::Range(block),
            _ => Node::With(block),
        })
    }

    fn else_part(
        &mut self,
        keyword: &str,
        epos: usize,
        rest: Vec<Token>,
    ) -> Result<Vec<Node>, TemplateError> {
        if let Some(Token {
            tok: Tok::Ident(k), ..
        }) = rest.first()
        {
            if (k == "if" || k == "with") && k == keyword {
                // `{{ else if x }}` is `{{ else }}{{ if x }}...{{ end }}` sharing our `end`.
                let k = k.clone();
                return Ok(vec![self.block(&k, epos, &rest[1..])?]);
            }
        }
        if let Some(t) = rest.first() {
            return Err(self.err(t.pos, "unexpected argument after else"));
        }
        self.scopes.push(vec![]);
        let (els, stop) = self.list()?;
        self.scopes.pop();
        match stop {
            Stop::End(_) => Ok(els),
            Stop::Eof => Err(self.err(
                epos,
                format!("unclosed {{{{{keyword}}}}}: no {{{{end}}}} after {{{{else}}}}"),
            )),
            Stop::Else(p, _) => Err(self.err(p, "a second {{else}} in one block")),
        }
    }

    fn declared(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|v| v == name))
    }

    /// A pipeline, with an optional `$x :=` / `$x =` / (range only) `$i, $v :=` head.
    fn pipe(&mut self, pos: usize, toks: &[Token], in_range: bool) -> Result<Pipe, TemplateError> {
        let (vars, assign, body) = self.pipe_head(toks, in_range)?;
        let cmds = self.commands(pos, body)?;
        for v in &vars {
            if assign && !self.declared(v) {
                return Err(self.err(pos, format!("undefined variable {v}")));
            }
            if !assign {
                self.scopes
                    .last_mut()
                    .expect("the top scope always exists")
                    .push(v.clone());
            }
        }
        Ok(Pipe {
            pos,
            vars,
            assign,
            cmds,
        })
    }

    fn pipe_head<'t>(
        &self,
        toks: &'t [Token],
        in_range: bool,
    ) -> Result<(Vec<String>, bool, &'t [Token]), TemplateError> {
        let var = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Var(v)) if v != "$" => Some(v.clone()),
            _ => None,
        };
        let tok = |i: usize| toks.get(i).map(|t| &t.tok);
        match (var(0), tok(1), var(2), tok(3)) {
            (Some(v), Some(Tok::Declare), ..) => Ok((vec![v], false, &toks[2..])),
            (Some(v), Some(Tok::Assign), ..) => Ok((vec![v], true, &toks[2..])),
            (Some(a), Some(Tok::Comma), Some(b), Some(Tok::Declare | Tok::Assign)) if in_range => {
                Ok((vec![a, b], tok(3) == Some(&Tok::Assign), &toks[4..]))
            }
            (Some(_), Some(Tok::Comma), ..) => {
                Err(self.err(toks[1].pos, "only range can declare two variables"))
            }
            _ => Ok((vec![], false, toks)),
        }
    }

    fn commands(&self, pos: usize, toks: &[Token]) -> Result<Vec<Cmd>, TemplateError> {
        let mut cmds = Vec::new();
        let mut start = 0;
        let mut depth = 0usize;
        let mut last_pipe = pos;
        for (i, t) in toks.iter().enumerate() {
            match t.tok {
                Tok::LParen => depth += 1,
                Tok::RParen if depth == 0 => return Err(self.err(t.pos, "unexpected )")),
                Tok::RParen => depth -= 1,
                Tok::Pipe if depth == 0 => {
                    cmds.push(self.command(t.pos, &toks[start..i], cmds.len())?);
                    start = i + 1;
                    last_pipe = t.pos;
                }
                _ => {}
            }
        }
        if depth > 0 {
            return Err(self.err(pos, "unclosed ( in action"));
        }
        let end = toks.get(start).map(|t| t.pos).unwrap_or(last_pipe);
        cmds.push(self.command(end, &toks[start..], cmds.len())?);
        Ok(cmds)
    }

    fn command(&self, pos: usize, toks: &[Token], stage: usize) -> Result<Cmd, TemplateError> {
        if toks.is_empty() {
            return Err(self.err(pos, "missing value: empty command in pipeline"));
        }
        let mut args = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let (arg, next) = self.operand(toks, i)?;
            args.push(arg);
            i = next;
        }
        if stage > 0 && matches!(args[0], Arg::Lit(_)) {
            return Err(self.err(
                toks[0].pos,
                format!(
                    "a constant cannot receive input in pipeline stage {}",
                    stage + 1
                ),
            ));
        }
        Ok(Cmd {
            pos: toks[0].pos,
            args,
        })
    }

    /// Fields directly following (no space) position `i`.
    fn fields(toks: &[Token], mut i: usize) -> (Vec<String>, usize) {
        let mut fields = Vec::new();
        while let Some(Token {
            tok: Tok::Field(f),
            spaced: false,
            ..
        }) = toks.get(i)
        {
            fields.push(f.clone());
            i += 1;
        }
        (fields, i)
    }

    fn operand(&self, toks: &[Token], i: usize) -> Result<(Arg, usize), TemplateError> {
        let t = &toks[i];
        let pos = t.pos;
        Ok(match &t.tok {
            Tok::Dot => (
                Arg::Chain {
                    pos,
                    base: Base::Dot,
                    fields: vec![],
                },
                i + 1,
            ),
            Tok::Field(f) => {
                let (mut fields, next) = Self::fields(toks, i + 1);
                fields.insert(0, f.clone());
                (
                    Arg::Chain {
                        pos,
                        base: Base::Dot,
                        fields,
                    },
                    next,
                )
            }
            Tok::Var(v) => {
                if !self.declared(v) {
                    return Err(self.err(pos, format!("undefined variable {v}")));
                }
                let (fields, next) = Self::fields(toks, i + 1);
                (
                    Arg::Chain {
                        pos,
                        base: Base::Var(v.clone()),
                        fields,
                    },
                    next,
                )
            }
            Tok::Str(s) => (Arg::Lit(Value::Str(s.clone())), i + 1),
            Tok::Int(n) => (Arg::Lit(Value::Int(*n)), i + 1),
            Tok::Ident(id) => (self.ident(pos, id)?, i + 1),
            Tok::LParen => return self.sub(toks, i),
            Tok::RParen => return Err(self.err(pos, "unexpected )")),
            Tok::Pipe | Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err(self.err(pos, format!("unexpected {} in operand", describe(&t.tok))))
            }
        })
    }

    fn ident(&self, pos: usize, id: &str) -> Result<Arg, TemplateError> {
        Ok(match id {
            "true" => Arg::Lit(Value::Bool(true)),
            "false" => Arg::Lit(Value::Bool(false)),
            "nil" => Arg::Lit(Value::Nil),
            "if" | "range" | "with" | "else" | "end" => {
                return Err(self.err(
                    pos,
                    format!("{id} must start its own action ({{{{{id} ...}}}})"),
                ))
            }
            name if funcs::lookup(name).is_some() => Arg::Func {
                pos,
                name: name.to_string(),
            },
            name => return Err(self.err(pos, format!("unknown function {name:?}"))),
        })
    }

    fn sub(&self, toks: &[Token], open: usize) -> Result<(Arg, usize), TemplateError> {
        let mut depth = 0usize;
        let close = toks[open..]
            .iter()
            .position(|t| {
                match t.tok {
                    Tok::LParen => depth += 1,
                    Tok::RParen => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|p| open + p)
            .ok_or_else(|| self.err(toks[open].pos, "unclosed ("))?;
        let pos = toks[open].pos;
        let inner = &toks[open + 1..close];
        if inner.is_empty() {
            return Err(self.err(pos, "missing value: empty ()"));
        }
        let pipe = Pipe {
            pos,
            vars: vec![],
            assign: false,
            cmds: self.commands(pos, inner)?,
        };
        let (fields, next) = Self::fields(toks, close + 1);
        Ok((
            Arg::Sub {
                pos,
                pipe: Box::new(pipe),
                fields,
            },
            next,
        ))
    }
}

fn describe(t: &Tok) -> &'static str {
    match t {
        Tok::Pipe => "|",
        Tok::Declare => ":=",
        Tok::Assign => "=",
        Tok::Comma => ",",
        _ => "token",
    }
}

/// Checks every field chain whose root is known statically (`$`, and `.` outside
/// `range`/`with`) against `schema`, a value shaped like the real data.
pub(crate) fn check_fields(src: &str, nodes: &[Node], schema: &Value) -> Result<(), TemplateError> {
    Checker { src, schema }.nodes(nodes, true)
}

struct Checker<'a> {
    src: &'a str,
    schema: &'a Value,
}

impl Checker<'_> {
    fn nodes(&self, nodes: &[Node], dot_is_root: bool) -> Result<(), TemplateError> {
        for n in nodes {
            match n {
                Node::Text(_) => {}
                Node::Action(p) => self.pipe(p, dot_is_root)?,
                Node::If(b) => {
                    self.pipe(&b.pipe, dot_is_root)?;
                    self.nodes(&b.then, dot_is_root)?;
                    self.nodes(&b.els, dot_is_root)?;
                }
                Node::Range(b) | Node::With(b) => {
                    self.pipe(&b.pipe, dot_is_root)?;
                    self.nodes(&b.then, false)?;
                    self.nodes(&b.els, dot_is_root)?;
                }
                // A defined body's `.` and `$` are what it is called with: checked when
                // rendered.
                Node::Template { pipe, .. } => {
                    if let Some(p) = pipe {
                        self.pipe(p, dot_is_root)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn pipe(&self, p: &Pipe, dot_is_root: bool) -> Result<(), TemplateError> {
        for c in &p.cmds {
            // A regex written as a literal is compiled here, so a bad one is a load error.
            if let [Arg::Func { name, .. }, Arg::Lit(Value::Str(re)), ..] = &c.args[..] {
                if name.starts_with("regex") {
                    if let Err(e) = regex::Regex::new(re) {
                        return Err(TemplateError::at(
                            self.src,
                            c.pos,
                            format!("{name}: bad regex: {e}"),
                        ));
                    }
                }
            }
            for a in &c.args {
                match a {
                    Arg::Chain { pos, base, fields } => {
                        let known =
                            *base == Base::Var("$".into()) || (*base == Base::Dot && dot_is_root);
                        if known {
                            super::eval::walk(self.schema, base, fields)
                                .map_err(|m| TemplateError::at(self.src, *pos, m))?;
                        }
                    }
                    Arg::Sub { pipe, .. } => self.pipe(pipe, dot_is_root)?,
                    Arg::Func { .. } | Arg::Lit(_) => {}
                }
            }
        }
        Ok(())
    }
}
