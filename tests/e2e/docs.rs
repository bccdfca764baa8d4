//! The documentation's links stay true: every relative link in README.md, SECURITY.md,
//! CHANGELOG.md and docs/**/*.md names a file that exists, and every `#anchor` names a heading
//! (as GitHub slugs it) or an explicit `<a id="...">` in the file it points to.

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut files: Vec<PathBuf> = ["README.md", "SECURITY.md", "CHANGELOG.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    walk(&root().join("docs"), &mut files);
    files
}

/// GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces as hyphens.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a Markdown file: its headings' slugs (repeats numbered as GitHub does) and
/// its explicit `<a id="...">` / `<a name="...">` targets.
fn anchors(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let base = slug(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    out.insert(if *n == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    });
                    *n += 1;
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = &mut heading {
                    h.push_str(&t);
                }
            }
            Event::Html(h) | Event::InlineHtml(h) => {
                for attr in ["id=\"", "name=\""] {
                    let mut rest = &*h;
                    while let Some(at) = rest.find(attr) {
                        let tail = &rest[at + attr.len()..];
                        if let Some(end) = tail.find('"') {
                            out.insert(tail[..end].to_owned());
                        }
                        rest = tail;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every link and image target of a Markdown file.
fn links(text: &str) -> Vec<String> {
    Parser::new(text)
        .filter_map(|e| match e {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.into_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = format!(
                "{} -> {target}",
                file.strip_prefix(root()).unwrap().display()
            );
            if !dest.exists() {
                broken.push(format!("{shown}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor
                && dest.extension().is_some_and(|x| x == "md")
                && !anchors(&std::fs::read_to_string(&dest).unwrap()).contains(anchor)
            {
                broken.push(format!("{shown}: no such heading"));
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(slug("`[server]`"), "server");
    assert_eq!(slug("TLS and HTTP/2"), "tls-and-http2");
    assert_eq!(
        slug("How the rate limits are built, and why they cannot become a switch"),
        "how-the-rate-limits-are-built-and-why-they-cannot-become-a-switch"
    );
    let a = anchors("# A\n## A\n<a id=\"x\"></a>\n");
    assert!(
        a.contains("a") && a.contains("a-1") && a.contains("x"),
        "{a:?}"
    );
}
