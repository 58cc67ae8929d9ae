//! `pgoutput::decode` (src/changefeed/pgoutput.rs) on any bytes: it never panics, and what it
//! accepts is exactly a message of the documented layout (PostgreSQL's "Logical Replication
//! Message Formats", protocol version 1):
//!
//! - an accepted message, written back in that layout by `encode` below (an independent
//!   statement of it), has the input's length and decodes to the same message: nothing was
//!   skipped or invented (only flag bits the decoder does not read may differ from the input);
//! - every strict prefix of an accepted message is refused as truncated.

#![no_main]

use feedgate::changefeed::pgoutput::{decode, Datum, DecodeError, Message, Tuple};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode(data) else { return };
    let bytes = encode(&message);
    assert_eq!(bytes.len(), data.len(), "{message:?}");
    assert_eq!(decode(&bytes), Ok(message.clone()));
    for end in 0..data.len() {
        assert!(
            matches!(decode(&data[..end]), Err(DecodeError::Truncated { .. })),
            "{message:?} cut at {end}"
        );
    }
});

fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match message {
        Message::Begin {
            final_lsn,
            commit_time_micros,
            xid,
        } => {
            out.push(b'B');
            out.extend(final_lsn.to_be_bytes());
            out.extend(commit_time_micros.to_be_bytes());
            out.extend(xid.to_be_bytes());
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time_micros,
        } => {
            out.push(b'C');
            out.push(*flags);
            out.extend(commit_lsn.to_be_bytes());
            out.extend(end_lsn.to_be_bytes());
            out.extend(commit_time_micros.to_be_bytes());
        }
        Message::Origin { commit_lsn, name } => {
            out.push(b'O');
            out.extend(commit_lsn.to_be_bytes());
            string(&mut out, name);
        }
        Message::Relation(relation) => {
            out.push(b'R');
            out.extend(relation.id.to_be_bytes());
            string(&mut out, &relation.namespace);
            string(&mut out, &relation.name);
            out.push(relation.replica_identity);
            out.extend((relation.columns.len() as u16).to_be_bytes());
            for column in &relation.columns {
                out.push(u8::from(column.key));
                string(&mut out, &column.name);
                out.extend(column.type_oid.to_be_bytes());
                out.extend(column.type_modifier.to_be_bytes());
            }
        }
        Message::Type {
            id,
            namespace,
            name,
        } => {
            out.push(b'Y');
            out.extend(id.to_be_bytes());
            string(&mut out, namespace);
            string(&mut out, name);
        }
        Message::Insert { relation, new } => {
            out.push(b'I');
            out.extend(relation.to_be_bytes());
            tuple(&mut out, b'N', new);
        }
        Message::Update {
            relation,
            old,
            key_only_old,
            new,
        } => {
            out.push(b'U');
            out.extend(relation.to_be_bytes());
            if let Some(old) = old {
                tuple(&mut out, if *key_only_old { b'K' } else { b'O' }, old);
            }
            tuple(&mut out, b'N', new);
        }
        Message::Delete {
            relation,
            old,
            key_only,
        } => {
            out.push(b'D');
            out.extend(relation.to_be_bytes());
            tuple(&mut out, if *key_only { b'K' } else { b'O' }, old);
        }
        Message::Truncate {
            relations,
            cascade,
            restart_identity,
        } => {
            out.push(b'T');
            out.extend((relations.len() as u32).to_be_bytes());
            out.push(u8::from(*cascade) | u8::from(*restart_identity) << 1);
            for relation in relations {
                out.extend(relation.to_be_bytes());
            }
        }
        Message::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            out.push(b'M');
            out.push(u8::from(*transactional));
            out.extend(lsn.to_be_bytes());
            string(&mut out, prefix);
            out.extend((content.len() as i32).to_be_bytes());
            out.extend(content);
        }
    }
    out
}

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend(text.as_bytes());
    out.push(0);
}

fn tuple(out: &mut Vec<u8>, marker: u8, tuple: &Tuple) {
    out.push(marker);
    out.extend((tuple.0.len() as u16).to_be_bytes());
    for datum in &tuple.0 {
        match datum {
            Datum::Null => out.push(b'n'),
            Datum::UnchangedToast => out.push(b'u'),
            Datum::Text(text) => value(out, b't', text.as_bytes()),
            Datum::Binary(bytes) => value(out, b'b', bytes),
        }
    }
}

fn value(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(kind);
    out.extend((bytes.len() as i32).to_be_bytes());
    out.extend(bytes);
}
