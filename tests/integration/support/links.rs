//! Relative Markdown links, checked as GitHub resolves them: the README and
//! docs/ pages (readme.rs) and the deploy docs (deploy.rs) use the same
//! check.

use std::collections::BTreeSet;
use std::path::Path;

/// A heading's anchor, as GitHub makes it: lower case, punctuation other
/// than `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(md: &str) -> BTreeSet<String> {
    let mut in_block = false;
    let mut out = BTreeSet::new();
    for l in md.lines() {
        if l.starts_with("```") {
            in_block = !in_block;
        } else if !in_block && l.starts_with('#') {
            out.insert(slug(l.trim_start_matches('#')));
        }
    }
    out
}

/// Asserts that every relative link of `md`, the page at `path` (`page` in
/// messages), outside code blocks (`[text](path#anchor)`), names a file
/// that exists and, with an anchor, a heading of it; `(#anchor)` alone, a
/// heading of the same page. Returns how many links it checked.
pub fn check_links(page: &str, path: &Path, md: &str) -> usize {
    let mut n = 0;
    let mut in_block = false;
    for (i, l) in md.lines().enumerate() {
        if l.starts_with("```") {
            in_block = !in_block;
        }
        if in_block {
            continue;
        }
        for (j, _) in l.match_indices("](") {
            let rest = &l[j + 2..];
            let end = rest
                .find(')')
                .unwrap_or_else(|| panic!("{page}:{}: unclosed link", i + 1));
            let target = &rest[..end];
            if target.contains("://") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                path.to_path_buf()
            } else {
                path.parent().unwrap().join(file)
            };
            assert!(
                linked.exists(),
                "{page}:{}: link to {target}: {} does not exist",
                i + 1,
                linked.display()
            );
            if !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
                assert!(
                    headings.contains(anchor),
                    "{page}:{}: link to {target}: no such heading in {}",
                    i + 1,
                    linked.display()
                );
            }
            n += 1;
        }
    }
    n
}
