//! The reference's on-disk layout, `<root>/<path below /redfish/v1>/index.json` with the service
//! root at `<root>/index.json`. Used by the fs backend and to read seed trees, so a reference
//! tree can be served and seeded as it is.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ResourcePath;

/// The `index.json` file of `path` under `root`. Safe because [`ResourcePath`] segments can
/// never be `..` or contain separators.
pub fn file_for(root: &Path, path: &ResourcePath) -> PathBuf {
    let mut p = root.to_path_buf();
    for seg in path.segments() {
        p.push(seg);
    }
    p.push("index.json");
    p
}

/// A problem met while reading a tree; reading goes on past it.
#[derive(Debug, Clone)]
pub struct TreeWarning {
    /// The file concerned.
    pub file: PathBuf,
    /// What was wrong.
    pub reason: String,
}

/// Reads every `index.json` below `root` as a resource. Files that do not parse, are not
/// objects, or whose folder name is not a valid path segment are skipped with a warning (the
/// reference's own agent mockups contain invalid JSON). Folders starting with a dot are not
/// entered. Symbolic links are not followed, so a tree cannot pull in files from outside.
///
/// # Errors
/// Only when `root` itself cannot be read.
pub fn read_tree(root: &Path) -> std::io::Result<(Vec<(ResourcePath, Value)>, Vec<TreeWarning>)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    std::fs::read_dir(root)?;
    let mut stack = vec![(root.to_path_buf(), ResourcePath::root())];
    while let Some((dir, rpath)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(TreeWarning { file: dir.clone(), reason: e.to_string() });
                continue;
            }
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                warnings.push(TreeWarning { file: entry.path(), reason: "name is not UTF-8".into() });
                continue;
            };
            if ft.is_dir() {
                if name.starts_with('.') {
                    continue;
                }
                match rpath.child(name) {
                    Ok(child) => stack.push((entry.path(), child)),
                    Err(e) => warnings.push(TreeWarning { file: entry.path(), reason: e.to_string() }),
                }
            } else if ft.is_file() && name == "index.json" {
                match std::fs::read(entry.path())
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
                {
                    Ok(v) if v.is_object() => out.push((rpath.clone(), v)),
                    Ok(_) => warnings.push(TreeWarning { file: entry.path(), reason: "not a JSON object".into() }),
                    Err(reason) => warnings.push(TreeWarning { file: entry.path(), reason }),
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, warnings))
}

/// Turns `(relative file path, bytes)` pairs of a tree (for example one embedded in a binary)
/// into resources; only `.../index.json` files count.
///
/// # Errors
/// The first file that is not a JSON object or not at a valid path, named.
pub fn resources_from_files<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(ResourcePath, Value)>, String> {
    let mut out = Vec::new();
    for (rel, bytes) in files {
        let rel = rel.replace('\\', "/");
        let Some(dir) = rel.strip_suffix("index.json") else { continue };
        let path = ResourcePath::parse(&format!("/redfish/v1/{dir}")).map_err(|e| format!("{rel}: {e}"))?;
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("{rel}: {e}"))?;
        if !v.is_object() {
            return Err(format!("{rel}: not a JSON object"));
        }
        out.push((path, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
