//! `allow_if`: a route's access policy as a CEL expression, compiled once at load.

use std::sync::Arc;

/// The variables an `allow_if` expression may read.
pub const VARIABLES: [&str; 4] = ["claims", "request", "consumer", "now"];

/// A compiled `allow_if` expression.
#[derive(Clone)]
pub struct Policy {
    /// The expression as written.
    pub source: String,
    /// The compiled program.
    pub program: Arc<cel_interpreter::Program>,
    /// Which of [`VARIABLES`] it reads: only those are built for each request.
    pub reads: [bool; 4],
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Policy").field(&self.source).finish()
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.source == other.source
    }
}

impl Eq for Policy {}

/// Why an expression does not compile: the message, and its (line, column) in the expression
/// when known (1-based).
#[derive(Debug)]
pub struct PolicyError {
    /// What is wrong.
    pub message: String,
    /// Where, in the expression.
    pub at: Option<(usize, usize)>,
}

impl Policy {
    /// Compiles `source`; every variable it reads must be one of [`VARIABLES`] (or bound by a
    /// macro such as `exists(g, ...)`).
    pub fn compile(source: &str) -> Result<Policy, PolicyError> {
        let program = cel_interpreter::Program::compile(source).map_err(|errs| {
            let first = errs.errors.first();
            PolicyError {
                message: first.map_or_else(|| errs.to_string(), |e| e.msg.clone()),
                at: first.map(|e| (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize)),
            }
        })?;
        let references = program.references();
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v) && !bound_by_macro(source, v))
            .collect();
        unknown.sort_unstable();
        if let Some(first) = unknown.first() {
            return Err(PolicyError {
                message: format!(
                    "unknown variable {first:?}: an expression can read {}",
                    VARIABLES.join(", ")
                ),
                at: source.find(first).map(|i| (1, i + 1)),
            });
        }
        let reads = VARIABLES.map(|v| references.has_variable(v));
        Ok(Policy {
            source: source.to_owned(),
            reads,
            program: Arc::new(program),
        })
    }
}

/// Whether `name` is the variable of a comprehension macro (`list.exists(name, ...)`), which
/// the parser reports among the references.
fn bound_by_macro(source: &str, name: &str) -> bool {
    ["exists", "all", "exists_one", "map", "filter"]
        .iter()
        .any(|m| {
            source.match_indices(&format!("{m}(")).any(|(i, pat)| {
                source[i + pat.len()..]
                    .trim_start()
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with(','))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_compile_and_unknown_variables_and_syntax_errors_are_located() {
        assert!(
            Policy::compile(
                r#"claims.email.endsWith("@example.com") && "admins" in claims.groups"#
            )
            .is_ok()
        );
        assert!(
            Policy::compile(
                r#"claims.groups.exists(g, g.startsWith("ops-")) && request.method == "GET""#
            )
            .is_ok()
        );
        let e = Policy::compile(r#"claims.email == user.email"#).unwrap_err();
        assert!(e.message.contains("\"user\""), "{e:?}");
        assert_eq!(e.at, Some((1, 17)));
        let e = Policy::compile(r#"claims.email.endsWith("#).unwrap_err();
        assert!(e.message.contains("Syntax error"), "{e:?}");
        assert_eq!(e.at, Some((1, 23)));
    }
}
