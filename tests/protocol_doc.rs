//! docs/protocol.md against proto/feedgate/v1/feedgate.proto, so that the document's message
//! summaries cannot fall behind the schema again (issue 13): every summary in a code block
//! (`Name { type field = N; ... }`) lists exactly the message's fields, the summaries a client
//! author needs are there, every command has a row in the commands table, and every error code a
//! row in the errors table.
//!
//! The proto "parser" here knows only what feedgate.proto uses: messages (nested `oneof`s,
//! `repeated`, `map<..>`), enums, `//` comments, one declaration per line.

use std::collections::BTreeMap;

/// The messages whose summaries a client author reads first; each must be in the document.
const SUMMARIZED: &[&str] = &[
    "Request",
    "Response",
    "ServerMessage",
    "Subscribe",
    "Event",
    "Welcome",
    "Limits",
    "Authenticated",
    "Error",
];

/// One field: `(type, name, number)`, as written (`map<string, string>` keeps its space).
type Field = (String, String, u32);

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses `[repeated] TYPE NAME = N` (without the `;`).
fn field(declaration: &str) -> Option<Field> {
    let (left, number) = declaration.split_once('=')?;
    let number = number.trim().parse().ok()?;
    let (ty, name) = left.trim().rsplit_once(char::is_whitespace)?;
    let ty = ty.split_whitespace().collect::<Vec<_>>().join(" ");
    Some((ty, name.to_owned(), number))
}

/// An enum's values: `(name, number)`.
type Values = Vec<(String, u32)>;

/// Every message's fields, oneof members included; every enum's values.
fn parse_proto(text: &str) -> (BTreeMap<String, Vec<Field>>, BTreeMap<String, Values>) {
    let mut messages = BTreeMap::new();
    let mut enums: BTreeMap<String, Values> = BTreeMap::new();
    // What each open brace belongs to: Some(message or enum name) or None for a oneof.
    let mut open: Vec<(bool, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let words: Vec<_> = line.split_whitespace().collect();
        match words.as_slice() {
            ["message", name, "{"] => {
                messages.insert(name.to_string(), Vec::new());
                open.push((false, Some(name.to_string())));
            }
            ["enum", name, "{"] => {
                enums.insert(name.to_string(), Vec::new());
                open.push((true, Some(name.to_string())));
            }
            ["oneof", _, "{"] => open.push((false, None)),
            ["}"] => {
                open.pop().expect("balanced braces in the proto");
            }
            _ if line.ends_with(';') && !open.is_empty() => {
                let declaration = line.trim_end_matches(';');
                let owner = open
                    .iter()
                    .rev()
                    .find_map(|(is_enum, name)| name.as_ref().map(|name| (*is_enum, name.clone())));
                match owner {
                    Some((true, name)) => {
                        let (value, number) = declaration
                            .split_once('=')
                            .and_then(|(v, n)| Some((v.trim().to_owned(), n.trim().parse().ok()?)))
                            .unwrap_or_else(|| panic!("unparsed enum value {line:?}"));
                        enums.entry(name).or_default().push((value, number));
                    }
                    Some((false, name)) => {
                        let parsed = field(declaration)
                            .unwrap_or_else(|| panic!("unparsed proto line {line:?}"));
                        messages.entry(name).or_default().push(parsed);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "unbalanced braces in the proto");
    (messages, enums)
}

/// The text of the document's fenced code blocks.
fn code_blocks(doc: &str) -> String {
    doc.split("```")
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields a summary `Name { ... }` lists (spaces before the brace may align it), when the
/// code blocks hold one for `name`.
fn summary(blocks: &str, name: &str) -> Option<Vec<Field>> {
    let start = blocks.match_indices(name).find_map(|(at, _)| {
        let before = blocks[..at].chars().next_back();
        let own = before.is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after = &blocks[at + name.len()..];
        let brace = after.len() - after.trim_start().len();
        (own && after[brace..].starts_with('{')).then_some(at + name.len() + brace + 1)
    })?;
    let mut depth = 1;
    let end = blocks[start..].char_indices().find_map(|(i, c)| {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        (depth == 0).then_some(start + i)
    })?;
    let body = &blocks[start..end];
    let fields = body
        .split(';')
        .map(|piece| piece.rsplit('{').next().unwrap_or(piece))
        .map(|piece| piece.trim_start_matches(|c: char| c == '}' || c.is_whitespace()))
        .filter(|piece| !piece.trim().is_empty())
        .map(|piece| field(piece).unwrap_or_else(|| panic!("{name}: unparsed {piece:?}")))
        .collect();
    Some(fields)
}

#[test]
fn every_summary_in_the_document_matches_the_proto() {
    let (messages, _) = parse_proto(&read("proto/feedgate/v1/feedgate.proto"));
    let blocks = code_blocks(&read("docs/protocol.md"));
    let mut summarized = Vec::new();
    for (name, fields) in &messages {
        let Some(documented) = summary(&blocks, name) else {
            continue;
        };
        let mut documented = documented;
        let mut fields = fields.clone();
        documented.sort_by_key(|f| f.2);
        fields.sort_by_key(|f| f.2);
        assert_eq!(
            documented, fields,
            "docs/protocol.md's summary of {name} differs from the proto"
        );
        summarized.push(name.as_str());
    }
    for name in SUMMARIZED {
        assert!(
            summarized.contains(name),
            "docs/protocol.md has no summary `{name} {{ ... }}` in a code block"
        );
    }
}

#[test]
fn every_command_and_error_code_has_its_row() {
    let (messages, enums) = parse_proto(&read("proto/feedgate/v1/feedgate.proto"));
    let doc = read("docs/protocol.md");
    let request = &messages["Request"];
    let commands: Vec<_> = request.iter().filter(|f| f.1 != "request_id").collect();
    assert!(commands.len() >= 6, "the Request oneof was parsed");
    for (ty, _, _) in commands {
        assert!(
            doc.contains(&format!("\n| `{ty}` |")),
            "docs/protocol.md's commands table has no row for {ty}"
        );
    }
    let codes = &enums["ErrorCode"];
    assert!(codes.len() >= 20, "the ErrorCode enum was parsed");
    for (code, number) in codes.iter().filter(|(_, number)| *number != 0) {
        assert!(
            doc.contains(&format!("| `{code}` ({number}) |")),
            "docs/protocol.md's error table has no row for {code} ({number})"
        );
    }
}
