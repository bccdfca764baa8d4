//! `allow_if`: a route's CEL policy, evaluated on every request after the rules and the consumer
//! mapping. Only `true` lets a request through: `false`, a value of another type, or an error
//! (a missing claim, a type mismatch) is a 403, and errors are counted.

use crate::config::{Consumer, Policy};
use serde_json::{Map, Value};

/// What a request looks like to a policy.
#[derive(serde::Serialize)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a str,
    /// The canonical path the route matched.
    pub path: &'a str,
    /// The query, without `?` (empty when none).
    pub query: &'a str,
    /// The host the client asked for.
    pub host: &'a str,
}

/// What a mapped consumer looks like to a policy.
#[derive(serde::Serialize)]
struct ConsumerView<'a> {
    id: &'a str,
    username: Option<&'a str>,
    custom_id: Option<&'a str>,
    groups: &'a [String],
}

impl<'a> ConsumerView<'a> {
    fn of(c: &'a Consumer) -> ConsumerView<'a> {
        ConsumerView {
            id: &c.id,
            username: c.username.as_deref(),
            custom_id: c.custom_id.as_deref(),
            groups: &c.groups,
        }
    }
}

/// `claims` as policies read them.
pub fn claims_value(claims: &Map<String, Value>) -> cel_interpreter::Value {
    // Serialized straight from the borrowed map; a claim set JSON holds always converts.
    cel_interpreter::to_value(claims).unwrap_or(cel_interpreter::Value::Null)
}

/// The policy's verdict: `Ok(allowed)`, or why it could not decide. `claims` comes from
/// [`claims_value`] (built once per session or token).
pub fn evaluate(
    policy: &Policy,
    claims: cel_interpreter::Value,
    request: &RequestView<'_>,
    consumer: Option<&Consumer>,
    now: u64,
) -> Result<bool, String> {
    fn value(v: impl serde::Serialize) -> Result<cel_interpreter::Value, String> {
        cel_interpreter::to_value(v).map_err(|e| e.to_string())
    }
    thread_local! {
        // The built-in functions, registered once per thread rather than per request.
        static ROOT: cel_interpreter::Context<'static> = cel_interpreter::Context::default();
    }
    // Only the variables the expression reads are built (`VARIABLES` order).
    let [claims_read, request_read, consumer_read, now_read] = policy.reads;
    ROOT.with(|root| {
        let mut ctx = root.new_inner_scope();
        if claims_read {
            ctx.add_variable_from_value("claims", claims);
        }
        if request_read {
            ctx.add_variable_from_value("request", value(request)?);
        }
        if consumer_read {
            ctx.add_variable_from_value("consumer", value(consumer.map(ConsumerView::of))?);
        }
        if now_read {
            ctx.add_variable_from_value("now", now);
        }
        match policy.program.execute(&ctx) {
            Ok(cel_interpreter::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    })
}

impl super::Authenticator {
    /// The route's `allow_if` (if any) for `id`'s request to `target` (canonical path and query): a 403
    /// unless it holds. `claims` are `id`'s.
    pub(super) fn check_policy(
        &self,
        spec: &crate::config::RouteAuth,
        id: &super::Identity,
        claims: &Map<String, Value>,
        req: &pingora::http::RequestHeader,
        target: &str,
        now: u64,
    ) -> Result<(), super::Denied> {
        let Some(policy) = &spec.allow_if else {
            return Ok(());
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let view = RequestView {
            method: req.method.as_str(),
            path,
            query,
            host: crate::http::headers::request_host(req),
        };
        let claims = match id.credential.policy_claims() {
            Some(kept) => (**kept.get_or_init(|| Box::new(claims_value(claims)))).clone(),
            None => claims_value(claims),
        };
        let consumer = id.consumer.and_then(|i| self.consumers.get(i.index()));
        match evaluate(policy, claims, &view, consumer, now) {
            Ok(true) => Ok(()),
            verdict => {
                if let Err(why) = &verdict {
                    crate::metrics::policy_error(&spec.realm);
                    tracing::info!(realm = %spec.realm, "allow_if could not decide, so the request is refused: {why}");
                }
                let token = matches!(id.credential, super::Credential::Token(_));
                Err(self.forbidden(
                    spec,
                    token,
                    "Your account does not meet this service's access rule.".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide(expr: &str, claims: Value) -> Result<bool, String> {
        let p = Policy::compile(expr).unwrap();
        let req = RequestView {
            method: "GET",
            path: "/admin/users",
            query: "page=2",
            host: "app.example.com",
        };
        evaluate(
            &p,
            claims_value(claims.as_object().unwrap()),
            &req,
            None,
            1_800_000_000,
        )
    }

    #[test]
    fn only_true_allows() {
        let alice = json!({"email": "alice@example.com", "groups": ["admins"]});
        let two = r#"claims.email.endsWith("@example.com") && "admins" in claims.groups"#;
        assert_eq!(decide(two, alice.clone()), Ok(true));
        assert_eq!(
            decide(two, json!({"email": "eve@evil.org", "groups": ["admins"]})),
            Ok(false)
        );
        assert_eq!(
            decide(
                r#"request.method == "GET" && request.path.startsWith("/admin/") && request.host == "app.example.com" && now > 0 && consumer == null"#,
                alice.clone()
            ),
            Ok(true)
        );
        // A missing claim, or a value that is not a boolean: no decision, so no entry.
        assert!(decide(two, json!({"groups": ["admins"]})).is_err());
        assert!(decide("claims.email", alice).is_err());
    }

    use crate::auth::rules;
    use crate::config::{EmailRule, Requirement};
    use proptest::prelude::*;

    const GROUPS: [&str; 3] = ["admins", "ops", "readers"];

    /// `groups` as the rule keys and CEL see it: absent, a list of names, or not a list.
    fn groups_claim() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            proptest::collection::vec(proptest::sample::select(&GROUPS[..]), 0..4)
                .prop_map(|g| Some(json!(g))),
            Just(Some(json!(7))),
        ]
    }

    /// `email` and `email_verified`: domains that look alike, empty local parts, no `@`.
    fn email_claims() -> impl Strategy<Value = (Option<Value>, Option<bool>)> {
        let local = proptest::sample::select(vec!["", "alice", "bob", "a.b"]);
        let domain = proptest::sample::select(vec![
            "example.com",
            "sub.example.com",
            "badexample.com",
            "example.org",
        ]);
        let email = prop_oneof![
            (local, any::<bool>(), domain).prop_map(|(l, at, d)| {
                Some(json!(format!("{l}{}{d}", if at { "@" } else { "" })))
            }),
            Just(None),
            Just(Some(json!(42))),
        ];
        (email, proptest::option::of(any::<bool>()))
    }

    /// `groups_required = alternatives` (Kong: any alternative; all words of one) in CEL.
    fn groups_in_cel(alternatives: &[Vec<&str>]) -> String {
        alternatives
            .iter()
            .map(|all| {
                let each: Vec<String> = all
                    .iter()
                    .map(|g| format!("{g:?} in claims.groups"))
                    .collect();
                format!("({})", each.join(" && "))
            })
            .collect::<Vec<_>>()
            .join(" || ")
    }

    /// `email_domains = ["example.com"], emails = ["bob@example.org"]` in CEL.
    const EMAILS_IN_CEL: &str = r#"(!has(claims.email_verified) || claims.email_verified != false) && (claims.email == "bob@example.org" || (claims.email.endsWith("@example.com") && !claims.email.startsWith("@")))"#;

    proptest! {
        /// For the simple rule keys, the CEL expression docs/policy.md gives as their
        /// translation decides the same way: a missing or mistyped claim fails both.
        #[test]
        fn simple_rules_and_their_cel_translation_decide_alike(
            groups in groups_claim(),
            (email, verified) in email_claims(),
            alternatives in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(&GROUPS[..]), 1..3),
                1..3,
            ),
        ) {
            let mut claims = serde_json::Map::new();
            if let Some(g) = groups {
                claims.insert("groups".into(), g);
            }
            if let Some(e) = email {
                claims.insert("email".into(), e);
            }
            if let Some(v) = verified {
                claims.insert("email_verified".into(), json!(v));
            }
            let allowed = |expr: &str| decide(expr, Value::Object(claims.clone())) == Ok(true);

            let rule = Requirement {
                claim: vec!["groups".into()],
                any_of: alternatives
                    .iter()
                    .map(|a| a.iter().map(|g| (*g).to_owned()).collect())
                    .collect(),
            };
            prop_assert_eq!(
                rules::satisfied(&rule, &claims),
                allowed(&groups_in_cel(&alternatives)),
                "groups_required on {:?}", claims
            );

            let emails = EmailRule {
                domains: vec!["example.com".into()],
                addresses: ["bob@example.org".to_owned()].into(),
            };
            prop_assert_eq!(
                rules::email_allowed(&emails, &claims),
                allowed(EMAILS_IN_CEL),
                "email_domains and emails on {:?}", claims
            );
        }
    }
}
