//! Resource paths: the one place that decides which request paths name a resource.
//!
//! Every path that reaches storage went through [`ResourcePath::parse`], which percent-decodes
//! each segment and refuses anything that could escape a file-system root or confuse a backend:
//! `.`/`..` (and any segment starting with a dot, which also keeps the fs backend's private
//! `.sunfish` folder and temp files out of reach), encoded slashes, backslashes, NUL and control
//! characters. Backends can therefore join segments to a root without further checks.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::{Error, Result};

/// The Redfish service root, without a trailing slash.
pub const REDFISH_ROOT: &str = "/redfish/v1";

/// Longest accepted segment, in bytes (a file name limit on common file systems).
const MAX_SEGMENT: usize = 255;

/// A validated resource path below (or at) `/redfish/v1`, stored without a trailing slash and
/// with decoded segments. Ordering is byte-wise on that string, which keeps a subtree contiguous
/// (`/a/1`, `/a/1/x`, `/a/10`), so backends can use ordered maps for subtree scans.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePath(String);

impl ResourcePath {
    /// The service root `/redfish/v1`.
    pub fn root() -> Self {
        ResourcePath(REDFISH_ROOT.to_string())
    }

    /// Parses a request path or an `@odata.id`. Repeated slashes and one trailing slash are
    /// tolerated (agents written for the reference send `//redfish/v1/...`); a `#fragment` is
    /// refused (use [`ResourcePath::parse_link`] for links that may carry one).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when the path is not under `/redfish/v1` or a segment is unsafe.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPath {
            path: raw.chars().filter(|c| !c.is_control()).take(200).collect(),
            reason: reason.to_string(),
        };
        if raw.contains('#') || raw.contains('?') {
            return Err(invalid("fragments and queries are not part of a resource path"));
        }
        let mut segments = raw.split('/').filter(|s| !s.is_empty());
        if segments.next() != Some("redfish") || segments.next() != Some("v1") {
            return Err(invalid("not below /redfish/v1"));
        }
        let mut out = String::with_capacity(raw.len());
        out.push_str(REDFISH_ROOT);
        for seg in segments {
            let decoded = percent_decode_str(seg).decode_utf8().map_err(|_| invalid("segment is not UTF-8"))?;
            check_segment(&decoded).map_err(invalid)?;
            out.push('/');
            out.push_str(&decoded);
        }
        Ok(ResourcePath(out))
    }

    /// Parses a link target, dropping a `#/json/pointer` fragment (`.../Thermal#/Fans/0` names
    /// the `Thermal` resource).
    ///
    /// # Errors
    /// As [`ResourcePath::parse`].
    pub fn parse_link(raw: &str) -> Result<Self> {
        Self::parse(raw.split('#').next().unwrap_or(raw))
    }

    /// The path as a string, e.g. `/redfish/v1/Systems/1`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/redfish/v1` itself.
    pub fn is_root(&self) -> bool {
        self.0.len() == REDFISH_ROOT.len()
    }

    /// Segments below the root (`["Systems", "1"]`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[REDFISH_ROOT.len()..].split('/').filter(|s| !s.is_empty())
    }

    /// Number of segments below the root.
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The last segment, or `None` at the root.
    pub fn last(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// The parent path, or `None` at the root.
    pub fn parent(&self) -> Option<ResourcePath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/')?;
        Some(ResourcePath(self.0[..cut].to_string()))
    }

    /// A direct child.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if `segment` is not a safe single segment.
    pub fn child(&self, segment: &str) -> Result<ResourcePath> {
        check_segment(segment).map_err(|reason| Error::InvalidPath {
            path: format!("{}/{}", self.0, segment.chars().take(200).collect::<String>()),
            reason: reason.to_string(),
        })?;
        Ok(ResourcePath(format!("{}/{}", self.0, segment)))
    }

    /// Bounds, in path order, around `self` and every path below it: `self` (included) and
    /// the first string after all of `self/...` (excluded; `'0'` follows `'/'`). Paths such as
    /// `self-x` sort in between too: a range scan filters with [`ResourcePath::is_within`].
    pub(crate) fn subtree_bounds(&self) -> (ResourcePath, ResourcePath) {
        (self.clone(), ResourcePath(format!("{}0", self.0)))
    }

    /// A value that sorts before every path: the other half of a range bound over pairs.
    pub(crate) fn least() -> ResourcePath {
        ResourcePath(String::new())
    }

    /// Whether `self` is `other` or lies below it, on segment boundaries (`/Systems/10` is not
    /// below `/Systems/1`).
    pub fn is_within(&self, other: &ResourcePath) -> bool {
        self.0 == other.0 || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

/// Why a decoded segment is unsafe, if it is.
fn check_segment(seg: &str) -> std::result::Result<(), &'static str> {
    if seg.is_empty() {
        Err("empty segment")
    } else if seg.starts_with('.') {
        Err("segments may not start with a dot")
    } else if seg.len() > MAX_SEGMENT {
        Err("segment too long")
    } else if seg.chars().any(|c| c == '/' || c == '\\' || c == '#' || c == '?' || c.is_control()) {
        Err("segment contains a slash, backslash, '#', '?' or a control character")
    } else {
        Ok(())
    }
}

impl fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Consistent with `Eq`, `Ord` and `Hash`, which all come from the one string field; lets
/// ordered maps keyed by paths answer range queries by `&str`.
impl std::borrow::Borrow<str> for ResourcePath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ResourcePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both slash forms and doubled slashes name the same resource.
    #[test]
    fn normalizes_slashes() {
        for raw in ["/redfish/v1", "/redfish/v1/", "//redfish/v1//"] {
            assert_eq!(ResourcePath::parse(raw).unwrap(), ResourcePath::root());
        }
        let p = ResourcePath::parse("//redfish/v1/Systems/1/").unwrap();
        assert_eq!(p.as_str(), "/redfish/v1/Systems/1");
        assert_eq!(p.parent().unwrap().as_str(), "/redfish/v1/Systems");
        assert_eq!(p.last(), Some("1"));
        assert_eq!(p.depth(), 2);
    }

    /// Escape attempts are refused whatever their encoding.
    #[test]
    fn refuses_escapes() {
        for raw in [
            "/redfish/v1/../x",
            "/redfish/v1/%2e%2e/x",
            "/redfish/v1/%2E%2E",
            "/redfish/v1/a%2fb",
            "/redfish/v1/a%5cb",
            "/redfish/v1/a%00b",
            "/redfish/v1/.sunfish",
            "/redfish/v2/x",
            "/other",
            "/redfish/v1/a#b",
        ] {
            assert!(ResourcePath::parse(raw).is_err(), "{raw} accepted");
        }
    }

    /// Subtree tests respect segment boundaries.
    #[test]
    fn within_is_segment_aware() {
        let a = ResourcePath::parse("/redfish/v1/Systems/1").unwrap();
        let b = ResourcePath::parse("/redfish/v1/Systems/10").unwrap();
        let c = ResourcePath::parse("/redfish/v1/Systems/1/Bios").unwrap();
        assert!(!b.is_within(&a));
        assert!(c.is_within(&a));
        assert!(a.is_within(&a));
    }

    /// Links may carry a JSON-pointer fragment naming a part of a resource.
    #[test]
    fn link_fragments() {
        let p = ResourcePath::parse_link("/redfish/v1/Chassis/1/Thermal#/Fans/0").unwrap();
        assert_eq!(p.as_str(), "/redfish/v1/Chassis/1/Thermal");
    }
}
