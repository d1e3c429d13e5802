//! The book (`docs/`, an mdBook) and the README hold together: every chapter `SUMMARY.md`
//! lists exists and every chapter is listed, and every relative link in them names a file
//! that exists and, with a `#fragment`, a heading in it (by mdBook's anchor rule). The
//! README's test command also builds the book with `mdbook` when it is installed (CI
//! installs it), which fails on a chapter missing from `src/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The text of `md` outside fenced code blocks and inline code spans, line by line.
fn prose(md: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans (`…`) name things; they link nothing.
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push(kept);
    }
    out
}

/// The targets of the Markdown links `[text](target)` in `md`, with their line numbers.
fn links(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(md).iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            out.push((n + 1, target.to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// mdBook's anchor of a heading: its text lowercased, letters, digits, `_` and `-` kept,
/// whitespace to `-`, the rest dropped; a repeated one gets `-1`, `-2`….
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in md.lines().filter(|l| l.starts_with('#')) {
        let text = line.trim_start_matches('#').trim();
        let mut plain = String::new();
        // Links in a heading keep their text; inline code keeps its content.
        let mut in_target = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ']' if chars.peek() == Some(&'(') => in_target = true,
                ')' if in_target => in_target = false,
                _ if in_target => {}
                _ => plain.push(c),
            }
        }
        let id: String = plain
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_lowercase().next().unwrap_or(c))
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let mut unique = id.clone();
        let mut k = 1;
        while seen.contains(&unique) {
            unique = format!("{id}-{k}");
            k += 1;
        }
        seen.insert(unique);
    }
    seen
}

/// Every broken relative link in the Markdown file `file`: `file:line: target: why`.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut broken = Vec::new();
    for (line, target) in links(&text) {
        if target.is_empty()
            || target.contains("://")
            || target.starts_with("mailto:")
            || !target.is_ascii()
        {
            continue;
        }
        let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
        let dest = if path.is_empty() {
            file.to_path_buf()
        } else {
            file.parent().unwrap_or(Path::new(".")).join(path)
        };
        let why = if !dest.exists() {
            Some("no such file".to_owned())
        } else if !fragment.is_empty() && dest.extension().is_some_and(|e| e == "md") {
            let heads = anchors(&std::fs::read_to_string(&dest).unwrap_or_default());
            (!heads.contains(fragment)).then(|| format!("no heading #{fragment}"))
        } else {
            None
        };
        if let Some(why) = why {
            broken.push(format!("{}:{line}: {target}: {why}", file.display()));
        }
    }
    broken
}

fn chapters() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_chapter_is_listed_and_every_listed_chapter_exists() {
    let summary = root().join("docs/src/SUMMARY.md");
    let text = std::fs::read_to_string(&summary).unwrap();
    let listed: BTreeSet<String> = links(&text).into_iter().map(|(_, t)| t).collect();
    assert!(listed.len() >= 10, "{listed:?}");
    for chapter in &listed {
        assert!(
            root().join("docs/src").join(chapter).is_file(),
            "SUMMARY.md lists {chapter}, which is not in docs/src"
        );
    }
    for file in chapters() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name == "SUMMARY.md" || listed.contains(&name),
            "docs/src/{name} is not in SUMMARY.md"
        );
    }
}

#[test]
fn every_relative_link_in_the_readme_and_the_book_resolves() {
    let mut files = chapters();
    files.push(root().join("README.md"));
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_the_two_commands_and_a_map() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fences: Vec<&str> = readme.split("```").collect();
    // The first two code blocks are the two commands.
    assert_eq!(
        (
            fences.get(1).map(|b| b.trim()),
            fences.get(3).map(|b| b.trim())
        ),
        (Some("sh\n./scripts/run"), Some("sh\n./scripts/test"))
    );
    assert!(
        readme.lines().count() <= 110,
        "the README stays a page: {} lines",
        readme.lines().count()
    );
}

#[test]
fn the_checker_finds_a_broken_link_and_a_missing_heading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.md"),
        "# A `code` title\n\n## Twice\n\n## Twice\n\n[ok](b.md#the-heading) [ok](#a-code-title) [ok](#twice-1)\n[gone](c.md) [no](b.md#other) `[code](x.md)`\n```\n[fenced](y.md)\n```\n[web](https://example.com)\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.md"), "# The heading\n").unwrap();
    let broken = broken_links(&dir.path().join("a.md"));
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].ends_with(":8: c.md: no such file"), "{broken:?}");
    assert!(
        broken[1].ends_with(":8: b.md#other: no heading #other"),
        "{broken:?}"
    );
}
