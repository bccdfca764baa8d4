//! "Did you mean ...?" for unknown keys: the known keys at the same place in the file, taken
//! from the file format's own types (so the list can never drift from what is accepted), and
//! the closest by edit distance.

use super::locate::Seg;
use super::raw::*;
use serde_aux::serde_introspection::serde_introspect;

/// The keys the file format accepts at `path`'s parent (array indices skipped).
fn known_at(parent: &[&str]) -> &'static [&'static str] {
    match parent {
        [] => serde_introspect::<RawConfig>(),
        ["server"] => serde_introspect::<RawServer>(),
        ["server", "tls"] => serde_introspect::<RawTlsListener>(),
        ["metrics"] => serde_introspect::<RawMetrics>(),
        ["log"] => serde_introspect::<RawLog>(),
        ["upstreams"] => serde_introspect::<RawUpstream>(),
        ["upstreams", "health_check"] => serde_introspect::<RawHealthCheck>(),
        ["routes"] => serde_introspect::<RawRoute>(),
        ["routes", "auth"] => serde_introspect::<RawAuthTable>(),
        ["routes", "token_exchange"] => serde_introspect::<RawTokenExchange>(),
        ["providers"] => serde_introspect::<RawProvider>(),
        ["session"] => serde_introspect::<RawSession>(),
        ["consumers"] => serde_introspect::<RawConsumer>(),
        ["forward_auth"] => serde_introspect::<RawForwardAuth>(),
        ["identity_assertion"] => serde_introspect::<RawIdentityAssertion>(),
        ["tracing"] => serde_introspect::<RawTracing>(),
        ["forward_auth", "auth"] => serde_introspect::<RawAuthTable>(),
        _ => &[],
    }
}

/// The message for an unknown key at `path`: with the closest known key, when one is close.
pub(crate) fn unknown_key(path: &[Seg]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    let Some((unknown, parent)) = keys.split_last() else {
        return "unknown key".into();
    };
    match closest(unknown, known_at(parent)) {
        Some(known) => format!("unknown key; did you mean `{known}`?"),
        None => "unknown key".into(),
    }
}

/// The known word nearest to `word`, if near enough to be a typo (a third of its letters).
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.len() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<Seg> {
        p.iter()
            .map(|s| match s.parse() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key((*s).to_owned()),
            })
            .collect()
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        assert_eq!(
            unknown_key(&path(&["session", "idle_timeout"])),
            "unknown key; did you mean `idling_timeout`?"
        );
        assert_eq!(
            unknown_key(&path(&["route"])),
            "unknown key; did you mean `routes`?"
        );
        assert_eq!(
            unknown_key(&path(&["routes", "0", "auth", "scope_required"])),
            "unknown key; did you mean `scopes_required`?"
        );
        assert_eq!(
            unknown_key(&path(&["upstreams", "1", "conect_timeout"])),
            "unknown key; did you mean `connect_timeout`?"
        );
        assert_eq!(unknown_key(&path(&["server", "colour"])), "unknown key");
    }
}
