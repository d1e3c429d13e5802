//! The code keeps the shape of the pipeline diagram (DESIGN.md): every module
//! of `host/src` imports only from the stages below it, in the layer order
//! domain → config → bus → market → sandbox → engine → subscriber → brokers →
//! orders → notify / monitor / console, with `backtest` and `cli` driving the
//! stages (and the test-only `fuzz`); and no two modules import each other, directly or around a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer; `None` for the drivers, which may use any stage.
fn layer(module: &str) -> Option<Option<u32>> {
    Some(match module {
        "domain" => Some(0),
        "config" => Some(1),
        "bus" => Some(2),
        "market" => Some(3),
        "sandbox" => Some(4),
        "engine" => Some(5),
        "subscriber" => Some(6),
        "brokers" => Some(7),
        "orders" => Some(8),
        "notify" | "monitor" | "console" => Some(9),
        // Drivers, and `fuzz`, the test-only module that feeds every decoder.
        "backtest" | "cli" | "lib" | "main" | "fuzz" => None,
        _ => return None,
    })
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module → module it names → files naming it`: every `crate::<module>` in code
/// (comments left out), whether in a `use` or a path.
fn edges(src: &Path) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let from = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    edges
                        .entry((from.clone(), to))
                        .or_default()
                        .insert(rel.clone());
                }
            }
        }
    }
    edges
}

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

#[test]
fn no_module_imports_a_later_stage() {
    let edges = edges(&host_src());
    assert!(
        edges.len() > 20,
        "the edges of host/src were read: {edges:?}"
    );
    let mut wrong = Vec::new();
    for ((from, to), files) in &edges {
        let (Some(a), Some(b)) = (layer(from), layer(to)) else {
            wrong.push(format!(
                "{from} -> {to}: a module DESIGN.md does not place ({files:?})"
            ));
            continue;
        };
        match (a, b) {
            (Some(a), Some(b)) if b > a => wrong.push(format!(
                "{from} (layer {a}) imports {to} (layer {b}), a later stage, in {files:?}"
            )),
            (Some(_), None) => wrong.push(format!("{from} imports the driver {to} in {files:?}")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_import_cycle_between_modules() {
    let edges = edges(&host_src());
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        if from != "lib" && from != "main" {
            next.entry(from.as_str()).or_default().push(to.as_str());
        }
    }
    // Depth-first from every module: a module reached again on the current path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m);
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for n in next.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in next.keys() {
        let cycle = visit(m, &next, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_a_backward_import() {
    // The check itself, on a scratch tree: a config that names an order type is caught.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("orders")).unwrap();
    std::fs::write(
        dir.path().join("config.rs"),
        "use crate::orders::risk::RiskLimits; // config → orders\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("orders/mod.rs"),
        "use crate::config::Config;\n// crate::cli in a comment is not an import\n",
    )
    .unwrap();
    let found = edges(dir.path());
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![
            ("config".to_owned(), "orders".to_owned()),
            ("orders".to_owned(), "config".to_owned())
        ]
    );
}
