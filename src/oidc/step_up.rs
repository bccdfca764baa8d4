//! Step-up (OpenID Connect `acr_values` / `max_age`, RFC 9470): whether a credential's `acr`
//! and `auth_time` satisfy what a route asks. Routes check sessions and tokens with it; the
//! callback checks the ID token of a sign-in that asked for a step-up.

use crate::claims::ClaimMap;
use crate::config::StepUp;
use serde_json::Value;

/// Why a credential falls short of a route's step-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// Its `acr` is missing or not one of the route's `acr_values`.
    Acr,
    /// Its `auth_time` is missing or older than `max_age` (plus `leeway`).
    Age,
}

impl Shortfall {
    /// A short reason for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Shortfall::Acr => "acr_not_met",
            Shortfall::Age => "max_age_exceeded",
        }
    }
}

/// Where `claims` fall short of `step` at Unix time `now`, allowing `leeway` seconds of clock
/// difference with the provider; `None` when they satisfy it.
pub fn shortfall(step: &StepUp, claims: &ClaimMap, now: u64, leeway: u64) -> Option<Shortfall> {
    if !step.acr_values.is_empty() {
        let acr = claims.get("acr").and_then(Value::as_str);
        if !acr.is_some_and(|a| step.acr_values.iter().any(|v| v == a)) {
            return Some(Shortfall::Acr);
        }
    }
    if let Some(max_age) = step.max_age {
        // `auth_time` is a JSON number; some providers send it with a fraction.
        let auth_time = claims.get("auth_time").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        });
        let fresh = auth_time
            .is_some_and(|t| now.saturating_sub(t) <= max_age.as_secs().saturating_add(leeway));
        if !fresh {
            return Some(Shortfall::Age);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn claims(v: Value) -> ClaimMap {
        v.as_object().cloned().unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn acr_must_be_one_of_the_values_asked() {
        let step = StepUp {
            acr_values: vec!["urn:mfa".into(), "urn:hwk".into()],
            max_age: None,
            prompt_login: false,
        };
        assert_eq!(
            shortfall(&step, &claims(json!({"acr": "urn:hwk"})), NOW, 0),
            None
        );
        for c in [
            json!({"acr": "urn:pwd"}),
            json!({}),
            json!({"acr": ["urn:mfa"]}),
        ] {
            assert_eq!(shortfall(&step, &claims(c), NOW, 0), Some(Shortfall::Acr));
        }
    }

    #[test]
    fn auth_time_must_be_within_max_age_and_leeway() {
        let step = StepUp {
            acr_values: vec![],
            max_age: Some(Duration::from_secs(900)),
            prompt_login: false,
        };
        let at = |t: Value| shortfall(&step, &claims(json!({"auth_time": t})), NOW, 5);
        assert_eq!(at(json!(NOW - 900)), None);
        assert_eq!(at(json!(NOW - 905)), None, "within the leeway");
        assert_eq!(at(json!(NOW - 906)), Some(Shortfall::Age));
        assert_eq!(
            at(json!((NOW - 10) as f64 + 0.5)),
            None,
            "a fraction is read"
        );
        assert_eq!(
            at(json!(NOW + 30)),
            None,
            "a provider clock ahead is not a failure"
        );
        assert_eq!(
            at(json!("1800000000")),
            Some(Shortfall::Age),
            "not a number"
        );
        assert_eq!(
            shortfall(&step, &claims(json!({})), NOW, 5),
            Some(Shortfall::Age),
            "max_age without auth_time is not met"
        );
    }

    #[test]
    fn both_are_checked() {
        let step = StepUp {
            acr_values: vec!["urn:mfa".into()],
            max_age: Some(Duration::from_secs(60)),
            prompt_login: true,
        };
        let c = |acr: &str, t: u64| claims(json!({"acr": acr, "auth_time": t}));
        assert_eq!(shortfall(&step, &c("urn:mfa", NOW - 10), NOW, 0), None);
        assert_eq!(
            shortfall(&step, &c("urn:mfa", NOW - 61), NOW, 0),
            Some(Shortfall::Age)
        );
        assert_eq!(
            shortfall(&step, &c("urn:pwd", NOW - 10), NOW, 0),
            Some(Shortfall::Acr)
        );
    }
}
