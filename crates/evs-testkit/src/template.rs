//! The stacks' template tests: a SAM template read as YAML, and the check
//! that a function's `sam build` (BuildMethod: makefile) target builds the
//! right binary.

use std::path::Path;

pub use serde_yaml_ng::Value;

/// The template at `path`, as YAML.
pub fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `build-<id>` of the Makefile at `makefile` (what `sam build` runs for the
/// function `id`) builds `binary` with the repository's build/arm64.sh and
/// copies its bootstrap into `$(ARTIFACTS_DIR)`.
pub fn assert_makefile_builds(makefile: &Path, id: &str, binary: &str) {
    let text =
        std::fs::read_to_string(makefile).unwrap_or_else(|e| panic!("{}: {e}", makefile.display()));
    let rule = format!("build-{id}:");
    let mut lines = text.lines();
    assert!(
        lines.any(|l| l.starts_with(&rule)),
        "no rule {rule} in {}",
        makefile.display()
    );
    let recipe: Vec<&str> = lines
        .take_while(|l| l.starts_with('\t'))
        .map(str::trim)
        .collect();
    assert!(
        recipe
            .iter()
            .any(|l| l.starts_with("bash ") && l.ends_with(&format!("build/arm64.sh {binary}"))),
        "{rule} does not run build/arm64.sh {binary}: {recipe:?}"
    );
    assert!(
        recipe.iter().any(|l| l.starts_with("cp ")
            && l.contains(&format!("target/lambda/{binary}/bootstrap "))
            && l.ends_with("\"$(ARTIFACTS_DIR)/bootstrap\"")),
        "{rule} does not copy {binary}'s bootstrap into $(ARTIFACTS_DIR): {recipe:?}"
    );
}

/// A YAML value that is a string or a list of strings, as strings.
pub fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(Value::as_str).collect(),
        other => other.as_str().into_iter().collect(),
    }
}
