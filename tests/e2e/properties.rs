//! Property tests of the parsers that see attacker-controlled input (security checklist: "fuzz
//! every parser"). Each property is an invariant the request path relies on, checked on
//! generated inputs built from the characters that make these parsers interesting.

use oidc_gateway::config::Secret;
use oidc_gateway::crypto::Sealer;
use oidc_gateway::http::path::{PathError, canonicalize};
use oidc_gateway::http::{cookies, redirect::same_origin_path};
use oidc_gateway::session::Token;
use oidc_gateway::session::chunks::{self as cookie, CHUNK_SIZE, Read};
use proptest::prelude::*;

/// Paths made of the pieces that matter: separators, dots, escapes, parameters, controls.
fn path_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(";".to_owned()),
        Just("%".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%25".to_owned()),
        Just("%00".to_owned()),
        Just("%41".to_owned()),
        Just("\\".to_owned()),
        Just("admin".to_owned()),
        "[a-z0-9~!$&'()*+,=:@ ?#\u{e9}-]{1,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

/// The part of a segment a server compares (servlet containers drop `;params`).
fn segment_name(seg: &str) -> &str {
    seg.split(';').next().unwrap_or("")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// A canonical path has one leading '/', no empty, "." or ".." segments (also not hidden
    /// behind ";params"), no controls, and is a fixed point: the upstream, reading it again,
    /// sees the path the gateway routed on.
    #[test]
    fn canonical_paths_are_clean_and_stable(raw in path_like()) {
        match canonicalize(&raw, false) {
            Ok(c) => {
                prop_assert!(c.starts_with('/'), "{raw:?} -> {c:?}");
                let segments: Vec<&str> = c[1..].split('/').collect();
                for (i, seg) in segments.iter().enumerate() {
                    let last = i + 1 == segments.len();
                    let name = segment_name(seg);
                    prop_assert!(
                        !(name.is_empty() && !(last && seg.is_empty())) && name != "." && name != "..",
                        "{raw:?} -> {c:?}: segment {seg:?}"
                    );
                }
                prop_assert!(!c.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'), "{raw:?} -> {c:?}");
                prop_assert!(!c.to_ascii_lowercase().contains("%2f"), "{raw:?} -> {c:?}");
                let again = canonicalize(c.as_ref(), false).map(|a| a.into_owned());
                prop_assert_eq!(again, Ok(c.to_string()), "not a fixed point: {:?}", raw);
            }
            Err(PathError::NotAbsolute) => prop_assert!(false, "{raw:?} starts with '/'"),
            Err(_) => {}
        }
    }

    /// Whatever the validator accepts, a browser resolves on the gateway's own origin.
    #[test]
    fn accepted_redirects_stay_on_the_origin(
        candidate in "[/\\\\.:@%2fF5cC\t\n \u{3000}a-z?#]{0,12}",
    ) {
        if let Some(p) = same_origin_path(&candidate) {
            let base = url::Url::parse("https://gw.example/some/page").unwrap();
            let resolved = base.join(p).map_err(|e| TestCaseError::fail(format!("{p:?}: {e}")))?;
            prop_assert_eq!(resolved.scheme(), "https", "{:?}", p);
            prop_assert_eq!(resolved.host_str(), Some("gw.example"), "{:?}", p);
            prop_assert_eq!(resolved.port(), None, "{:?}", p);
        }
    }

    /// Any Cookie header, however broken, parses without panicking into names and values that
    /// carry no separators.
    #[test]
    fn cookie_headers_never_break_the_parser(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = http::HeaderValue::from_bytes(&raw) else { return Ok(()) };
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, value);
        for (name, value) in cookies::all(&headers) {
            prop_assert!(!name.contains(';') && !value.contains(';'));
        }
        let _ = cookie::read(&headers, "oidc_session");
    }

    /// Sealed values open only unchanged, with the same associated data and a configured key;
    /// arbitrary input never panics.
    #[test]
    fn sealed_values_open_only_unchanged(
        plaintext in proptest::collection::vec(any::<u8>(), 0..200),
        flip in any::<prop::sample::Index>(),
        garbage in "[A-Za-z0-9_-]{0,120}",
    ) {
        let sealer = Sealer::new(&[Secret::new("a session secret of enough length 0123")], "test");
        let sealed = sealer.seal(b"aad", &plaintext);
        prop_assert_eq!(sealer.open(b"aad", &sealed), Some(plaintext.clone()));
        prop_assert_eq!(sealer.open(b"other", &sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        let i = flip.index(tampered.len());
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        prop_assert_eq!(sealer.open(b"aad", std::str::from_utf8(&tampered).unwrap()), None);
        let other = Sealer::new(&[Secret::new("another secret of enough length 0123456")], "test");
        prop_assert_eq!(other.open(b"aad", &sealed), None);
        let _ = sealer.open(b"aad", &garbage);
    }

    /// Tokens kept in compact form come back byte for byte, JWS or not.
    #[test]
    fn stored_tokens_round_trip(
        text in prop_oneof![
            "[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,80}\\.[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_.=+/-]{0,120}",
        ],
    ) {
        let token = Token::new(&text);
        prop_assert_eq!(token.text(), text.as_str());
    }
}

proptest! {
    // Values up to 18 000 bytes are slow to generate in a debug build; a few hundred cases
    // still cover every chunk count and both orders many times over.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A session value split into chunk cookies reads back whole, whatever the chunks' order.
    #[test]
    fn chunked_session_cookies_read_back_whole(
        value in "[A-Za-z0-9_.-]{1,18000}",
        reverse in any::<bool>(),
    ) {
        let parts = cookie::split("oidc_session", &value).expect("five chunks hold 18 000 bytes");
        prop_assert_eq!(parts.len(), value.len().div_ceil(CHUNK_SIZE));
        let mut pairs: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if reverse {
            pairs.reverse();
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, pairs.join("; ").parse().unwrap());
        match cookie::read(&headers, "oidc_session") {
            Read::Value(v) => prop_assert_eq!(v.joined(), value),
            _ => prop_assert!(false, "not read back"),
        }
    }
}
