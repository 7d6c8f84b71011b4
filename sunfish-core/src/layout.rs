//! The reference's on-disk layout, `<root>/<path below /redfish/v1>/index.json` with the service
//! root at `<root>/index.json`. Used by the fs backend and to read seed trees, so a reference
//! tree can be served and seeded as it is.

use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};
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

/// Threads that read a tree. More than the cores: when the files are not in the page cache,
/// reading is waiting for the disk, and several requests in flight keep it busy.
const READERS: usize = 8;

/// Reads every `index.json` below `root` as a resource. Files that do not parse, are not
/// objects, or whose folder name is not a valid path segment are skipped with a warning (the
/// reference's own agent mockups contain invalid JSON). Folders starting with a dot are not
/// entered. Symbolic links are not followed, so a tree cannot pull in files from outside.
///
/// Folders are read and files parsed by [`READERS`] threads (a store of 100,000 resources is
/// read at start-up: issue 7), and every value is [`fitted`] to its size. Both lists come back
/// sorted, resources by path and warnings by file.
///
/// # Errors
/// Only when `root` itself cannot be read.
pub fn read_tree(root: &Path) -> std::io::Result<(Vec<(ResourcePath, Value)>, Vec<TreeWarning>)> {
    read_tree_with(root, &|_, v| fitted(v))
}

/// [`read_tree`], each value handed to `convert` by the thread that parsed it: a store that
/// keeps something else than the parsed values (the fs backend keeps compact text) converts
/// them in parallel, and never holds every value of the tree at once.
///
/// # Errors
/// Only when `root` itself cannot be read.
pub fn read_tree_with<T: Send>(
    root: &Path,
    convert: &(dyn Fn(&ResourcePath, Value) -> T + Sync),
) -> std::io::Result<(Vec<(ResourcePath, T)>, Vec<TreeWarning>)> {
    std::fs::read_dir(root)?;
    let walk = Walk {
        state: Mutex::new(WalkState { folders: vec![(root.to_path_buf(), ResourcePath::root())], busy: 0 }),
        more: Condvar::new(),
    };
    let (mut out, mut warnings) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS).map(|_| scope.spawn(|| walk.read(convert))).collect();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for r in readers {
            // A reader panics only if a panic is already unwinding the walk; pass it on.
            let (o, w) = r.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            out.extend(o);
            warnings.extend(w);
        }
        (out, warnings)
    });
    out.sort_by(|a, b| a.0.cmp(&b.0));
    warnings.sort_by(|a, b| a.file.cmp(&b.file));
    Ok((out, warnings))
}

/// The folders of a tree still to read, shared by the readers of [`read_tree`].
struct Walk {
    state: Mutex<WalkState>,
    /// Signalled when folders are added or the walk is over.
    more: Condvar,
}

struct WalkState {
    /// Folders found and not yet taken, with their resource paths.
    folders: Vec<(PathBuf, ResourcePath)>,
    /// Readers reading a folder (each may add more).
    busy: usize,
}

type Found<T> = (Vec<(ResourcePath, T)>, Vec<TreeWarning>);

impl Walk {
    /// One reader: takes folders until none is left and no reader can add one.
    fn read<T>(&self, convert: &(dyn Fn(&ResourcePath, Value) -> T + Sync)) -> Found<T> {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        while let Some((dir, rpath)) = self.next() {
            let mut subfolders = Vec::new();
            read_folder(&dir, &rpath, &mut subfolders, &mut out, &mut warnings, convert);
            self.done(subfolders);
        }
        (out, warnings)
    }

    fn next(&self) -> Option<(PathBuf, ResourcePath)> {
        let mut state = self.state.lock();
        loop {
            if let Some(folder) = state.folders.pop() {
                state.busy += 1;
                return Some(folder);
            }
            if state.busy == 0 {
                return None;
            }
            self.more.wait(&mut state);
        }
    }

    fn done(&self, subfolders: Vec<(PathBuf, ResourcePath)>) {
        let mut state = self.state.lock();
        state.busy -= 1;
        let added = subfolders.len();
        state.folders.extend(subfolders);
        let over = state.busy == 0 && state.folders.is_empty();
        drop(state);
        if over || added > 1 {
            self.more.notify_all();
        } else if added == 1 {
            self.more.notify_one();
        }
    }
}

/// Reads one folder: its subfolders (to read next) and its `index.json`.
fn read_folder<T>(
    dir: &Path,
    rpath: &ResourcePath,
    subfolders: &mut Vec<(PathBuf, ResourcePath)>,
    out: &mut Vec<(ResourcePath, T)>,
    warnings: &mut Vec<TreeWarning>,
    convert: &(dyn Fn(&ResourcePath, Value) -> T + Sync),
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            warnings.push(TreeWarning { file: dir.to_path_buf(), reason: e.to_string() });
            return;
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
                Ok(child) => subfolders.push((entry.path(), child)),
                Err(e) => warnings.push(TreeWarning { file: entry.path(), reason: e.to_string() }),
            }
        } else if ft.is_file() && name == "index.json" {
            match std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            {
                Ok(v) if v.is_object() => out.push((rpath.clone(), convert(rpath, v))),
                Ok(_) => warnings.push(TreeWarning { file: entry.path(), reason: "not a JSON object".into() }),
                Err(reason) => warnings.push(TreeWarning { file: entry.path(), reason }),
            }
        }
    }
}

/// `v` with every object and array rebuilt at exactly its size. Parsing grows them by doubling
/// (an object's entries follow its hash table's capacity), which leaves a loaded tree with about
/// a fifth of its memory unused; a loaded tree is mostly read, so that memory is never used.
pub fn fitted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut fitted_map = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                fitted_map.insert(k, fitted(v));
            }
            Value::Object(fitted_map)
        }
        Value::Array(items) => {
            // Collecting into the same element type reuses the old buffer: shrink it after.
            let mut items: Vec<Value> = items.into_iter().map(fitted).collect();
            items.shrink_to_fit();
            Value::Array(items)
        }
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A new folder under the system's temporary folder, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("sunfish-layout-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            Scratch(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let file = self.0.join(rel);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
            }
            std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The parallel walk finds every `index.json` at every depth once, sorted by path, does
    /// not enter dot folders, and warns (sorted by file) about files that are not objects.
    #[test]
    fn read_tree_finds_every_resource_once_in_order() {
        let tree = Scratch::new("walk");
        tree.write("index.json", r#"{"Id": "root"}"#);
        let mut expected = vec!["/redfish/v1".to_string(), "/redfish/v1/Systems".to_string()];
        tree.write("Systems/index.json", r#"{"Members": []}"#);
        for i in 0..60 {
            tree.write(&format!("Systems/{i}/index.json"), &format!(r#"{{"Id": "{i}"}}"#));
            expected.push(format!("/redfish/v1/Systems/{i}"));
            if i % 3 == 0 {
                tree.write(&format!("Systems/{i}/Bios/Settings/index.json"), r#"{"a": [1, {"b": 2}]}"#);
                expected.push(format!("/redfish/v1/Systems/{i}/Bios/Settings"));
            }
        }
        tree.write(".sunfish/kv/ns/key.json", "{}");
        tree.write(".sunfish/index.json", "{}");
        tree.write("Systems/zz/index.json", "[1]");
        tree.write("Systems/aa/index.json", "{not json");
        let (resources, warnings) = read_tree(&tree.0).unwrap_or_else(|e| panic!("read_tree: {e}"));
        let mut want: Vec<ResourcePath> =
            expected.iter().map(|p| ResourcePath::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))).collect();
        want.sort();
        let got: Vec<ResourcePath> = resources.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(got, want);
        assert_eq!(resources[2].1, serde_json::json!({"Id": "0"}));
        let files: Vec<&Path> = warnings.iter().map(|w| w.file.as_path()).collect();
        assert_eq!(files, vec![tree.0.join("Systems/aa/index.json"), tree.0.join("Systems/zz/index.json")]);
    }

    /// `fitted` changes no value and keeps the order of keys.
    #[test]
    fn fitted_keeps_values_and_key_order() {
        let text = r#"{"z": 1, "a": {"y": [1, 2, {"q": null, "b": "x"}], "c": true}, "m": [], "k": {}}"#;
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let f = fitted(v.clone());
        assert_eq!(f, v);
        assert_eq!(serde_json::to_string(&f).unwrap_or_default(), serde_json::to_string(&v).unwrap_or_default());
    }
}
