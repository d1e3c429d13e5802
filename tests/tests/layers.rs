//! The code keeps the shape of the pipeline diagram: every module of `host/src` imports only
//! from the stages below it, in the layer order the book's architecture chapter states
//! (`docs/src/architecture.md`, its `| Layer | Modules |` table, read here so that there is
//! one statement of it), with `backtest` and `cli` driving the stages (and the test-only
//! `fuzz`); and no two modules import each other, directly or around a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The drivers, which may use any stage: `backtest`, `cli`, the crate roots, and `fuzz`, the
/// test-only module that feeds every decoder.
const DRIVERS: [&str; 5] = ["backtest", "cli", "lib", "main", "fuzz"];

/// The architecture chapter's layer table: each module and its layer.
fn layers_of(chapter: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut lines = chapter
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("| Layer | Modules |"));
    lines.next().ok_or("no `| Layer | Modules |` table")?;
    lines.next().ok_or("the table ends at its header")?;
    let mut layers = BTreeMap::new();
    for row in lines.take_while(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [layer, modules] = cells[..] else {
            return Err(format!("row {row:?}: expected two cells"));
        };
        let layer: u32 = layer
            .parse()
            .map_err(|_| format!("row {row:?}: layer {layer:?} is not a number"))?;
        for module in modules.split(',') {
            let name = module.trim().trim_matches('`');
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(format!("row {row:?}: module {module:?} is not a `name`"));
            }
            if layers.insert(name.to_owned(), layer).is_some() {
                return Err(format!("{name} is placed twice"));
            }
        }
    }
    if layers.is_empty() {
        return Err("the table has no rows".into());
    }
    Ok(layers)
}

fn book_layers() -> BTreeMap<String, u32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/architecture.md");
    let chapter =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    layers_of(&chapter).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each top-level module's layer; `Some(None)` for the drivers, which may use any stage;
/// `None` for a module the book does not place.
fn layer(layers: &BTreeMap<String, u32>, module: &str) -> Option<Option<u32>> {
    if DRIVERS.contains(&module) {
        return Some(None);
    }
    layers.get(module).map(|l| Some(*l))
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
    let layers = book_layers();
    assert_eq!(
        layers.get("domain").zip(layers.get("orders")),
        Some((&0, &8)),
        "the book's table: {layers:?}"
    );
    let edges = edges(&host_src());
    assert!(
        edges.len() > 20,
        "the edges of host/src were read: {edges:?}"
    );
    let mut wrong = Vec::new();
    for ((from, to), files) in &edges {
        let (Some(a), Some(b)) = (layer(&layers, from), layer(&layers, to)) else {
            wrong.push(format!(
                "{from} -> {to}: a module the book's architecture chapter does not place ({files:?})"
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

#[test]
fn the_layer_table_is_read_and_a_bad_one_is_refused() {
    let table =
        "text\n\n| Layer | Modules |\n|---|---|\n| 0 | `domain` |\n| 1 | `a`, `b_c` |\n\nafter\n";
    let layers = layers_of(table).unwrap();
    assert_eq!(
        layers.into_iter().collect::<Vec<_>>(),
        vec![("a".into(), 1), ("b_c".into(), 1), ("domain".into(), 0)]
    );
    for bad in [
        "no table",
        "| Layer | Modules |\n|---|---|\n",
        "| Layer | Modules |\n|---|---|\n| x | `domain` |\n",
        "| Layer | Modules |\n|---|---|\n| 0 | `domain` |\n| 1 | `domain` |\n",
        "| Layer | Modules |\n|---|---|\n| 0 | `Domain!` |\n",
    ] {
        assert!(layers_of(bad).is_err(), "{bad:?}");
    }
}
