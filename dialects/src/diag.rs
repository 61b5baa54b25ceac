//! Source locations and diagnostics reported against them.

use std::fmt;

/// A source location: `file:line:col` of an op in a `.mlir` file, or of the Rust call that
/// built it through the Graph API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl Location {
    /// A location at `file:line:col`.
    pub fn new(file: impl Into<String>, line: u32, col: u32) -> Self {
        Location { file: file.into(), line, col }
    }

    /// The location of the caller of a `#[track_caller]` function.
    #[track_caller]
    pub fn caller() -> Self {
        let l = std::panic::Location::caller();
        Location::new(l.file(), l.line(), l.column())
    }

    /// Whether this location is unknown.
    pub fn is_unknown(&self) -> bool {
        self.file.is_empty()
    }

    /// Parses MLIR's printed form, `loc("file.mlir":3:8)`; anything else is unknown.
    pub fn from_mlir(printed: &str) -> Self {
        // Fused or call-site locations print with nesting; the first file location wins.
        let Some(start) = printed.find('"') else { return Location::default() };
        let rest = &printed[start + 1..];
        let Some(end) = rest.find('"') else { return Location::default() };
        let file = &rest[..end];
        let mut nums = rest[end + 1..]
            .trim_start_matches(':')
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        let line = nums.next().unwrap_or(0);
        let col = nums.next().unwrap_or(0);
        Location::new(file, line, col)
    }

    /// The MLIR spelling, `loc("file":line:col)`, or `loc(unknown)`.
    pub fn to_mlir(&self) -> String {
        if self.is_unknown() {
            "loc(unknown)".into()
        } else {
            format!("loc({:?}:{}:{})", self.file, self.line, self.col)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unknown() {
            f.write_str("<unknown>")
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// An error at a location, printed like a compiler diagnostic: `file:line:col: error: msg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: error: {message}")]
pub struct Diagnostic {
    pub loc: Location,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `loc`.
    pub fn new(loc: &Location, message: impl Into<String>) -> Self {
        Diagnostic { loc: loc.clone(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mlir_locations() {
        let l = Location::from_mlir(r#"loc("examples/a.mlir":12:7)"#);
        assert_eq!(l, Location::new("examples/a.mlir", 12, 7));
        assert_eq!(l.to_string(), "examples/a.mlir:12:7");
        assert!(Location::from_mlir("loc(unknown)").is_unknown());
    }
}
