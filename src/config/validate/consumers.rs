//! `[[consumers]]`, Kong-style.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use toml::Spanned;

impl Builder<'_> {
    pub(super) fn consumers(&mut self, raw: &[Spanned<RawConsumer>]) -> Vec<Consumer> {
        let mut out: Vec<Consumer> = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let key = format!("consumers[{i}]");
            let r = c.get_ref();
            let username = r.username.as_ref().map(|u| u.get_ref().clone());
            let custom_id = r.custom_id.as_ref().map(|u| u.get_ref().clone());
            if username.is_none() && custom_id.is_none() {
                self.err(c.span(), &key, "a consumer needs a username or a custom_id");
                continue;
            }
            let id = match &r.id {
                Some(id) => id.get_ref().clone(),
                None => derived_uuid(
                    username
                        .as_deref()
                        .or(custom_id.as_deref())
                        .unwrap_or_default(),
                ),
            };
            for (field, value, span) in [
                (
                    "id",
                    Some(&id),
                    r.id.as_ref().map_or(c.span(), |x| x.span()),
                ),
                (
                    "username",
                    username.as_ref(),
                    r.username.as_ref().map_or(c.span(), |x| x.span()),
                ),
                (
                    "custom_id",
                    custom_id.as_ref(),
                    r.custom_id.as_ref().map_or(c.span(), |x| x.span()),
                ),
            ] {
                let Some(value) = value else { continue };
                let clash = out.iter().any(|o| match field {
                    "id" => o.id == *value,
                    "username" => o.username.as_ref() == Some(value),
                    _ => o.custom_id.as_ref() == Some(value),
                });
                if clash {
                    self.err(
                        span,
                        format!("{key}.{field}"),
                        format!("another consumer already has {field} {value:?}"),
                    );
                }
            }
            out.push(Consumer {
                id,
                username,
                custom_id,
                groups: self
                    .words(&Some(r.groups.clone()), &format!("consumers[{i}].groups"))
                    .unwrap_or_default(),
            });
        }
        out
    }
}

/// A stable UUID-shaped consumer id derived from a name (Kong consumers have UUID ids).
fn derived_uuid(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("oidc-gateway consumer {name}").as_bytes());
    format!(
        "{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        u16::from_be_bytes([h[4], h[5]]),
        u16::from_be_bytes([h[6], h[7]]) & 0x0fff,
        (u16::from_be_bytes([h[8], h[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, h[10], h[11], h[12], h[13], h[14], h[15]])
    )
}
