//! Readers of PostgreSQL's text forms of arrays (`array_out`: `{1,NULL,"a b"}`, nested braces
//! for more dimensions, `[0:1]={…}` when a lower bound is not 1) and composites (`record_out`:
//! `(1,"a b",)`, an empty unquoted field being NULL). They split a value into its elements'
//! text, unescaped; converting those is the caller's business. Pure; they accept what
//! `array_in`/`record_in` accept in the forms PostgreSQL writes, and refuse malformed input
//! with an error, never a panic.

use super::ValueError;

/// Array dimensions PostgreSQL allows (`MAXDIM`); deeper input is malformed.
const MAX_DIMENSIONS: usize = 6;

/// One element, or one sub-array of a multi-dimensional array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ArrayItem {
    /// An unquoted `NULL`.
    Null,
    /// An element's text, quotes and escapes removed.
    Text(String),
    /// The elements of one sub-array (`{{1,2},{3,4}}` has two).
    Nested(Vec<ArrayItem>),
}

/// The items of an array's text form; `delimiter` is the element type's `typdelim` (`,`
/// except for `box`, whose arrays use `;`). Lower bounds are dropped: to_jsonb ignores them.
pub(super) fn array_items(text: &str, delimiter: char) -> Result<Vec<ArrayItem>, ValueError> {
    let malformed = || ValueError::malformed("array", text);
    let mut body = text.trim_start();
    if body.starts_with('[') {
        // Dimension decoration `[l:u][l:u]=`; bounds are ignored.
        let eq = body.find('=').ok_or_else(malformed)?;
        if !body[..eq].bytes().all(|b| b"[]:-+0123456789 ".contains(&b)) {
            return Err(malformed());
        }
        body = body[eq + 1..].trim_start();
    }
    let mut chars = Cursor {
        rest: body,
        delimiter,
    };
    let items = chars.array(0).ok_or_else(malformed)?;
    if !chars.rest.trim().is_empty() {
        return Err(malformed());
    }
    Ok(items)
}

/// The fields of a composite's text form, `None` for NULL. A one-field composite whose field is
/// NULL is written `()`, which reads as one NULL field.
pub(super) fn record_fields(text: &str) -> Result<Vec<Option<String>>, ValueError> {
    let malformed = || ValueError::malformed("composite", text);
    let body = text.trim_start().strip_prefix('(').ok_or_else(malformed)?;
    let mut fields = Vec::new();
    let mut chars = body.chars();
    loop {
        let mut field = String::new();
        let mut quoted_or_escaped = false;
        let mut in_quotes = false;
        let end = loop {
            let c = chars.next().ok_or_else(malformed)?;
            match c {
                '"' if in_quotes && chars.as_str().starts_with('"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = !in_quotes;
                    quoted_or_escaped = true;
                }
                '\\' => {
                    field.push(chars.next().ok_or_else(malformed)?);
                    quoted_or_escaped = true;
                }
                ',' | ')' if !in_quotes => break c,
                c => field.push(c),
            }
        };
        fields.push((quoted_or_escaped || !field.is_empty()).then_some(field));
        if end == ')' {
            break;
        }
    }
    if !chars.as_str().trim().is_empty() {
        return Err(malformed());
    }
    Ok(fields)
}

/// What is left of an array's text while reading it.
struct Cursor<'a> {
    rest: &'a str,
    delimiter: char,
}

impl Cursor<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// `{…}` at `depth` (0 for the outermost braces); `None` when malformed.
    fn array(&mut self, depth: usize) -> Option<Vec<ArrayItem>> {
        if depth >= MAX_DIMENSIONS || !self.eat('{') {
            return None;
        }
        let mut items = Vec::new();
        self.skip_space();
        if self.eat('}') {
            return Some(items);
        }
        loop {
            self.skip_space();
            let item = if self.rest.starts_with('{') {
                ArrayItem::Nested(self.array(depth + 1)?)
            } else {
                self.element()?
            };
            items.push(item);
            self.skip_space();
            if self.eat('}') {
                return Some(items);
            }
            if !self.eat(self.delimiter) {
                return None;
            }
        }
    }

    /// One element: quoted (backslash escapes), or unquoted up to the delimiter or `}`
    /// (backslash escapes, surrounding space dropped, `NULL` in any case is NULL).
    fn element(&mut self) -> Option<ArrayItem> {
        let mut text = String::new();
        let mut chars = self.rest.chars();
        if self.rest.starts_with('"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => text.push(chars.next()?),
                    c => text.push(c),
                }
            }
            self.rest = chars.as_str();
            return Some(ArrayItem::Text(text));
        }
        // Unquoted: trailing space is dropped unless escaped.
        let mut kept = 0;
        let mut escaped = false;
        loop {
            let before = chars.as_str();
            match chars.next()? {
                c if c == self.delimiter || c == '}' => {
                    self.rest = before;
                    break;
                }
                '{' | '"' => return None,
                '\\' => {
                    text.push(chars.next()?);
                    kept = text.len();
                    escaped = true;
                }
                c => {
                    text.push(c);
                    if !c.is_whitespace() {
                        kept = text.len();
                    }
                }
            }
        }
        text.truncate(kept);
        if text.is_empty() && !escaped {
            return None;
        }
        if !escaped && text.eq_ignore_ascii_case("NULL") {
            return Some(ArrayItem::Null);
        }
        Some(ArrayItem::Text(text))
    }
}
