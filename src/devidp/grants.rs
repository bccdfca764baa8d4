//! The provider's endpoints that grant something: the authorization endpoint and its login
//! form, the token endpoint (authorization code with PKCE, refresh with rotation, client
//! credentials), userinfo and RP-initiated logout.

use super::*;

impl DevIdp {
    pub(super) fn authorize(
        &self,
        query: &[(String, String)],
        cookie_session: Option<usize>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(client) = get("client_id").and_then(|c| self.client(&c)) else {
            return page(
                400,
                "Unknown client",
                "The client_id is not registered here.",
                "",
            );
        };
        let redirect_uri = get("redirect_uri").unwrap_or_default();
        // Never redirect to an unregistered URI: show the error here instead.
        if !client.redirect_uris.contains(&redirect_uri) {
            return page(
                400,
                "Invalid redirect_uri",
                "This redirect_uri is not registered for the client.",
                "",
            );
        }
        let state = get("state");
        let fail = |error: &str| {
            redirect(&with_params(
                &redirect_uri,
                &[("error", Some(error)), ("state", state.as_deref())],
            ))
        };
        if get("response_type").as_deref() != Some("code") {
            return fail("unsupported_response_type");
        }
        let (Some(code_challenge), Some("S256")) = (
            get("code_challenge"),
            get("code_challenge_method").as_deref(),
        ) else {
            return fail("invalid_request");
        };
        let scope = get("scope").unwrap_or_default();
        if !scope.split(' ').any(|s| s == "openid") {
            return fail("invalid_scope");
        }
        let req = AuthRequest {
            client_id: client.id.clone(),
            redirect_uri,
            state,
            nonce: get("nonce"),
            code_challenge,
            scope,
            created: now,
        };
        if let Some(user) = cookie_session {
            return self.issue_code(req, user, now);
        }
        let id = B64.encode(random_bytes::<16>());
        self.pending.insert(id.clone(), req);
        login_page(&id, None)
    }

    pub(super) fn login(&self, form: &[(String, String)], now: u64) -> Response<Vec<u8>> {
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let id = get("request");
        let Some(req) = self
            .pending
            .get(id)
            .map(|r| r.clone())
            .filter(|r| now < r.created + LOGIN_TTL)
        else {
            return page(
                400,
                "Sign-in expired",
                "This sign-in form has expired. Go back to the application and start again.",
                "",
            );
        };
        let user = self.cfg.users.iter().position(|u| {
            ct_eq(u.username.as_bytes(), get("username").as_bytes())
                & ct_eq(u.password.as_bytes(), get("password").as_bytes())
        });
        let Some(user) = user else {
            return login_page(id, Some("Invalid username or password."));
        };
        self.pending.remove(id);
        let sid = B64.encode(random_bytes::<24>());
        self.sessions.insert(sid.clone(), user);
        let mut resp = self.issue_code(req, user, now);
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax"
        )) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
        resp
    }

    pub(super) fn issue_code(&self, req: AuthRequest, user: usize, now: u64) -> Response<Vec<u8>> {
        let code = B64.encode(random_bytes::<24>());
        let grant = Grant {
            client_id: req.client_id,
            user,
            scope: req.scope,
            created: now,
        };
        let target = with_params(
            &req.redirect_uri,
            &[("code", Some(&code)), ("state", req.state.as_deref())],
        );
        self.codes.insert(
            code,
            (grant, req.redirect_uri, req.nonce, req.code_challenge),
        );
        redirect(&target)
    }

    pub(super) fn token(
        &self,
        form: &[(String, String)],
        authorization: Option<&str>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(client) = self.authenticate_client(form, authorization) else {
            return oauth_error(401, "invalid_client");
        };
        match get("grant_type") {
            Some("authorization_code") => {
                let Some((_, (grant, redirect_uri, nonce, challenge))) =
                    get("code").and_then(|c| self.codes.remove(c))
                else {
                    return oauth_error(400, "invalid_grant");
                };
                let verifier = get("code_verifier").unwrap_or("");
                let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
                if grant.client_id != client.id
                    || now >= grant.created + CODE_TTL
                    || get("redirect_uri") != Some(redirect_uri.as_str())
                    || !ct_eq(computed.as_bytes(), challenge.as_bytes())
                {
                    return oauth_error(400, "invalid_grant");
                }
                self.tokens(&client.id, &grant, nonce.as_deref(), now)
            }
            Some("refresh_token") => {
                // Rotation: a refresh token works once.
                let Some((_, grant)) =
                    get("refresh_token").and_then(|t| self.refresh_tokens.remove(t))
                else {
                    return oauth_error(400, "invalid_grant");
                };
                if grant.client_id != client.id {
                    return oauth_error(400, "invalid_grant");
                }
                self.tokens(&client.id, &grant, None, now)
            }
            Some("client_credentials") => {
                let audience = get("resource").or(get("audience")).unwrap_or("demo-api");
                let scope = get("scope").unwrap_or("");
                let claims = json!({
                    "iss": self.cfg.issuer, "sub": client.id, "aud": audience, "client_id": client.id,
                    "scope": scope, "iat": now, "exp": now + self.cfg.access_token_ttl,
                    "jti": B64.encode(random_bytes::<12>()),
                });
                match self.key.sign(&claims, "at+jwt") {
                    Ok(at) => json_response(
                        200,
                        &json!({"access_token": at, "token_type": "Bearer", "expires_in": self.cfg.access_token_ttl, "scope": scope}),
                    ),
                    Err(_) => oauth_error(500, "server_error"),
                }
            }
            _ => oauth_error(400, "unsupported_grant_type"),
        }
    }

    pub(super) fn tokens(
        &self,
        client_id: &str,
        grant: &Grant,
        nonce: Option<&str>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let Some(user) = self.cfg.users.get(grant.user) else {
            return oauth_error(400, "invalid_grant");
        };
        let mut id = json!({
            "iss": self.cfg.issuer, "sub": user.sub, "aud": client_id, "iat": now, "exp": now + ID_TOKEN_TTL,
            "auth_time": grant.created, "preferred_username": user.username,
        });
        if let Some(n) = nonce {
            id["nonce"] = n.into();
        }
        for (k, v) in &user.claims {
            id[k] = v.clone();
        }
        let at_claims = json!({
            "iss": self.cfg.issuer, "sub": user.sub, "aud": client_id, "client_id": client_id, "scope": grant.scope,
            "iat": now, "exp": now + self.cfg.access_token_ttl, "jti": B64.encode(random_bytes::<12>()),
        });
        let (Ok(id_token), Ok(access_token)) = (
            self.key.sign(&id, "JWT"),
            self.key.sign(&at_claims, "at+jwt"),
        ) else {
            return oauth_error(500, "server_error");
        };
        let refresh = B64.encode(random_bytes::<32>());
        self.refresh_tokens.insert(refresh.clone(), grant.clone());
        json_response(
            200,
            &json!({
                "access_token": access_token, "token_type": "Bearer", "expires_in": self.cfg.access_token_ttl,
                "id_token": id_token, "refresh_token": refresh, "scope": grant.scope,
            }),
        )
    }

    pub(super) fn authenticate_client(
        &self,
        form: &[(String, String)],
        authorization: Option<&str>,
    ) -> Option<&DevClient> {
        let (id, secret) = match authorization.and_then(|a| a.strip_prefix("Basic ")) {
            Some(b) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let (id, secret) = text.split_once(':')?;
                let dec = |s: &str| {
                    form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                (dec(id)?, dec(secret)?)
            }
            None => {
                let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                (get("client_id")?, get("client_secret")?)
            }
        };
        self.client(&id)
            .filter(|c| ct_eq(c.secret.as_bytes(), secret.as_bytes()))
    }

    pub(super) fn userinfo(&self, authorization: Option<&str>) -> Response<Vec<u8>> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let Some(claims) = self.key.verify(token, &self.cfg.issuer) else {
            let mut r = json_response(401, &json!({"error": "invalid_token"}));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return r;
        };
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let Some(user) = self.cfg.users.iter().find(|u| u.sub == sub) else {
            return json_response(401, &json!({"error": "invalid_token"}));
        };
        let mut out = json!({"sub": user.sub, "preferred_username": user.username});
        for (k, v) in &user.claims {
            out[k] = v.clone();
        }
        json_response(200, &out)
    }

    pub(super) fn logout(
        &self,
        query: &[(String, String)],
        cookie_sid: Option<&str>,
    ) -> Response<Vec<u8>> {
        if let Some(sid) = cookie_sid {
            self.sessions.remove(sid);
        }
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let client = get("client_id").and_then(|c| self.client(c));
        let mut resp = match get("post_logout_redirect_uri") {
            Some(uri)
                if client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri)) =>
            {
                redirect(&with_params(uri, &[("state", get("state"))]))
            }
            // Said plainly: a gateway whose logout_redirect_uri is not registered here would
            // otherwise leave its users on this page without knowing why.
            Some(uri) => {
                let accepted = client
                    .map(|c| c.post_logout_redirect_uris.join(", "))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| "none".to_owned());
                let why = format!(
                    "The post_logout_redirect_uri {uri} is not registered for client {}. This development identity provider accepts: {accepted}. Set the gateway's logout_redirect_uri to one of them (oidc-gateway dev-idp prints them).",
                    get("client_id").unwrap_or("(none given)")
                );
                tracing::warn!("development IdP: logout refused: {why}");
                page(400, "Sign-out redirect refused", &why, "")
            }
            None => page(
                200,
                "Signed out",
                "You are signed out of the development identity provider.",
                "",
            ),
        };
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        )) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
        resp
    }
}
