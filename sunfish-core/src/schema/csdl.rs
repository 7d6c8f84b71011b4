//! The CSDL side of the bundle, reduced to what `$metadata` needs: which file defines which
//! namespaces, and which namespaces declare an `EntityContainer`. A light scan of the `<Schema`
//! start tags (DMTF's files are machine-generated and regular), not a general XML parser.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Version;

/// What one schema name (`ServiceRoot`) has in the CSDL.
#[derive(Debug, Default)]
struct Entry {
    /// The file that defines it (`ServiceRoot_v1.xml`).
    file: String,
    /// Whether the unversioned namespace is defined.
    unversioned: bool,
    /// Versioned namespaces, with whether each declares an `EntityContainer`.
    versions: BTreeMap<Version, bool>,
}

/// Namespaces by schema name, from every `csdl/*.xml`.
#[derive(Debug, Default)]
pub(crate) struct CsdlIndex {
    by_schema: HashMap<String, Entry>,
}

impl CsdlIndex {
    /// Reads every `*.xml` in `dir`. Unreadable files are skipped (with a warning).
    pub(crate) fn scan(dir: &Path) -> std::io::Result<CsdlIndex> {
        let mut index = CsdlIndex::default();
        let mut files: Vec<String> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".xml"))
            .collect();
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(dir.join(&file)) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %file, error = %e, "CSDL file unreadable; skipped");
                    continue;
                }
            };
            for (namespace, container) in schemas(&text) {
                index.add(&file, namespace, container);
            }
        }
        Ok(index)
    }

    fn add(&mut self, file: &str, namespace: &str, container: bool) {
        let (schema, version) = match namespace.split_once('.') {
            Some((s, v)) => match Version::parse(v) {
                Some(v) => (s, Some(v)),
                None => return,
            },
            None => (namespace, None),
        };
        let entry = self
            .by_schema
            .entry(schema.to_string())
            .or_insert_with(|| Entry { file: file.to_string(), ..Entry::default() });
        // A schema defined in two files keeps the first (sorted) file; DMTF never does this.
        if entry.file != file {
            return;
        }
        match version {
            Some(v) => {
                *entry.versions.entry(v).or_default() |= container;
            }
            None => entry.unversioned = true,
        }
    }

    /// Number of schema names indexed.
    pub(crate) fn len(&self) -> usize {
        self.by_schema.len()
    }

    /// The file defining `schema`.
    pub(crate) fn file(&self, schema: &str) -> Option<&str> {
        self.by_schema.get(schema).map(|e| e.file.as_str())
    }

    /// Whether `namespace` (versioned or not) is defined.
    pub(crate) fn has(&self, namespace: &str) -> bool {
        match namespace.split_once('.') {
            None => self.by_schema.get(namespace).is_some_and(|e| e.unversioned),
            Some((s, v)) => {
                Version::parse(v).is_some_and(|v| self.by_schema.get(s).is_some_and(|e| e.versions.contains_key(&v)))
            }
        }
    }

    /// The newest namespace of `schema` at or below `at` that declares an `EntityContainer`.
    pub(crate) fn container_at(&self, schema: &str, at: Version) -> Option<String> {
        let e = self.by_schema.get(schema)?;
        e.versions.range(..=at).rev().find(|(_, c)| **c).map(|(v, _)| format!("{schema}.{v}"))
    }

    /// The newest versioned namespace of `schema`.
    pub(crate) fn newest(&self, schema: &str) -> Option<String> {
        let e = self.by_schema.get(schema)?;
        e.versions.keys().next_back().map(|v| format!("{schema}.{v}"))
    }
}

/// The `Namespace` of every `<Schema ...>` element in `text`, with whether its body declares an
/// `EntityContainer`.
fn schemas(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<Schema ") {
        rest = &rest[start..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        let body_end = rest.find("</Schema>").unwrap_or(rest.len());
        let body = &rest[tag_end.min(body_end)..body_end];
        if let Some(ns) = attribute(tag, "Namespace") {
            out.push((ns, body.contains("<EntityContainer")));
        }
        rest = &rest[body_end.max(1).min(rest.len())..];
    }
    out
}

/// The value of attribute `name` in a start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let at = tag.find(&pat)? + pat.len();
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces, containers and versions come out of a DMTF-shaped document.
    #[test]
    fn scans_schemas() {
        let text = r#"<edmx:Edmx><edmx:Reference Uri="x"><edmx:Include Namespace="Resource"/></edmx:Reference>
          <edmx:DataServices>
            <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="ServiceRoot"><EntityType Name="ServiceRoot"/></Schema>
            <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="ServiceRoot.v1_0_0">
              <EntityContainer Name="ServiceContainer"/></Schema>
            <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="ServiceRoot.v1_0_1"></Schema>
            <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="ServiceRoot.v1_5_0"><EntityContainer Name="ServiceContainer"/></Schema>
          </edmx:DataServices></edmx:Edmx>"#;
        let found = schemas(text);
        assert_eq!(
            found,
            vec![
                ("ServiceRoot", false),
                ("ServiceRoot.v1_0_0", true),
                ("ServiceRoot.v1_0_1", false),
                ("ServiceRoot.v1_5_0", true)
            ]
        );
        let mut index = CsdlIndex::default();
        for (ns, c) in found {
            index.add("ServiceRoot_v1.xml", ns, c);
        }
        assert!(index.has("ServiceRoot") && index.has("ServiceRoot.v1_0_1") && !index.has("ServiceRoot.v1_2_0"));
        let at = |v| Version::parse(v).unwrap();
        assert_eq!(index.container_at("ServiceRoot", at("v1_4_0")).as_deref(), Some("ServiceRoot.v1_0_0"));
        assert_eq!(index.container_at("ServiceRoot", at("v1_20_0")).as_deref(), Some("ServiceRoot.v1_5_0"));
        assert_eq!(index.newest("ServiceRoot").as_deref(), Some("ServiceRoot.v1_5_0"));
        assert_eq!(index.file("ServiceRoot"), Some("ServiceRoot_v1.xml"));
    }
}
