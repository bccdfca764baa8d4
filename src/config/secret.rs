//! Secrets in the configuration: written as `"${ENV_VAR}"` or read from a `*_file`, never
//! printed (the `Debug` form is redacted).

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Resolves an inline value: `"${NAME}"` reads the environment variable `NAME`; anything else
/// is taken literally.
pub(crate) fn resolve_inline(value: &str) -> Result<Secret, String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(name) if !name.is_empty() => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(_) => Err(format!("environment variable {name} is not set")),
        },
        _ => Ok(Secret(value.to_owned())),
    }
}

/// Reads a secret file; a trailing newline is not part of the secret.
pub(crate) fn read_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {path:?}: {e}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_resolve_and_debug_is_redacted() {
        // SAFETY: test-only variable name, set before it is read by this test alone.
        unsafe { std::env::set_var("OIDC_GW_TEST_SECRET", "s3cret") };
        let s = resolve_inline("${OIDC_GW_TEST_SECRET}").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(
            resolve_inline("${OIDC_GW_TEST_MISSING}")
                .unwrap_err()
                .contains("not set")
        );
        assert_eq!(resolve_inline("literal").unwrap().expose(), "literal");
    }
}
