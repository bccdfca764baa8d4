//! Single keys from the environment, the way containers and Kubernetes pass configuration:
//! `OIDC_GATEWAY__SERVER__MAX_CONNECTIONS=5000` sets `[server] max_connections`, and
//! `OIDC_GATEWAY__PROVIDERS__0__CLIENT_ID=gateway` the first `[[providers]]` entry's
//! `client_id`. Names after the prefix are the keys, upper-cased, joined by `__`; a number picks
//! an entry of an array of tables. The value is read as a TOML value when it is one (`5000`,
//! `true`, `["a", "b"]`, `"quoted"`), else as a string.
//!
//! The overrides are written into the file's text (`toml_edit` keeps everything else as it
//! was), which is then checked like a file: the same errors, and `check --print-effective`
//! shows the result with secrets masked.

use toml_edit::{DocumentMut, Item, Table, Value};

/// The prefix of an override's name.
pub const PREFIX: &str = "OIDC_GATEWAY__";

/// One override applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The environment variable.
    pub var: String,
    /// The key it set, as errors name keys (`providers[0].client_secret`).
    pub key: String,
}

/// `source` with every `OIDC_GATEWAY__*` variable of `vars` written in, and what was applied;
/// or why an override cannot apply (naming its variable). Unchanged without overrides.
pub fn apply(
    source: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(String, Vec<Override>), String> {
    let mut wanted: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    if wanted.is_empty() {
        return Ok((source.to_owned(), Vec::new()));
    }
    // A stable order, so the result does not depend on the environment's.
    wanted.sort();
    let mut doc: DocumentMut = source
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("invalid TOML: {}", e.message().trim()))?;
    let mut applied = Vec::new();
    for (var, text) in wanted {
        let path: Vec<String> = var[PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "{var}: an empty key (a name like OIDC_GATEWAY__SERVER__MAX_CONNECTIONS is expected)"
            ));
        }
        let key =
            set(doc.as_table_mut(), &path, value_of(&text)).map_err(|e| format!("{var}: {e}"))?;
        applied.push(Override { var, key });
    }
    Ok((doc.to_string(), applied))
}

/// `text` as a TOML value, or as a string when it is not one.
fn value_of(text: &str) -> Value {
    format!("v = {text}")
        .parse::<DocumentMut>()
        .ok()
        .and_then(|d| d.get("v").and_then(|i| i.as_value().cloned()))
        .unwrap_or_else(|| Value::from(text))
}

/// Sets `value` at `path` under `table`, creating tables on the way; the key as errors name it.
fn set(table: &mut Table, path: &[String], value: Value) -> Result<String, String> {
    let (first, rest) = path.split_first().ok_or("an empty key")?;
    if rest.is_empty() {
        match table.get_mut(first) {
            Some(Item::Value(old)) => {
                // Keep the line's own formatting (a trailing comment, say) around the new value.
                let decor = old.decor().clone();
                *old = value;
                *old.decor_mut() = decor;
            }
            Some(Item::None) | None => {
                table.insert(first, Item::Value(value));
            }
            Some(_) => return Err(format!("{first} is a table, not a value")),
        }
        return Ok(first.clone());
    }
    if !table.contains_key(first) {
        let mut t = Table::new();
        t.set_implicit(true);
        table.insert(first, Item::Table(t));
    }
    match table.get_mut(first) {
        Some(Item::Table(t)) => Ok(format!("{first}.{}", set(t, rest, value)?)),
        Some(Item::ArrayOfTables(list)) => {
            let (index, rest) = rest.split_first().ok_or("an index is needed")?;
            let i: usize = index
                .parse()
                .map_err(|_| format!("{first} is a list: give an index, as in {first}__0"))?;
            let count = match list.len() {
                1 => format!("there is 1 [[{first}]] entry"),
                n => format!("there are {n} [[{first}]] entries"),
            };
            let entry = list
                .get_mut(i)
                .ok_or_else(|| format!("{count}, so no index {i}"))?;
            if rest.is_empty() {
                return Err(format!("{first}[{i}] is a table: name one of its keys"));
            }
            Ok(format!("{first}[{i}].{}", set(entry, rest, value)?))
        }
        Some(Item::Value(Value::InlineTable(_))) => Err(format!(
            "{first} is an inline table in the file; write it as a [{first}] table to override its keys"
        )),
        _ => Err(format!("{first} is a value, not a table")),
    }
}

/// Keys whose values are secrets, and `check --print-effective` masks.
const SECRET_KEYS: &[&str] = &["secrets", "client_secret", "password", "http_proxy"];

/// The configuration text with every secret value masked (`${VAR}` references stay: they name
/// a variable, not a secret), and the password of any URL.
pub fn masked(source: &str) -> String {
    let Ok(mut doc) = source.parse::<DocumentMut>() else {
        return source.to_owned();
    };
    mask_table(doc.as_table_mut());
    doc.to_string()
}

fn mask_table(t: &mut Table) {
    for (k, item) in t.iter_mut() {
        let secret = SECRET_KEYS.contains(&k.get());
        match item {
            Item::Table(inner) => mask_table(inner),
            Item::ArrayOfTables(list) => list.iter_mut().for_each(mask_table),
            Item::Value(v) => mask_value(v, secret),
            Item::None => {}
        }
    }
}

fn mask_value(v: &mut Value, secret: bool) {
    match v {
        Value::String(s) => {
            let text = s.value();
            let replacement = if secret && !text.starts_with("${") {
                Some("***".to_owned())
            } else {
                url_without_password(text)
            };
            if let Some(r) = replacement {
                let decor = v.decor().clone();
                *v = Value::from(r);
                *v.decor_mut() = decor;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|e| mask_value(e, secret)),
        Value::InlineTable(t) => {
            for (k, e) in t.iter_mut() {
                let secret = SECRET_KEYS.contains(&k.get());
                mask_value(e, secret);
            }
        }
        _ => {}
    }
}

/// `scheme://user:***@host...` when `text` is a URL with a password.
fn url_without_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:***@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const FILE: &str = "[server]\nlisten = [\"127.0.0.1:8080\"] # here\n\n[[providers]]\nname = \"a\"\n\n[[providers]]\nname = \"b\"\n";

    #[test]
    fn overrides_replace_insert_and_index() {
        let (text, applied) = apply(
            FILE,
            vars(&[
                ("OIDC_GATEWAY__SERVER__LISTEN", "[\"0.0.0.0:80\"]"),
                ("OIDC_GATEWAY__SERVER__MAX_CONNECTIONS", "5"),
                ("OIDC_GATEWAY__PROVIDERS__1__CLIENT_ID", "gw-b"),
                ("OIDC_GATEWAY__SESSION__SECRETS", "[\"${S}\"]"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert!(text.contains("listen = [\"0.0.0.0:80\"] # here"), "{text}");
        assert!(text.contains("max_connections = 5"), "{text}");
        assert!(
            text.contains("name = \"b\"\nclient_id = \"gw-b\""),
            "{text}"
        );
        assert!(text.contains("[session]\nsecrets = [\"${S}\"]"), "{text}");
        let keys: Vec<&str> = applied.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "providers[1].client_id",
                "server.listen",
                "server.max_connections",
                "session.secrets"
            ]
        );
        assert_eq!(
            apply(FILE, vars(&[])).unwrap(),
            (FILE.to_owned(), Vec::new())
        );
    }

    #[test]
    fn an_override_that_cannot_apply_names_its_variable() {
        for (var, expected) in [
            (
                "OIDC_GATEWAY__PROVIDERS__2__NAME",
                "there are 2 [[providers]] entries",
            ),
            ("OIDC_GATEWAY__PROVIDERS__NAME", "give an index"),
            ("OIDC_GATEWAY__SERVER", "is a table"),
            ("OIDC_GATEWAY__SERVER____X", "an empty key"),
        ] {
            let e = apply(FILE, vars(&[(var, "x")])).unwrap_err();
            assert!(e.starts_with(var) && e.contains(expected), "{e}");
        }
    }

    #[test]
    fn secrets_are_masked_and_references_kept() {
        let text = "[session]\nsecrets = [\"literal-secret\", \"${S}\"]\n[[providers]]\nclient_secret = \"abc\"\n[redis]\nurl = \"redis://u:pw@h:6379\"\n";
        let m = masked(text);
        assert!(m.contains("secrets = [\"***\", \"${S}\"]"), "{m}");
        assert!(m.contains("client_secret = \"***\""), "{m}");
        assert!(m.contains("url = \"redis://u:***@h:6379\""), "{m}");
        assert!(!m.contains("literal-secret") && !m.contains("pw@"), "{m}");
    }
}
