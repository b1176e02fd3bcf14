//! Lexer: template source to items, each a text run or one action's tokens.
//!
//! Trim markers (`{{- ` and ` -}}`) are applied here, to the neighbouring text, and
//! comments are dropped. Every token keeps its byte offset for error positions.
use super::TemplateError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// `.` on its own.
    Dot,
    /// `.Name` (one link of a field chain).
    Field(String),
    /// `$` or `$name` (the name includes the `$`).
    Var(String),
    /// A function name or keyword (`if`, `range`, `true`, ...).
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub pos: usize,
    pub tok: Tok,
    /// Whitespace precedes it: `$x.a` is one chain, `$x .a` two operands.
    pub spaced: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    Text(String),
    /// `pos` is the offset of the opening `{{`.
    Action {
        pos: usize,
        toks: Vec<Token>,
    },
}

pub(crate) fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut i = 0;
    let mut trim_next_text = false;
    while i < src.len() {
        let open = src[i..].find("{{").map(|o| i + o).unwrap_or(src.len());
        let mut text = &src[i..open];
        if trim_next_text {
            text = text.trim_start();
        }
        if open == src.len() {
            push_text(&mut items, text);
            break;
        }
        let mut body = open + 2;
        if trim_marker_left(&src[body..]) {
            text = text.trim_end();
            body += 1;
        }
        push_text(&mut items, text);
        let mut lx = ActionLexer {
            src,
            pos: body,
            open,
        };
        let (toks, trim_right) = lx.action()?;
        if let Some(toks) = toks {
            items.push(Item::Action { pos: open, toks });
        }
        trim_next_text = trim_right;
        i = lx.pos;
    }
    Ok(items)
}

fn push_text(items: &mut Vec<Item>, text: &str) {
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
}

/// `{{-` is a trim marker only when followed by whitespace (`{{-3}}` is the number -3).
fn trim_marker_left(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(b[1])
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

struct ActionLexer<'a> {
    src: &'a str,
    pos: usize,
    /// Offset of this action's `{{`, for "unclosed action" errors.
    open: usize,
}

impl ActionLexer<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::at(self.src, pos, msg)
    }

    fn rest(&self) -> &[u8] {
        &self.src.as_bytes()[self.pos..]
    }

    /// Lexes one action up to and including its `}}`. Returns its tokens (None for a
    /// comment) and whether it ends with a right trim marker.
    fn action(&mut self) -> Result<(Option<Vec<Token>>, bool), TemplateError> {
        let start = self.pos;
        self.skip_space();
        if self.rest().starts_with(b"/*") {
            return self.comment();
        }
        self.pos = start;
        let mut toks = Vec::new();
        loop {
            let before = self.pos;
            self.skip_space();
            let spaced = self.pos > before;
            let rest = self.rest();
            if rest.is_empty() {
                return Err(self.err(self.open, "unclosed action: no matching }}"));
            }
            if rest.starts_with(b"}}") {
                self.pos += 2;
                return Ok((Some(toks), false));
            }
            if spaced && rest.starts_with(b"-}}") {
                self.pos += 3;
                return Ok((Some(toks), true));
            }
            let pos = self.pos;
            let tok = self.token()?;
            toks.push(Token { pos, tok, spaced });
        }
    }

    fn comment(&mut self) -> Result<(Option<Vec<Token>>, bool), TemplateError> {
        let start = self.pos;
        let Some(end) = self.src[start + 2..].find("*/").map(|e| start + 2 + e + 2) else {
            return Err(self.err(start, "unclosed comment: no matching */"));
        };
        self.pos = end;
        let rest = self.rest();
        if rest.starts_with(b"}}") {
            self.pos += 2;
            Ok((None, false))
        } else if rest.starts_with(b" -}}") {
            self.pos += 4;
            Ok((None, true))
        } else {
            Err(self.err(end, "comment must end with */}}"))
        }
    }

    fn skip_space(&mut self) {
        while self.rest().first().is_some_and(|&b| is_space(b)) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self.rest().first().is_some_and(|&b| is_ident_byte(b)) {
            self.pos += 1;
        }
        self.src[start..self.pos].to_string()
    }

    fn token(&mut self) -> Result<Tok, TemplateError> {
        let pos = self.pos;
        let rest = self.rest();
        let c = rest[0];
        let next = rest.get(1).copied();
        let single = |tok| (tok, 1);
        let (tok, len) = match c {
            b'|' => single(Tok::Pipe),
            b'(' => single(Tok::LParen),
            b')' => single(Tok::RParen),
            b',' => single(Tok::Comma),
            b'=' => single(Tok::Assign),
            b':' if next == Some(b'=') => (Tok::Declare, 2),
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) => {
                return Err(self.err(pos, "floating-point numbers are not supported"))
            }
            b'.' if next.is_some_and(is_ident_byte) => {
                self.pos += 1;
                return Ok(Tok::Field(self.ident()));
            }
            b'.' => single(Tok::Dot),
            b'$' => {
                self.pos += 1;
                return Ok(Tok::Var(format!("${}", self.ident())));
            }
            b'"' => return self.quoted(),
            b'`' => return self.raw(),
            b'\'' => {
                return Err(self.err(
                    pos,
                    "character literals are not supported; use a \"string\"",
                ))
            }
            b'-' | b'+' | b'0'..=b'9' => return self.number(),
            c if c.is_ascii_alphabetic() || c == b'_' => return Ok(Tok::Ident(self.ident())),
            _ => {
                let ch = self.src[pos..].chars().next().unwrap_or('?');
                return Err(self.err(pos, format!("unexpected {ch:?} in action")));
            }
        };
        self.pos += len;
        Ok(tok)
    }

    fn number(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        if matches!(self.rest().first(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        while self
            .rest()
            .first()
            .is_some_and(|&b| is_ident_byte(b) || b == b'.')
        {
            self.pos += 1;
        }
        let text = &self.src[start..self.pos];
        let (neg, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let parsed = if let Some(hex) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i64::from_str_radix(hex, 16)
        } else {
            digits.parse::<i64>()
        };
        match parsed {
            Ok(n) => Ok(Tok::Int(if neg { -n } else { n })),
            Err(_) if text.contains('.') => {
                Err(self.err(start, "floating-point numbers are not supported"))
            }
            Err(_) => Err(self.err(start, format!("bad number {text:?}"))),
        }
    }

    fn raw(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        let Some(len) = self.src[start + 1..].find('`') else {
            return Err(self.err(start, "unterminated raw string"));
        };
        self.pos = start + 1 + len + 1;
        Ok(Tok::Str(self.src[start + 1..start + 1 + len].to_string()))
    }

    fn quoted(&mut self) -> Result<Tok, TemplateError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((off, c)) = chars.next() {
            let here = start + 1 + off;
            match c {
                '"' => {
                    self.pos = here + 1;
                    return Ok(Tok::Str(out));
                }
                '\n' => break,
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'v' => '\x0b',
                        '\\' | '"' | '\'' => e,
                        'x' | 'u' | 'U' => {
                            let n = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let hex: String = chars.by_ref().take(n).map(|(_, h)| h).collect();
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == n)
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.err(here, format!("bad escape \\{e}{hex}")))?
                        }
                        _ => return Err(self.err(here, format!("unknown escape \\{e} in string"))),
                    });
                }
                c => out.push(c),
            }
        }
        Err(self.err(start, "unterminated string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        match &lex(src).unwrap()[..] {
            [Item::Action { toks, .. }] => toks.iter().map(|t| t.tok.clone()).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens() {
        use Tok::*;
        let s = |x: &str| Str(x.into());
        let rows: &[(&str, Vec<Tok>)] = &[
            (
                "{{ $.nic.MAC }}",
                vec![Var("$".into()), Field("nic".into()), Field("MAC".into())],
            ),
            ("{{.}}", vec![Dot]),
            (
                r#"{{ replace ":" "-" }}"#,
                vec![Ident("replace".into()), s(":"), s("-")],
            ),
            (r#"{{ "a\"b\n\x41\u00e9" }}"#, vec![s("a\"b\nAé")]),
            ("{{ `r\\aw}}` }}", vec![s("r\\aw}}")]),
            ("{{ -3 0x10 +2 }}", vec![Int(-3), Int(16), Int(2)]),
            ("{{-3}}", vec![Int(-3)]),
            ("{{ $x := (f .a) | g, }}", {
                vec![
                    Var("$x".into()),
                    Declare,
                    LParen,
                    Ident("f".into()),
                    Field("a".into()),
                    RParen,
                    Pipe,
                ]
                .into_iter()
                .chain([Ident("g".into()), Comma])
                .collect()
            }),
            ("{{ $i = 1 }}", vec![Var("$i".into()), Assign, Int(1)]),
        ];
        for (src, want) in rows {
            assert_eq!(&toks(src), want, "{src}");
        }
    }

    #[test]
    fn trim_and_comments() {
        let items = lex("a  {{- 1 -}}  b {{/* c */}}d{{- /* e */ -}} f").unwrap();
        let texts: Vec<_> = items
            .iter()
            .map(|i| match i {
                Item::Text(t) => t.clone(),
                Item::Action { .. } => "<A>".into(),
            })
            .collect();
        assert_eq!(texts, ["a", "<A>", "b ", "d", "f"]);
    }

    #[test]
    fn errors_name_position() {
        let rows = [
            ("ab {{ $.host.Name ", 1, 4, "unclosed action"),
            ("x\n  {{ \"abc }}", 2, 6, "unterminated string"),
            ("{{ 1.5 }}", 1, 4, "floating-point"),
            ("{{ 'c' }}", 1, 4, "character literals"),
            ("{{ a ; }}", 1, 6, "unexpected ';'"),
            ("{{/* x }}", 1, 3, "unclosed comment"),
            ("{{ \"\\q\" }}", 1, 5, "unknown escape"),
        ];
        for (src, line, col, msg) in rows {
            let e = lex(src).unwrap_err();
            assert_eq!((e.line, e.col), (line, col), "{src}: {e}");
            assert!(e.msg.contains(msg), "{src}: {e}");
        }
    }
}
