//! Claim rules: `scopes_required`, `groups_required`, `roles_required`, `audience_required`.
//! Kong's semantics: the entries are alternatives (any one suffices); the space-separated words
//! of an entry must all be present. Claims are found by path (`["realm_access", "roles"]`);
//! a string claim counts as space-separated values (as `scope` is), an array as its elements.

use crate::claims::lookup;
use crate::config::{Requirement, Rules};
use serde_json::{Map, Value};

/// Whether `value` (a string of words or an array) contains `wanted`.
fn contains(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s.split_whitespace().any(|w| w == wanted),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Whether `claims` meet `req` (always true when nothing is required).
pub fn satisfied(req: &Requirement, claims: &Map<String, Value>) -> bool {
    if req.any_of.is_empty() {
        return true;
    }
    let Some(value) = lookup(claims, &req.claim) else {
        return false;
    };
    req.any_of
        .iter()
        // An empty alternative would pass `.all()`: configuration refuses one, and it never
        // counts here either.
        .any(|all| !all.is_empty() && all.iter().all(|w| contains(value, w)))
}

/// The first rule `claims` fail, by its config name.
pub fn first_failure(
    rules: &Rules,
    claims: &Map<String, Value>,
    check_audience: bool,
) -> Option<&'static str> {
    if !satisfied(&rules.scopes, claims) {
        return Some("scopes_required");
    }
    if !satisfied(&rules.groups, claims) {
        return Some("groups_required");
    }
    if !satisfied(&rules.roles, claims) {
        return Some("roles_required");
    }
    if check_audience && !satisfied(&rules.audience, claims) {
        return Some("audience_required");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(claim: &[&str], any_of: &[&str]) -> Requirement {
        Requirement {
            claim: claim.iter().map(|s| (*s).to_owned()).collect(),
            any_of: any_of
                .iter()
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .collect(),
        }
    }

    fn claims() -> Map<String, Value> {
        serde_json::json!({
            "scope": "orders:read profile",
            "groups": ["admins", "ops"],
            "realm_access": {"roles": ["orders:read", "billing"]}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn entries_are_alternatives_and_words_must_all_match() {
        let c = claims();
        assert!(satisfied(&req(&["scope"], &["orders:read"]), &c));
        assert!(satisfied(
            &req(&["scope"], &["orders:write", "orders:read profile"]),
            &c
        ));
        assert!(!satisfied(
            &req(&["scope"], &["orders:read orders:write"]),
            &c
        ));
        assert!(satisfied(&req(&["groups"], &["admins", "ops oncall"]), &c));
        assert!(!satisfied(&req(&["groups"], &["ops oncall"]), &c));
        assert!(satisfied(&req(&["groups"], &[]), &c), "nothing required");
    }

    #[test]
    fn nested_claims_are_found_by_path() {
        let c = claims();
        assert!(satisfied(
            &req(&["realm_access", "roles"], &["billing"]),
            &c
        ));
        assert!(!satisfied(&req(&["realm_access", "roles"], &["admin"]), &c));
        assert!(!satisfied(&req(&["missing", "roles"], &["billing"]), &c));
    }

    #[test]
    fn the_first_failing_rule_is_named() {
        let mut rules = Rules {
            groups: req(&["groups"], &["nobody"]),
            ..Default::default()
        };
        assert_eq!(
            first_failure(&rules, &claims(), true),
            Some("groups_required")
        );
        rules.groups = req(&["groups"], &["ops"]);
        assert_eq!(first_failure(&rules, &claims(), true), None);
    }
}
