//! The filter language's tokenizer and recursive-descent parser.

use std::fmt;

use super::eval::Decimal;
use super::{Expr, Lit, Op, Operand, ParseError, Scalar};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    Quoted(String),
    Text(String),
    Number(String),
    Placeholder(String),
    Op(Op),
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s}"),
            Token::Quoted(s) => write!(f, "\"{s}\""),
            Token::Text(s) => write!(f, "'{s}'"),
            Token::Number(s) => write!(f, "{s}"),
            Token::Placeholder(s) => write!(f, "{{{s}}}"),
            Token::Op(op) => f.write_str(match op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            }),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
            Token::Comma => f.write_str(","),
        }
    }
}

pub(super) fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let error = |at: usize, reason: &str| ParseError {
        at,
        reason: reason.to_owned(),
    };
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Token::Open
            }
            b')' => {
                i += 1;
                Token::Close
            }
            b',' => {
                i += 1;
                Token::Comma
            }
            b'=' => {
                i += 1;
                Token::Op(Op::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Token::Op(Op::Ne)
            }
            b'<' => match bytes.get(i + 1) {
                Some(b'=') => {
                    i += 2;
                    Token::Op(Op::Le)
                }
                Some(b'>') => {
                    i += 2;
                    Token::Op(Op::Ne)
                }
                _ => {
                    i += 1;
                    Token::Op(Op::Lt)
                }
            },
            b'>' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Token::Op(Op::Ge)
                } else {
                    i += 1;
                    Token::Op(Op::Gt)
                }
            }
            b'\'' | b'"' => {
                let (content, next) =
                    quoted(text, i, c).ok_or_else(|| error(start, "unterminated quote"))?;
                i = next;
                if c == b'\'' {
                    Token::Text(content)
                } else if content.is_empty() {
                    return Err(error(start, "empty quoted column name"));
                } else {
                    Token::Quoted(content)
                }
            }
            b'{' => {
                let close = text[i..]
                    .find('}')
                    .ok_or_else(|| error(start, "unterminated placeholder"))?
                    + i;
                let name = text[i + 1..close].trim();
                let name = name.strip_prefix("claims.").unwrap_or(name);
                if name.is_empty() || name.contains(['{', ' ']) {
                    return Err(error(start, "a placeholder is {claims.NAME} or {NAME}"));
                }
                i = close + 1;
                Token::Placeholder(name.to_owned())
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || (matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let number = &text[start..i];
                if Decimal::parse(number).is_none()
                    || matches!(number.as_bytes().last(), Some(b'.'))
                {
                    return Err(error(start, &format!("{number:?} is not a number")));
                }
                Token::Number(number.to_owned())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Token::Ident(text[start..i].to_owned())
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(error(start, &format!("unexpected character {ch:?}")));
            }
        };
        out.push((start, token));
    }
    Ok(out)
}

/// The content of a quote starting at `start` (doubled quotes stand for one), and the index
/// after its closing quote.
fn quoted(text: &str, start: usize, quote: u8) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut from = i;
    loop {
        let at = i + text[i..].find(quote as char)?;
        out.push_str(&text[from..at]);
        if bytes.get(at + 1) == Some(&quote) {
            out.push(quote as char);
            i = at + 2;
            from = i;
        } else {
            return Some((out, at + 1));
        }
    }
}

pub(super) struct Parser {
    pub(super) tokens: Vec<(usize, Token)>,
    pub(super) at: usize,
    pub(super) end: usize,
}

/// Nesting deeper than this is refused (the parser recurses).
const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(o, _)| *o)
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.offset(),
            reason: reason.into(),
        })
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(s)) if s.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(token) {
            self.at += 1;
            Ok(())
        } else {
            self.error(format!("expected {what}"))
        }
    }

    pub(super) fn or(&mut self) -> Result<Expr<Operand>, ParseError> {
        self.or_at(0)
    }

    fn or_at(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        self.joined(depth, "or", Self::and, Expr::Or)
    }

    fn and(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        self.joined(depth, "and", Self::term, Expr::And)
    }

    /// `item (word item)*`, one item as itself, more joined by `join`.
    fn joined(
        &mut self,
        depth: usize,
        word: &str,
        item: fn(&mut Self, usize) -> Result<Expr<Operand>, ParseError>,
        join: fn(Vec<Expr<Operand>>) -> Expr<Operand>,
    ) -> Result<Expr<Operand>, ParseError> {
        let mut items = vec![item(self, depth)?];
        while self.keyword(word) {
            items.push(item(self, depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            join(items)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Expr<Operand>, ParseError> {
        if self.peek() == Some(&Token::Open) {
            if depth >= MAX_DEPTH {
                return self.error("parentheses nested too deeply");
            }
            self.at += 1;
            let inner = self.or_at(depth + 1)?;
            self.expect(&Token::Close, ")")?;
            return Ok(inner);
        }
        let column = match self.peek() {
            Some(Token::Quoted(name)) => name.clone(),
            Some(Token::Ident(name)) if !is_keyword(name) => name.to_ascii_lowercase(),
            _ => return self.error("expected a column name"),
        };
        self.at += 1;
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return self.error("expected null");
            }
            return Ok(Expr::IsNull { column, negated });
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            let values = if let Some(Token::Placeholder(name)) = self.peek() {
                let claim = Operand::Claim(name.clone());
                self.at += 1;
                vec![claim]
            } else {
                self.expect(&Token::Open, "( or a placeholder after in")?;
                let mut values = vec![self.value()?];
                while self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                    values.push(self.value()?);
                }
                self.expect(&Token::Close, ")")?;
                values
            };
            return Ok(Expr::In {
                column,
                values,
                negated,
            });
        }
        if negated {
            return self.error("expected in after not");
        }
        let Some(Token::Op(op)) = self.peek().cloned() else {
            return self.error("expected a comparison (=, !=, <, <=, >, >=), in or is");
        };
        self.at += 1;
        let value = self.value()?;
        Ok(Expr::Compare { column, op, value })
    }

    fn value(&mut self) -> Result<Operand, ParseError> {
        let operand = match self.peek() {
            Some(Token::Text(s)) => Operand::Literal(Scalar::Text(Lit::new(s.as_str()))),
            Some(Token::Number(n)) => Operand::Literal(Scalar::Number(Lit::new(n.as_str()))),
            Some(Token::Placeholder(name)) => Operand::Claim(name.clone()),
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("true") => {
                Operand::Literal(Scalar::Bool(true))
            }
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("false") => {
                Operand::Literal(Scalar::Bool(false))
            }
            Some(Token::Ident(s)) if s.eq_ignore_ascii_case("null") => {
                return self.error("compare with null using is null / is not null");
            }
            _ => {
                return self
                    .error("expected a value ('text', a number, true, false or {claims.NAME})")
            }
        };
        self.at += 1;
        Ok(operand)
    }
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "not", "in", "is", "null", "true", "false"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}
