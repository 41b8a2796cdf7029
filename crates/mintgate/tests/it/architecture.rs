//! The production crate's module graph: its top-level modules (`api`, `pipeline`, `store`, …) form
//! no cycle, so each can be read, tested and changed from the bottom up; and its sources name
//! no simulator (the lab crate holds everything that does).
//!
//! The graph is read from the sources: every `crate::<module>` path outside comments and
//! `#[cfg(test)]` modules is an edge from the module of the file to `<module>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules a piece of source names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the names at depth 0 of the group.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        named.insert(identifier(&group[i..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                named.insert(name.to_owned());
            }
        }
    }
    named
}

/// The module graph of a crate's `src` folder.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for target in named_modules(&code) {
            if target != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// A cycle of the graph, as the list of its modules, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(graph, module, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Fails naming the files of each edge of a cycle among the top-level modules of `src`.
fn assert_no_cycle(src: &Path, expected_modules: &[&str]) {
    let graph = module_graph(src);
    for module in expected_modules {
        assert!(graph.contains_key(*module), "{module} missing: {graph:#?}");
    }
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let files = &graph[&pair[0]][&pair[1]];
                format!("{} -> {} (in {files:?})", pair[0], pair[1])
            })
            .collect();
        panic!("module cycle in {}: {}", src.display(), edges.join(", "));
    }
}

#[test]
fn the_modules_of_the_service_form_no_cycle() {
    assert_no_cycle(&src(), &["api", "pipeline"]);
}

/// The simulator's modules too (its README's module map reads bottom up): `config` and
/// `behaviours` share their validation through `validation`, handlers depend on `shared`.
#[test]
fn the_modules_of_the_simulator_and_the_client_form_no_cycle() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert_no_cycle(
        &crates.join("mint-sim/src"),
        &["config", "behaviours", "api"],
    );
    assert_no_cycle(&crates.join("mint-client/src"), &["client"]);
}

#[test]
fn the_cycle_finder_finds_a_cycle_through_a_use_group() {
    let code =
        "use crate::{clock::Clock, pipeline::{self, Clients}};\nfn f() { crate::api::view(); }";
    let named = named_modules(code);
    assert_eq!(
        named,
        BTreeSet::from(["api".to_owned(), "clock".to_owned(), "pipeline".to_owned()])
    );
    let mut graph = Graph::new();
    for (from, to) in [("api", "pipeline"), ("pipeline", "store"), ("store", "api")] {
        graph
            .entry(from.to_owned())
            .or_default()
            .entry(to.to_owned())
            .or_default();
    }
    assert_eq!(
        find_cycle(&graph),
        Some(
            ["api", "pipeline", "store", "api"]
                .map(String::from)
                .to_vec()
        )
    );
    graph.get_mut("store").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_production_sources_name_no_simulator() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("mint_sim"),
            "{} names mint_sim: the simulator belongs to the lab crate",
            file.display()
        );
    }
}
