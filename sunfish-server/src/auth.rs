//! Authentication and authorization of each request, in front of every route: credentials
//! (`X-Auth-Token` or HTTP Basic) become a [`Principal`], whose role must hold the privilege
//! [`privilege_for`] names. Only the service root, `/redfish`, `$metadata`, the OData service
//! document and session login are open (and `/EventListener` with
//! `auth.open_event_listener`).

use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use sunfish_core::auth::{privilege_for, Principal, Privilege, Requirement};
use sunfish_core::{Error, Operation, ResourcePath};

use crate::AppState;

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Authentication is off, or the path is public.
    Open,
    /// Authenticated with enough privilege.
    Granted(Principal),
    /// Authenticated, allowed only because the target is the principal's own account: the body
    /// may change nothing but `Password`.
    OwnAccount(Principal),
}

/// The operation a method stands for.
pub fn operation(method: &Method) -> Operation {
    match *method {
        Method::POST => Operation::Create,
        Method::PUT => Operation::Replace,
        Method::PATCH => Operation::Patch,
        Method::DELETE => Operation::Delete,
        _ => Operation::Get,
    }
}

/// Decides whether the request may go on.
///
/// # Errors
/// `Unauthorized` (401) without valid credentials, `InsufficientPrivilege` (403).
pub async fn authorize(
    state: &AppState,
    method: &Method,
    raw_path: &str,
    headers: &HeaderMap,
) -> Result<Access, Error> {
    let Some(auth) = state.core.auth().filter(|_| state.auth.enabled) else { return Ok(Access::Open) };
    let op = operation(method);
    let trimmed = raw_path.trim_start_matches('/');
    let path = if trimmed == "redfish" || trimmed == "redfish/" {
        "/redfish".to_string()
    } else if trimmed == "EventListener" {
        if state.auth.open_event_listener && op == Operation::Create {
            return Ok(Access::Open);
        }
        "/EventListener".to_string()
    } else {
        match ResourcePath::parse(raw_path) {
            Ok(p) => p.to_string(),
            Err(_) => raw_path.to_string(),
        }
    };
    let need = privilege_for(op, &path);
    if need == Requirement::Public {
        return Ok(Access::Open);
    }
    let principal = if let Some(token) = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()) {
        auth.authenticate_token(&state.core, token).await?
    } else if let Some((user, pass)) = basic(headers) {
        auth.authenticate_password(&user, &pass).await?
    } else {
        return Err(Error::Unauthorized { reason: "no credentials".into() });
    };
    let denied = || Error::InsufficientPrivilege { path: path.clone(), operation: op };
    match need {
        Requirement::Public => Ok(Access::Open),
        Requirement::Privilege(p) if principal.privileges.has(p) => Ok(Access::Granted(principal)),
        Requirement::Privilege(_) => Err(denied()),
        Requirement::PrivilegeOrSelf(p) if principal.privileges.has(p) => Ok(Access::Granted(principal)),
        Requirement::PrivilegeOrSelf(_) if principal.privileges.has(Privilege::ConfigureSelf) => {
            let target = ResourcePath::parse(&path).map_err(|_| denied())?;
            if target.parent().is_some_and(|p| p.as_str() == sunfish_core::auth::SESSIONS) {
                let own = target.last().and_then(|id| auth.session_owner(id)).is_some_and(|a| a == principal.account);
                if own {
                    Ok(Access::Granted(principal))
                } else {
                    Err(denied())
                }
            } else if target == principal.account {
                Ok(Access::OwnAccount(principal))
            } else {
                Err(denied())
            }
        }
        Requirement::PrivilegeOrSelf(_) => Err(denied()),
    }
}

/// `Authorization: Basic` credentials.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Basic credentials decode, including passwords with colons.
    #[test]
    fn basic_header() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic YWRtaW46cDpzcw==".parse().unwrap());
        assert_eq!(basic(&h), Some(("admin".into(), "p:ss".into())));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic(&h), None);
        h.insert(header::AUTHORIZATION, "Basic !!".parse().unwrap());
        assert_eq!(basic(&h), None);
    }
}
