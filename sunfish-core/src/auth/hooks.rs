//! Keeps [`AuthService`] in step with writes through the core: validates and hashes account
//! passwords before anything is stored (the resource only ever holds `"Password": null`),
//! refuses client writes to sessions and to predefined roles, ends the sessions of deleted or
//! disabled accounts, and reloads roles and settings after they change.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::{hash_password, AuthService, ACCOUNTS, ACCOUNT_SERVICE, ROLES, SESSIONS, SESSION_SERVICE};
use crate::{Core, Error, ObjectHandler, Operation, Resource, ResourcePath, Result, WriteOp};

/// The built-in object handler for accounts, roles, sessions and the two services.
pub struct AuthHooks {
    /// The service kept in step.
    pub auth: Arc<AuthService>,
    /// Password hashes of accounts being created, until their resource exists.
    pending: Mutex<HashMap<ResourcePath, String>>,
}

impl AuthHooks {
    /// Hooks for `auth`.
    pub fn new(auth: Arc<AuthService>) -> Self {
        AuthHooks { auth, pending: Mutex::new(HashMap::new()) }
    }

    fn check_password(&self, v: &Value) -> Result<String> {
        let Some(pw) = v.as_str() else { return Err(Error::property_value("Password", "must be a string")) };
        let (min, max) = self.auth.password_limits();
        let n = pw.chars().count();
        if n < min || n > max {
            return Err(Error::property_value("Password", format!("must be {min} to {max} characters long")));
        }
        Ok(pw.to_string())
    }

    async fn check_role(&self, body: &mut Map<String, Value>) -> Result<()> {
        if let Some(role) = body.get("RoleId") {
            let Some(role) = role.as_str() else { return Err(Error::property_value("RoleId", "must be a string")) };
            if !self.auth.role_exists(role) {
                self.auth.reload_roles().await?;
                if !self.auth.role_exists(role) {
                    return Err(Error::property_value("RoleId", format!("no role {role:?}")));
                }
            }
            body.insert("Links".into(), json!({"Role": {"@odata.id": format!("{ROLES}/{role}")}}));
        }
        Ok(())
    }

    async fn account_before(&self, op: &mut WriteOp) -> Result<()> {
        let path = op.path.clone();
        let Some(Value::Object(body)) = op.payload.as_mut() else { return Ok(()) };
        let password = body.remove("Password");
        match op.operation {
            Operation::Create => {
                let user = match body.get("UserName") {
                    Some(Value::String(u)) if !u.is_empty() => u.clone(),
                    Some(_) => return Err(Error::property_value("UserName", "must be a non-empty string")),
                    None => return Err(Error::PropertyMissing { property: "UserName".into() }),
                };
                if self.auth.user_name_taken(&user, None).await? {
                    return Err(Error::AlreadyExists { path: format!("{ACCOUNTS} UserName {user}") });
                }
                let Some(pw) = password else { return Err(Error::PropertyMissing { property: "Password".into() }) };
                let pw = self.check_password(&pw)?;
                if !body.contains_key("RoleId") {
                    return Err(Error::PropertyMissing { property: "RoleId".into() });
                }
                self.check_role(body).await?;
                body.entry("Enabled").or_insert(json!(true));
                body.insert("Locked".into(), json!(false));
                body.entry("AccountTypes").or_insert(json!(["Redfish"]));
                body.entry("Name").or_insert(json!("User Account"));
                body.insert("Password".into(), Value::Null);
                let phc = hash_password(&pw).await?;
                self.pending.lock().insert(path, phc);
            }
            Operation::Patch | Operation::Replace => {
                if let Some(Value::String(user)) = body.get("UserName") {
                    if user.is_empty() || self.auth.user_name_taken(user, Some(&path)).await? {
                        return Err(Error::property_value("UserName", "must be a non-empty, unused name"));
                    }
                }
                if body.get("Locked") == Some(&json!(true)) {
                    return Err(Error::property_value(
                        "Locked",
                        "accounts are only locked by the service; PATCH false to unlock",
                    ));
                }
                self.check_role(body).await?;
                if let Some(pw) = password {
                    let pw = self.check_password(&pw)?;
                    let phc = hash_password(&pw).await?;
                    self.auth.set_password_hash(path.last().unwrap_or_default(), phc).await?;
                }
                body.insert("Password".into(), Value::Null);
            }
            _ => {}
        }
        Ok(())
    }
}

fn under(path: &ResourcePath, collection: &str) -> bool {
    path.parent().is_some_and(|p| p.as_str() == collection)
}

#[async_trait]
impl ObjectHandler for AuthHooks {
    fn resource_types(&self) -> &[&str] {
        &["ManagerAccount", "Role", "Session", "AccountService", "SessionService"]
    }

    async fn before(&self, _core: &Core, op: &mut WriteOp) -> Result<()> {
        match op.resource_type.as_str() {
            "ManagerAccount" if under(&op.path, ACCOUNTS) => self.account_before(op).await,
            "Session" if under(&op.path, SESSIONS) && matches!(op.operation, Operation::Patch | Operation::Replace) => {
                Err(Error::NotAllowed {
                    path: op.path.to_string(),
                    operation: op.operation,
                    allowed: vec![Operation::Get, Operation::Delete],
                })
            }
            "Role" if under(&op.path, ROLES) && op.operation != Operation::Create => {
                let current = self.auth.storage.get(&op.path).await?;
                if current.value().get("IsPredefined") == Some(&json!(true)) {
                    let touches_privileges = op.payload.as_ref().is_some_and(|p| {
                        p.get("AssignedPrivileges")
                            .is_some_and(|a| Some(a) != current.value().get("AssignedPrivileges"))
                    });
                    if op.operation == Operation::Delete {
                        return Err(Error::NotAllowed {
                            path: op.path.to_string(),
                            operation: op.operation,
                            allowed: vec![Operation::Get, Operation::Patch],
                        });
                    }
                    if touches_privileges {
                        return Err(Error::PropertyNotWritable { property: "AssignedPrivileges".into() });
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn after(&self, core: &Core, op: &WriteOp, _result: Option<&Resource>) -> Result<()> {
        match op.resource_type.as_str() {
            "ManagerAccount" if under(&op.path, ACCOUNTS) => {
                let id = op.path.last().unwrap_or_default();
                match op.operation {
                    Operation::Create => {
                        let phc = self.pending.lock().remove(&op.path);
                        if let Some(phc) = phc {
                            self.auth.set_password_hash(id, phc).await?;
                        }
                    }
                    Operation::Delete => {
                        self.auth.storage.kv_delete(super::NS_CREDENTIALS, id).await?;
                    }
                    _ => {}
                }
                for session in self.auth.account_changed(&op.path).await {
                    if let Ok(p) = ResourcePath::parse(SESSIONS).and_then(|s| s.child(&session)) {
                        let _ = core.delete(&p, None).await;
                    }
                }
            }
            "Session" if under(&op.path, SESSIONS) && op.operation == Operation::Delete => {
                self.auth.forget_session(op.path.last().unwrap_or_default()).await;
            }
            "Role" if under(&op.path, ROLES) => {
                self.auth.reload_roles().await?;
                self.auth.announce("roles").await;
            }
            "AccountService" | "SessionService"
                if op.path.as_str() == ACCOUNT_SERVICE || op.path.as_str() == SESSION_SERVICE =>
            {
                self.auth.reload_settings().await;
                self.auth.announce("settings").await;
            }
            _ => {}
        }
        Ok(())
    }
}
