//! API Gateway authorizer claims as an identity. A REST API (v1) proxy event
//! carries a Cognito authorizer's claims in `requestContext.authorizer.claims`,
//! an HTTP API (v2) event a JWT authorizer's in
//! `requestContext.authorizer.jwt.claims`; a Lambda authorizer's context is
//! `requestContext.authorizer.lambda` (v2) or the authorizer object itself
//! (v1, beside its `principalId`). The gateway has already verified the
//! token. They are trusted only when `[auth.gateway_claims]` is
//! configured, and only the Lambda adapter calls this: a plain HTTP request
//! cannot forge a request context.

use serde_json::Value as Json;

use super::Identity;
use crate::schema::GatewaySettings;

use super::claim;

/// Roles as the gateways flatten them: a JSON array, `"[a b]"`, `"a,b"` or `"a"`.
fn roles(value: Option<&Json>) -> Vec<String> {
    match value {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Json::String(s)) => s
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The identity in an API Gateway request context, if its authorizer left claims.
pub fn identity(request_context: &Json, settings: &GatewaySettings) -> Option<Identity> {
    let authorizer = request_context.get("authorizer")?;
    let claims = authorizer
        .get("jwt")
        .and_then(|j| j.get("claims"))
        .or_else(|| authorizer.get("claims"))
        .or_else(|| authorizer.get("lambda"))
        .unwrap_or(authorizer);
    let subject = match claim(claims, &settings.subject_claim)? {
        Json::String(s) if !s.is_empty() => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(Identity {
        subject,
        roles: roles(claim(claims, &settings.role_claim)),
        claims: std::sync::Arc::new(claims.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> GatewaySettings {
        GatewaySettings {
            subject_claim: "sub".into(),
            role_claim: "cognito:groups".into(),
        }
    }

    #[test]
    fn a_rest_api_cognito_authorizer_context_gives_subject_and_groups() {
        let ctx = json!({"resourcePath": "/records", "authorizer": {"claims": {
            "sub": "7d8ca528-4931-4254-9273-ea5ee853f271", "cognito:groups": "admin,editor",
            "email": "ada@example.com", "token_use": "id"}}});
        let id = identity(&ctx, &settings()).unwrap();
        assert_eq!(id.subject, "7d8ca528-4931-4254-9273-ea5ee853f271");
        assert_eq!(id.roles, ["admin", "editor"]);
    }

    #[test]
    fn an_http_api_jwt_authorizer_context_gives_subject_and_groups() {
        let ctx = json!({"routeKey": "GET /records", "authorizer": {"jwt": {
            "claims": {"sub": "u-42", "cognito:groups": "[admin user]", "iss": "https://cognito-idp"},
            "scopes": null}}});
        let id = identity(&ctx, &settings()).unwrap();
        assert_eq!(id.subject, "u-42");
        assert_eq!(id.roles, ["admin", "user"]);
    }

    #[test]
    fn a_lambda_authorizer_context_gives_subject_and_roles_in_both_versions() {
        let settings = GatewaySettings {
            subject_claim: "principalId".into(),
            role_claim: "roles".into(),
        };
        // REST API: the context's keys sit beside principalId.
        let v1 = json!({"authorizer": {"principalId": "u-7", "roles": "staff", "integrationLatency": 3}});
        let id = identity(&v1, &settings).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.roles.as_slice()),
            ("u-7", &["staff".to_owned()][..])
        );
        // HTTP API: under `lambda`.
        let v2 = json!({"authorizer": {"lambda": {"principalId": "u-8", "roles": ["a", "b"]}}});
        let id = identity(&v2, &settings).unwrap();
        assert_eq!(id.subject, "u-8");
        assert_eq!(id.roles, ["a", "b"]);
    }

    #[test]
    fn a_context_without_an_authorizer_is_anonymous() {
        assert!(identity(&json!({"routeKey": "GET /"}), &settings()).is_none());
        assert!(
            identity(
                &json!({"authorizer": {"claims": {"email": "x"}}}),
                &settings()
            )
            .is_none()
        );
    }
}
