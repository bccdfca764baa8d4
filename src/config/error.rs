//! Configuration errors that point at the file, line, column and key at fault.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem has no location (e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path, e.g. `upstreams[1].connect_timeout`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while a file is checked, turning byte offsets into lines and columns.
pub(crate) struct Collector<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Collector {
            file,
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn located(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => line_col(self.source, span.start),
            None => (0, 0),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: msg.into(),
        }
    }

    /// Records a problem at `span` (byte offsets into the source) for `key`.
    pub(crate) fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        let e = self.located(span, key, msg);
        self.errors.push(e);
    }

    /// Records something that works but is probably not what was meant.
    pub(crate) fn warn_at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        let w = self.located(span, key, msg);
        self.warnings.push(w);
    }

    /// The errors, if any (sorted by position); otherwise the warnings.
    pub(crate) fn finish(mut self) -> Result<Vec<ConfigError>, ConfigErrors> {
        let by_place = |e: &ConfigError| (e.line == 0, e.line, e.column);
        if self.errors.is_empty() {
            self.warnings.sort_by_key(by_place);
            return Ok(self.warnings);
        }
        self.errors.sort_by_key(by_place);
        Err(ConfigErrors(self.errors))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
    }

    #[test]
    fn errors_print_file_line_key_and_message() {
        let e = ConfigError {
            file: PathBuf::from("conf/x.toml"),
            line: 3,
            column: 7,
            key: "server.threads".into(),
            message: "expected a number".into(),
        };
        assert_eq!(
            e.to_string(),
            "conf/x.toml:3:7: server.threads: expected a number"
        );
    }
}
