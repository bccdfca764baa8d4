//! Groups overage (Entra ID): past a size, an ID token carries no `groups` but
//! `_claim_names.groups`, naming a source in `_claim_sources`. The gateway never calls the source
//! the token names (that would send the user's access token wherever a token says); a sign-in
//! or refresh gets the groups from the provider's userinfo endpoint or from the URL the operator
//! configured (`groups_source`), with the user's access token.

use super::provider::{ProviderHandle, error_chain};
use crate::config::GroupsSource;
use crate::metrics;
use serde_json::{Map, Value};
use std::time::Instant;

/// Most pages of groups followed (Graph gives 100 per page by default).
const MAX_PAGES: usize = 50;

/// Whether `claims` say the user's groups are somewhere else.
pub fn overage(claims: &Map<String, Value>) -> bool {
    !claims.contains_key("groups")
        && claims
            .get("_claim_names")
            .and_then(|n| n.get("groups"))
            .is_some()
}

/// Fills in the groups of a sign-in or refresh whose ID token had an `overage`, as the
/// provider's `groups_source` says; `identity` has userinfo's claims merged in already (and
/// keeps any groups they brought). Without `groups_source`, the session has no groups, and the
/// log says why.
pub async fn resolve(
    handle: &ProviderHandle,
    access_token: &str,
    overage: bool,
    identity: &mut Map<String, Value>,
) -> Result<(), String> {
    if !overage || identity.contains_key("groups") {
        return Ok(());
    }
    let cfg = &handle.config;
    let groups = match &cfg.groups_source {
        None => {
            tracing::warn!(
                provider = %cfg.name,
                "the ID token says the user's groups are elsewhere (_claim_names, an Entra ID groups overage) and groups_source is not set: the session has no groups"
            );
            return Ok(());
        }
        Some(GroupsSource::Userinfo) => {
            return Err("the userinfo endpoint has no groups for the user either".into());
        }
        Some(GroupsSource::Url(url)) => fetch(handle, url, access_token).await?,
    };
    identity.insert("groups".into(), Value::Array(groups));
    Ok(())
}

/// Every page of groups at `url`, following `@odata.nextLink` on the same origin only.
async fn fetch(
    handle: &ProviderHandle,
    url: &str,
    access_token: &str,
) -> Result<Vec<Value>, String> {
    let home = origin(url).ok_or_else(|| format!("groups_source {url:?} is not a URL"))?;
    let mut groups = Vec::new();
    let mut next = Some(url.to_owned());
    for _ in 0..MAX_PAGES {
        let Some(page) = next.take() else {
            return Ok(groups);
        };
        if origin(&page).as_deref() != Some(home.as_str()) {
            return Err(format!(
                "the groups source links to another origin ({page}); not followed"
            ));
        }
        let req = http::Request::get(&page)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {access_token}"),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let resp = handle.http.send(req).await;
        metrics::idp_request(&handle.config.name, "groups", start.elapsed());
        let resp = resp.map_err(|e| format!("the groups source failed: {}", error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("the groups source answered {}", resp.status()));
        }
        let (found, link) = read_page(resp.body())?;
        groups.extend(found);
        next = link;
    }
    Err(format!("the groups source has more than {MAX_PAGES} pages"))
}

/// The groups in one answer (`{"groups": [...]}`, or Graph's `{"value": [...]}` of ids or
/// directory objects), and the link to the next page.
fn read_page(body: &[u8]) -> Result<(Vec<Value>, Option<String>), String> {
    let page: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| "the groups source did not answer a JSON object".to_owned())?;
    let items = match (page.get("groups"), page.get("value")) {
        (Some(Value::Array(g)), _) | (None, Some(Value::Array(g))) => g,
        _ => return Err("the groups source's answer has no groups (or value) list".into()),
    };
    let groups = items
        .iter()
        .filter_map(|g| match g {
            Value::String(_) => Some(g.clone()),
            Value::Object(o) => o.get("id").filter(|id| id.is_string()).cloned(),
            _ => None,
        })
        .collect();
    let next = page
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((groups, next))
}

/// `scheme://host:port` of `url`.
fn origin(url: &str) -> Option<String> {
    let u = openidconnect::url::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_overage_is_a_groups_source_and_no_groups() {
        let names = json!({"_claim_names": {"groups": "src1"},
                           "_claim_sources": {"src1": {"endpoint": "https://graph.example/x"}}});
        assert!(overage(&map(names.clone())));
        let mut with_groups = map(names);
        with_groups.insert("groups".into(), json!(["a"]));
        assert!(!overage(&with_groups));
        assert!(!overage(&map(json!({"_claim_names": {"roles": "src1"}}))));
    }

    #[test]
    fn pages_are_read_in_both_shapes() {
        let (g, next) = read_page(br#"{"groups": ["a", "b"]}"#).unwrap();
        assert_eq!(g, [json!("a"), json!("b")]);
        assert_eq!(next, None);
        let (g, next) = read_page(
            br##"{"value": [{"@odata.type": "#microsoft.graph.group", "id": "g1"}, {"id": 7}, "g2"],
                "@odata.nextLink": "https://graph.example/next"}"##,
        )
        .unwrap();
        assert_eq!(g, [json!("g1"), json!("g2")]);
        assert_eq!(next.as_deref(), Some("https://graph.example/next"));
        assert!(read_page(b"[]").is_err());
        assert!(read_page(br#"{"other": 1}"#).is_err());
    }
}
