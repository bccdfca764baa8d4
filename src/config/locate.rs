//! Maps between key paths and byte spans in a TOML document, so errors found by serde (unknown
//! keys, wrong types) can name both the key and its line.

use std::ops::Range;
use toml_edit::{ImDocument, Item};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path as `upstreams[0].health_check.path`.
pub(crate) fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Converts a `serde_ignored` path into segments, dropping serde's internal markers.
pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    let mut out = Vec::new();
    collect(path, &mut out);
    out
}

fn collect(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            collect(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            collect(parent, out);
            // `toml::Spanned` deserializes through a map with private keys.
            if !key.starts_with("$__serde_spanned") {
                out.push(Seg::Key(key.clone()));
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => collect(parent, out),
    }
}

/// The span of the key (or array element) at `path`.
pub(crate) fn span_of(doc: &ImDocument<&str>, path: &[Seg]) -> Option<Range<usize>> {
    let mut item = doc.as_item();
    let mut span = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let (key, next) = item.as_table_like()?.get_key_value(k)?;
                span = key.span().or_else(|| next.span());
                item = next;
            }
            Seg::Index(i) => {
                let next = item.get(*i)?;
                span = next.span().or(span);
                item = next;
            }
        }
    }
    span
}

/// The deepest key path whose key or value span contains `offset`.
pub(crate) fn path_at(doc: &ImDocument<&str>, offset: usize) -> Vec<Seg> {
    let mut path = Vec::new();
    descend(doc.as_item(), offset, &mut path);
    path
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn descend(item: &Item, offset: usize, path: &mut Vec<Seg>) -> bool {
    if let Some(table) = item.as_table_like() {
        for (k, child) in table.iter() {
            path.push(Seg::Key(k.to_owned()));
            let key_hit = table
                .get_key_value(k)
                .is_some_and(|(key, _)| contains(key.span(), offset));
            if descend(child, offset, path) || key_hit || contains(child.span(), offset) {
                return true;
            }
            path.pop();
        }
        return false;
    }
    let len = match item {
        Item::ArrayOfTables(a) => a.len(),
        Item::Value(v) => v.as_array().map_or(0, |a| a.len()),
        _ => 0,
    };
    for i in 0..len {
        let Some(child) = item.get(i) else { continue };
        path.push(Seg::Index(i));
        if descend(child, offset, path) || contains(child.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[server]\nthreads = 2\n\n[[upstreams]]\nname = \"a\"\nhealth_check = { kind = \"tcp\", bogus = 1 }\n";

    #[test]
    fn finds_the_span_of_a_nested_key() {
        let doc = ImDocument::parse(SRC).unwrap();
        let path = [
            Seg::Key("upstreams".into()),
            Seg::Index(0),
            Seg::Key("health_check".into()),
            Seg::Key("bogus".into()),
        ];
        let span = span_of(&doc, &path).unwrap();
        assert_eq!(&SRC[span], "bogus");
        assert_eq!(display(&path), "upstreams[0].health_check.bogus");
    }

    #[test]
    fn finds_the_path_at_an_offset() {
        let doc = ImDocument::parse(SRC).unwrap();
        let offset = SRC.find('2').unwrap();
        assert_eq!(display(&path_at(&doc, offset)), "server.threads");
    }
}
