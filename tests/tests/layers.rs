//! The workspace's layers, held by its manifests: dependencies point inward.
//!
//! ```text
//! functions ──▶ edge ──▶ services ──▶ domain ◀── adapters
//!                 └────────────────────────────────┘ (the edge wires adapters in)
//! ```
//!
//! `shared/domain` (ledger, rating, tax, billing documents, the card processor port) depends on
//! nothing of ours but itself; `shared/services` on the domain and each other; `shared/adapters`
//! (stores, Stripe and the simulated processor) on the domain only; `shared/edge` (the HTTP API,
//! the Lambda runtime) on any of those; `functions/` (deployables) on anything but test support;
//! `shared/testing` (the conformance suite, the simulation) on anything but deployables. Test
//! code (`[dev-dependencies]`, `tests/`, `bench/`) may use anything. Every package is named
//! `ringledger-…` and no two share a name or a library name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Domain,
    Services,
    Adapters,
    Edge,
    Testing,
    Functions,
    Checks,
}

fn layer_of(dir: &str) -> Layer {
    match dir.split('/').take(2).collect::<Vec<_>>().as_slice() {
        ["shared", "domain"] => Layer::Domain,
        ["shared", "services"] => Layer::Services,
        ["shared", "adapters"] => Layer::Adapters,
        ["shared", "edge"] => Layer::Edge,
        ["shared", "testing"] => Layer::Testing,
        ["functions", _] => Layer::Functions,
        ["tests"] | ["bench"] | ["tests", _] | ["bench", _] => Layer::Checks,
        other => panic!("{dir}: not in a layer ({other:?}); put it under shared/<layer>/"),
    }
}

fn may_depend(from: Layer, to: Layer) -> bool {
    use Layer::*;
    match from {
        Domain => to == Domain,
        Adapters => to == Domain,
        Services => matches!(to, Domain | Services),
        Edge => matches!(to, Domain | Services | Adapters | Edge),
        Functions => !matches!(to, Testing | Checks | Functions),
        Testing => !matches!(to, Functions | Checks),
        Checks => to != Checks,
    }
}

/// The `[section]` tables of a manifest: section name → its `key = value` lines.
fn sections(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').to_string();
            out.entry(current.clone()).or_default();
        } else if let Some((key, value)) = line.split_once('=') {
            if !line.starts_with('#') {
                out.entry(current.clone())
                    .or_default()
                    .push((key.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    out
}

fn string_value(value: &str) -> Option<String> {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).map(str::to_string)
}

struct Member {
    dir: String,
    package: String,
    lib: Option<String>,
    dependencies: Vec<String>,
}

fn members() -> (Vec<Member>, BTreeMap<String, String>) {
    let root = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let member_dirs: Vec<String> = root
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members")
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().trim_end_matches(','))
        .filter_map(string_value)
        .collect();
    // Dependency key → package name, from [workspace.dependencies].
    let mut packages_by_key = BTreeMap::new();
    for (key, value) in sections(&root).remove("workspace.dependencies").unwrap_or_default() {
        if let Some(package) = value.split("package = \"").nth(1).and_then(|v| v.split('"').next())
        {
            packages_by_key.insert(key, package.to_string());
        }
    }
    let mut members = Vec::new();
    for dir in member_dirs {
        let manifest: PathBuf = repo().join(&dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let sections = sections(&text);
        let get = |section: &str, key: &str| {
            sections
                .get(section)
                .and_then(|lines| lines.iter().find(|(k, _)| k == key))
                .and_then(|(_, v)| string_value(v))
        };
        let package = get("package", "name").unwrap_or_else(|| panic!("{dir}: no package name"));
        let lib = get("lib", "name");
        let dependencies = sections
            .get("dependencies")
            .map(|lines| {
                lines
                    .iter()
                    .map(|(key, _)| key.split('.').next().unwrap_or(key).to_string())
                    .filter_map(|key| packages_by_key.get(&key).cloned())
                    .collect()
            })
            .unwrap_or_default();
        members.push(Member { dir, package, lib, dependencies });
    }
    (members, packages_by_key)
}

#[test]
fn dependencies_point_inward() {
    let (members, _) = members();
    assert!(members.len() >= 20, "read the workspace: {} members", members.len());
    let layer_by_package: BTreeMap<&str, Layer> =
        members.iter().map(|m| (m.package.as_str(), layer_of(&m.dir))).collect();
    let mut wrong = Vec::new();
    for member in &members {
        let from = layer_of(&member.dir);
        for dependency in &member.dependencies {
            let to = layer_by_package[dependency.as_str()];
            if !may_depend(from, to) {
                wrong.push(format!("{} ({from:?}) -> {dependency} ({to:?})", member.package));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies pointing the wrong way:\n{}", wrong.join("\n"));
}

#[test]
fn every_package_is_a_ringledger_package_and_names_are_unique() {
    let (members, _) = members();
    let mut packages = BTreeSet::new();
    let mut libs = BTreeSet::new();
    for member in &members {
        assert!(
            member.package.starts_with("ringledger"),
            "{}: package {} is not ringledger-…",
            member.dir,
            member.package
        );
        assert!(packages.insert(member.package.clone()), "two packages named {}", member.package);
        if let Some(lib) = &member.lib {
            assert!(libs.insert(lib.clone()), "two libraries named {lib}");
        }
    }
}

#[test]
fn the_layer_rule_refuses_what_it_should() {
    use Layer::*;
    assert!(!may_depend(Domain, Services));
    assert!(!may_depend(Services, Edge));
    assert!(!may_depend(Services, Adapters));
    assert!(!may_depend(Adapters, Services));
    assert!(!may_depend(Edge, Functions));
    assert!(
        may_depend(Functions, Edge) && may_depend(Edge, Adapters) && may_depend(Services, Domain)
    );
}

/// Modules of one crate do not lean on each other both ways (`a` uses `crate::b` and `b` uses
/// `crate::a`): one of them belongs in a third module both use.
#[test]
fn no_two_modules_of_a_crate_depend_on_each_other() {
    let (members, _) = members();
    let mut cycles = Vec::new();
    for member in &members {
        let src = repo().join(&member.dir).join("src");
        let Ok(entries) = std::fs::read_dir(&src) else { continue };
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(module) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("rs")
                || module == "lib"
                || module == "main"
            {
                continue;
            }
            // Code only: a documentation link is not a dependency.
            let text: String = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let used = text
                .split("crate::")
                .skip(1)
                .filter_map(|rest| {
                    let name: String =
                        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    (!name.is_empty() && name != module).then_some(name)
                })
                .chain(text.split("use crate::{").skip(1).flat_map(|rest| {
                    let list = rest.split('}').next().unwrap_or_default();
                    list.split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or_default().to_string())
                        .collect::<Vec<_>>()
                }))
                .collect();
            uses.insert(module, used);
        }
        for (a, used) in &uses {
            for b in used {
                if a < b && uses.get(b).is_some_and(|back| back.contains(a)) {
                    cycles.push(format!("{}: {a} <-> {b}", member.dir));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "modules that use each other:\n{}", cycles.join("\n"));
}
