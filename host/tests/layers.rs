//! The layer order of `docs/architecture.md`, checked against the imports: a module may use the
//! modules of lower layers, never its own layer's neighbours above it or anything higher.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Bottom to top; modules on one line form one layer and do not import each other.
const LAYERS: &[&[&str]] = &[
    &["sid", "http_util", "file_watch", "hex"],
    &["engineio"],
    &["codec"],
    &["adapter"],
    &["socketio"],
    &["plugin"],
    &["contract", "admin_ui"],
    &["tenant"],
    &["api", "metrics", "static_files", "status"],
    &["serve"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .expect("a path under src")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a file names outside comments.
fn imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let module = module_of(rel);
        if module == "lib" || module == "main" || module == "cli" {
            continue; // the crate root declares every layer; the binary sits on top of them all
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("{module} (in {}) is in no layer", rel.display()));
        let source = fs::read_to_string(file).expect("read source");
        for target in imports(&source) {
            if target == module {
                continue;
            }
            let theirs =
                layer_of(&target).unwrap_or_else(|| panic!("crate::{target} is in no layer"));
            if theirs >= own {
                violations
                    .entry(rel.display().to_string())
                    .or_insert_with(Vec::new)
                    .push(target);
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up or sideways: {violations:#?}"
    );
}

#[test]
fn every_module_of_the_crate_root_has_a_layer() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() >= 10, "lib.rs declares {modules:?}");
    for module in modules {
        assert!(
            layer_of(module).is_some(),
            "{module} is in no layer of docs/architecture.md"
        );
    }
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let source = "use crate::adapter::Adapter;\n// crate::serve in a comment\nlet x = crate::codec::encode(p); // crate::api\n";
    assert_eq!(
        imports(source),
        vec!["adapter".to_owned(), "codec".to_owned()]
    );
}
