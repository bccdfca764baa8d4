//! Kong's consumer model: a token claim names a configured consumer (by username, custom id or
//! id), whose identity goes upstream in Kong's headers; or, without a mapping, a pseudo-consumer
//! (`credential_claim`). Client-sent copies of these headers are always removed first.

use crate::claims::{lookup, to_text};
use crate::config::{Consumer, ConsumerField, ConsumerId, ConsumerMapping};
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// `X-Consumer-ID`
pub const CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
/// `X-Consumer-Custom-ID`
pub const CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
/// `X-Consumer-Username`
pub const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
/// `X-Credential-Identifier`
pub const CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
/// `X-Anonymous-Consumer`
pub const ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");
/// `X-Authenticated-Groups`
pub const AUTHENTICATED_GROUPS: HeaderName = HeaderName::from_static("x-authenticated-groups");

/// The consumer the claims name, if any.
pub fn find<'c>(
    consumers: &'c [Consumer],
    mapping: &ConsumerMapping,
    claims: &Map<String, Value>,
) -> Option<(ConsumerId, &'c Consumer)> {
    let value = to_text(lookup(claims, &mapping.claim)?)?;
    mapping
        .by
        .iter()
        .find_map(|field| {
            consumers.iter().enumerate().find(|(_, c)| match field {
                ConsumerField::Id => c.id == value,
                ConsumerField::Username => c.username.as_deref() == Some(value.as_str()),
                ConsumerField::CustomId => c.custom_id.as_deref() == Some(value.as_str()),
            })
        })
        .map(|(i, c)| (ConsumerId(i), c))
}

/// Whether the consumer is in one of `groups` (always, when none are required).
pub fn in_groups(consumer: &Consumer, groups: &[String]) -> bool {
    groups.is_empty() || groups.iter().any(|g| consumer.groups.contains(g))
}

/// Kong's upstream headers for a (possibly anonymous) consumer and credential.
pub fn headers(
    consumer: Option<&Consumer>,
    anonymous: bool,
    credential: Option<String>,
    groups: Option<String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.push((name, v));
        }
    };
    if let Some(c) = consumer {
        push(CONSUMER_ID, &c.id);
        if let Some(v) = &c.custom_id {
            push(CONSUMER_CUSTOM_ID, v);
        }
        if let Some(v) = &c.username {
            push(CONSUMER_USERNAME, v);
        }
    }
    if anonymous {
        push(ANONYMOUS_CONSUMER, "true");
    }
    if let Some(v) = credential {
        push(CREDENTIAL_IDENTIFIER, &v);
    }
    if let Some(v) = groups {
        push(AUTHENTICATED_GROUPS, &v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumers() -> Vec<Consumer> {
        vec![
            Consumer {
                id: "1".into(),
                username: Some("Yoda".into()),
                custom_id: Some("e563".into()),
                groups: vec!["jedi".into()],
            },
            Consumer {
                id: "2".into(),
                username: Some("guest".into()),
                custom_id: None,
                groups: vec![],
            },
        ]
    }

    fn mapping(by: Vec<ConsumerField>) -> ConsumerMapping {
        ConsumerMapping {
            claim: vec!["sub".into()],
            by,
            optional: false,
            groups_required: vec![],
        }
    }

    #[test]
    fn maps_by_username_or_custom_id_in_order() {
        let c = consumers();
        let by_name = serde_json::json!({"sub": "Yoda"})
            .as_object()
            .unwrap()
            .clone();
        let by_custom = serde_json::json!({"sub": "e563"})
            .as_object()
            .unwrap()
            .clone();
        let both = mapping(vec![ConsumerField::Username, ConsumerField::CustomId]);
        assert_eq!(find(&c, &both, &by_name).map(|f| f.0), Some(ConsumerId(0)));
        assert_eq!(
            find(&c, &both, &by_custom).map(|f| f.0),
            Some(ConsumerId(0))
        );
        assert_eq!(
            find(&c, &mapping(vec![ConsumerField::Username]), &by_custom),
            None
        );
        assert!(in_groups(&c[0], &["jedi".into()]));
        assert!(!in_groups(&c[1], &["jedi".into()]));
    }

    #[test]
    fn kong_headers() {
        let c = consumers();
        let h = headers(Some(&c[0]), false, Some("Yoda".into()), Some("a,b".into()));
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "x-consumer-id",
                "x-consumer-custom-id",
                "x-consumer-username",
                "x-credential-identifier",
                "x-authenticated-groups"
            ]
        );
        let anon = headers(Some(&c[1]), true, None, None);
        assert!(
            anon.iter()
                .any(|(n, v)| *n == ANONYMOUS_CONSUMER && v == "true")
        );
    }
}
