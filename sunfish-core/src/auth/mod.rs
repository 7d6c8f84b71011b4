//! Authentication and authorization, shared by the server and the agent.
//!
//! - **Accounts** are `ManagerAccount` resources in `AccountService/Accounts`; their passwords
//!   exist only as argon2 hashes in private records (`credentials/<account id>`), and the
//!   resource always shows `"Password": null`.
//! - **Sessions** are `Session` resources in `SessionService/Sessions`; the token is 32 random
//!   bytes given to the client once (`X-Auth-Token`). Only its SHA-256 is kept (private record
//!   `sessions/<id>`, and an in-memory map for per-request lookups), so a stolen store does not
//!   yield usable tokens. Idle sessions expire after `SessionService.SessionTimeout`.
//! - **Roles** map to privileges (`Login`, `ConfigureManager`, `ConfigureUsers`,
//!   `ConfigureComponents`, `ConfigureSelf`) from the `Role` resources.
//! - **Lockout**: `AccountLockoutThreshold` failures within `AccountLockoutCounterResetAfter`
//!   seconds lock the account for `AccountLockoutDuration` seconds (0: until an administrator
//!   PATCHes `Locked` to false).
//!
//! [`privilege_for`] is the privilege map per operation and path (the Redfish privilege
//! registry, simplified to what this service serves).

mod hooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

pub use self::hooks::AuthHooks;
use crate::{Core, Error, Operation, ResourcePath, Result, StorageBackend};

/// Accounts collection.
pub const ACCOUNTS: &str = "/redfish/v1/AccountService/Accounts";
/// Roles collection.
pub const ROLES: &str = "/redfish/v1/AccountService/Roles";
/// Sessions collection.
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
/// The AccountService.
pub const ACCOUNT_SERVICE: &str = "/redfish/v1/AccountService";
/// The SessionService.
pub const SESSION_SERVICE: &str = "/redfish/v1/SessionService";

const NS_CREDENTIALS: &str = "credentials";
const NS_SESSIONS: &str = "sessions";
const NS_LOCKS: &str = "accountlocks";
/// Notification topic of role and setting changes (payload `roles` or `settings`).
const TOPIC_AUTH: &str = "auth";

/// A Redfish privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// Read and log in.
    Login,
    /// Manage the service itself.
    ConfigureManager,
    /// Manage accounts.
    ConfigureUsers,
    /// Change hardware resources.
    ConfigureComponents,
    /// Change one's own password, end one's own sessions.
    ConfigureSelf,
}

impl Privilege {
    const ALL: [Privilege; 5] = [
        Privilege::Login,
        Privilege::ConfigureManager,
        Privilege::ConfigureUsers,
        Privilege::ConfigureComponents,
        Privilege::ConfigureSelf,
    ];

    fn bit(self) -> u8 {
        match self {
            Privilege::Login => 1,
            Privilege::ConfigureManager => 2,
            Privilege::ConfigureUsers => 4,
            Privilege::ConfigureComponents => 8,
            Privilege::ConfigureSelf => 16,
        }
    }

    /// The schema name (`ConfigureUsers`).
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Login => "Login",
            Privilege::ConfigureManager => "ConfigureManager",
            Privilege::ConfigureUsers => "ConfigureUsers",
            Privilege::ConfigureComponents => "ConfigureComponents",
            Privilege::ConfigureSelf => "ConfigureSelf",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Privilege::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// A set of privileges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Privileges(u8);

impl Privileges {
    /// Whether `p` is in the set.
    pub fn has(self, p: Privilege) -> bool {
        self.0 & p.bit() != 0
    }

    /// The names of the privileges in the set, in schema order (what a console shows).
    pub fn names(self) -> Vec<&'static str> {
        Privilege::ALL.into_iter().filter(|p| self.has(*p)).map(Privilege::name).collect()
    }

    /// From `AssignedPrivileges` names (unknown names are ignored).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Privileges(names.into_iter().filter_map(Privilege::parse).fold(0, |acc, p| acc | p.bit()))
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `UserName`.
    pub user: String,
    /// The account's resource path.
    pub account: ResourcePath,
    /// `RoleId`.
    pub role: String,
    /// The role's privileges.
    pub privileges: Privileges,
    /// The session Id, when authenticated by token.
    pub session: Option<String>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: allowed without credentials.
    Public,
    /// This privilege.
    Privilege(Privilege),
    /// This privilege, or `ConfigureSelf` when the target belongs to the principal (own
    /// account, own session).
    PrivilegeOrSelf(Privilege),
}

/// The privilege an operation on a path needs (Redfish privilege registry, simplified).
pub fn privilege_for(op: Operation, path: &str) -> Requirement {
    use Privilege::*;
    let under = |base: &str| path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'));
    let public_read = ["/redfish", "/redfish/v1", "/redfish/v1/odata", "/redfish/v1/$metadata"];
    match op {
        Operation::Get if public_read.contains(&path) => Requirement::Public,
        // Agent configuration sections may hold device credentials.
        Operation::Get if under(crate::aggregation::agentconfig::AGENT_CONFIGURATIONS) => {
            Requirement::Privilege(ConfigureComponents)
        }
        Operation::Get => Requirement::Privilege(Login),
        Operation::Create if path == SESSIONS => Requirement::Public,
        Operation::Delete if under(SESSIONS) => Requirement::PrivilegeOrSelf(ConfigureManager),
        Operation::Patch | Operation::Replace if under(ACCOUNTS) && path != ACCOUNTS => {
            Requirement::PrivilegeOrSelf(ConfigureUsers)
        }
        _ if under(ACCOUNT_SERVICE) => Requirement::Privilege(ConfigureUsers),
        _ if under(SESSION_SERVICE)
            || under("/redfish/v1/Managers")
            || path == "/redfish/v1"
            || path == "/redfish/v1/EventService"
            || under("/redfish/v1/EventService/Actions")
            || under("/redfish/v1/AggregationService")
            || under("/redfish/v1/TaskService") =>
        {
            Requirement::Privilege(ConfigureManager)
        }
        _ => Requirement::Privilege(ConfigureComponents),
    }
}

/// Settings read from the AccountService and SessionService resources.
#[derive(Debug, Clone, Copy)]
struct Settings {
    session_timeout: u64,
    lockout_threshold: u64,
    lockout_duration: u64,
    counter_reset_after: u64,
    min_password: usize,
    max_password: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_timeout: 1800,
            lockout_threshold: 5,
            lockout_duration: 60,
            counter_reset_after: 60,
            min_password: 8,
            max_password: 64,
        }
    }
}

/// A live session.
#[derive(Debug)]
struct SessionState {
    id: String,
    principal: RwLock<Principal>,
    last_used: AtomicU64,
}

/// Failed logins of one account.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u64,
    first: Instant,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes from the OS.
fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal { message: format!("no randomness: {e}") })?;
    Ok(buf)
}

/// An argon2 PHC hash of `password` (run off the async runtime: it is deliberately slow).
pub async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_string();
    let salt: [u8; 16] = random()?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal { message: e.to_string() })?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal { message: e.to_string() })
    })
    .await
    .map_err(|e| Error::Internal { message: e.to_string() })?
}

async fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_string(), phc.to_string());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// How long a successful Basic authentication is remembered, so that argon2 does not run on
/// every request of a Basic client.
const BASIC_CACHE: Duration = Duration::from_secs(60);

/// The authentication service. Built by the front end; its [`AuthHooks`] keep it in step with
/// writes to accounts, roles, sessions and the two service resources.
pub struct AuthService {
    storage: Arc<dyn StorageBackend>,
    settings: RwLock<Settings>,
    roles: RwLock<HashMap<String, Privileges>>,
    /// SHA-256 of token → session.
    sessions: RwLock<HashMap<[u8; 32], Arc<SessionState>>>,
    /// (user, SHA-256 of password) → when it was verified.
    basic_cache: Mutex<HashMap<(String, [u8; 32]), Instant>>,
    failures: Mutex<HashMap<String, Failures>>,
}

impl AuthService {
    /// An authentication service over `storage`; call [`AuthService::load`] before use.
    pub fn new(storage: Arc<dyn StorageBackend>) -> Arc<Self> {
        Arc::new(AuthService {
            storage,
            settings: RwLock::new(Settings::default()),
            roles: RwLock::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            basic_cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Loads settings, roles and stored sessions (sessions survive restarts).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn load(&self) -> Result<()> {
        self.reload_settings().await;
        self.reload_roles().await?;
        for (id, v) in self.storage.kv_list(NS_SESSIONS).await? {
            self.adopt_session(id, &v).await;
        }
        Ok(())
    }

    /// Takes the stored session `id` (record `v`) into the in-memory table; returns it, or
    /// `None` (and deletes the record) when its account is gone.
    async fn adopt_session(&self, id: String, v: &Value) -> Option<Arc<SessionState>> {
        let hash = v.get("token_sha256").and_then(Value::as_str).and_then(parse_hex32)?;
        let account = v.get("account").and_then(Value::as_str).and_then(|a| ResourcePath::parse(a).ok())?;
        match self.principal_for_account(&account).await {
            Ok(mut p) => {
                p.session = Some(id.clone());
                let last = v.get("last_used").and_then(Value::as_u64).unwrap_or_else(now_secs);
                let s = Arc::new(SessionState { id, principal: RwLock::new(p), last_used: AtomicU64::new(last) });
                self.sessions.write().insert(hash, s.clone());
                Some(s)
            }
            Err(_) => {
                let _ = self.storage.kv_delete(NS_SESSIONS, &id).await;
                None
            }
        }
    }

    /// On a shared store: the session another instance opened with this token, if any.
    async fn session_from_store(&self, hash: &[u8; 32]) -> Result<Option<Arc<SessionState>>> {
        let want = hex(hash);
        for (id, v) in self.storage.kv_list(NS_SESSIONS).await? {
            if v.get("token_sha256").and_then(Value::as_str) == Some(want.as_str()) {
                return Ok(self.adopt_session(id, &v).await);
            }
        }
        Ok(None)
    }

    /// On a shared store: whether session `s` still exists there, taking a later use recorded
    /// by another instance. Returns the stored `last_used`.
    async fn check_shared_session(&self, s: &SessionState) -> Result<Option<u64>> {
        let Some(v) = self.storage.kv_get(NS_SESSIONS, &s.id).await? else {
            self.sessions.write().retain(|_, x| x.id != s.id);
            return Ok(None);
        };
        let stored = v.get("last_used").and_then(Value::as_u64).unwrap_or(0);
        s.last_used.fetch_max(stored, Ordering::Relaxed);
        Ok(Some(stored))
    }

    /// Re-reads password, lockout and session-timeout settings.
    pub async fn reload_settings(&self) {
        let mut s = *self.settings.read();
        if let Ok(p) = ResourcePath::parse(ACCOUNT_SERVICE) {
            if let Ok(r) = self.storage.get(&p).await {
                let v = r.value();
                let num = |k: &str| v.get(k).and_then(Value::as_u64);
                s.lockout_threshold = num("AccountLockoutThreshold").unwrap_or(s.lockout_threshold);
                s.lockout_duration = num("AccountLockoutDuration").unwrap_or(s.lockout_duration);
                s.counter_reset_after = num("AccountLockoutCounterResetAfter").unwrap_or(s.counter_reset_after);
                s.min_password = num("MinPasswordLength").map_or(s.min_password, |n| n as usize);
                s.max_password = num("MaxPasswordLength").map_or(s.max_password, |n| n as usize);
            }
        }
        if let Ok(p) = ResourcePath::parse(SESSION_SERVICE) {
            if let Ok(r) = self.storage.get(&p).await {
                s.session_timeout =
                    r.value().get("SessionTimeout").and_then(Value::as_u64).unwrap_or(s.session_timeout);
            }
        }
        *self.settings.write() = s;
    }

    /// Re-reads every role's privileges.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn reload_roles(&self) -> Result<()> {
        let mut roles = HashMap::new();
        for p in self.storage.children(&ResourcePath::parse(ROLES)?).await? {
            if let Ok(r) = self.storage.get(&p).await {
                let v = r.value();
                let id = v.get("RoleId").or_else(|| v.get("Id")).and_then(Value::as_str).unwrap_or_default();
                let names = v
                    .get("AssignedPrivileges")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default();
                roles.insert(id.to_string(), Privileges::from_names(names));
            }
        }
        *self.roles.write() = roles;
        // Sessions pick up role changes.
        let sessions: Vec<Arc<SessionState>> = self.sessions.read().values().cloned().collect();
        for s in sessions {
            let role = s.principal.read().role.clone();
            let privileges = self.roles.read().get(&role).copied().unwrap_or_default();
            s.principal.write().privileges = privileges;
        }
        Ok(())
    }

    /// Whether `role` exists.
    pub fn role_exists(&self, role: &str) -> bool {
        self.roles.read().contains_key(role)
    }

    /// The minimum and maximum password lengths.
    pub fn password_limits(&self) -> (usize, usize) {
        let s = self.settings.read();
        (s.min_password, s.max_password)
    }

    /// The account resource whose `UserName` is `user`.
    async fn find_account(&self, user: &str) -> Result<Option<(ResourcePath, Value)>> {
        for p in self.storage.children(&ResourcePath::parse(ACCOUNTS)?).await? {
            if let Ok(r) = self.storage.get(&p).await {
                if r.value().get("UserName").and_then(Value::as_str) == Some(user) {
                    return Ok(Some((p, r.value().into_owned())));
                }
            }
        }
        Ok(None)
    }

    /// Whether some account other than `except` has `UserName` `user`.
    pub async fn user_name_taken(&self, user: &str, except: Option<&ResourcePath>) -> Result<bool> {
        Ok(self.find_account(user).await?.is_some_and(|(p, _)| Some(&p) != except))
    }

    async fn principal_for_account(&self, account: &ResourcePath) -> Result<Principal> {
        let v = self.storage.get(account).await?.value().into_owned();
        Ok(self.principal_from(account, &v))
    }

    fn principal_from(&self, account: &ResourcePath, v: &Value) -> Principal {
        let role = v.get("RoleId").and_then(Value::as_str).unwrap_or_default().to_string();
        Principal {
            user: v.get("UserName").and_then(Value::as_str).unwrap_or_default().to_string(),
            account: account.clone(),
            privileges: self.roles.read().get(&role).copied().unwrap_or_default(),
            role,
            session: None,
        }
    }

    /// Stores the password hash of an account.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn set_password_hash(&self, account_id: &str, phc: String) -> Result<()> {
        self.storage.kv_put(NS_CREDENTIALS, account_id, json!({"hash": phc})).await?;
        self.basic_cache.lock().clear();
        Ok(())
    }

    /// Checks `user`/`password`, applying enablement and lockout.
    ///
    /// # Errors
    /// `Unauthorized` for unknown users, wrong passwords, disabled or locked accounts.
    pub async fn authenticate_password(&self, user: &str, password: &str) -> Result<Principal> {
        let key = (user.to_string(), sha256(password.as_bytes()));
        let cached = self.basic_cache.lock().get(&key).is_some_and(|t| t.elapsed() < BASIC_CACHE);
        let Some((path, account)) = self.find_account(user).await? else {
            // Spend the time a real check would, so unknown names cannot be told apart.
            let _ = verify_password(
                password,
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )
            .await;
            return Err(Error::Unauthorized { reason: format!("unknown user {user:?}") });
        };
        let id = path.last().unwrap_or_default().to_string();
        if account.get("Enabled").and_then(Value::as_bool) == Some(false) {
            return Err(Error::Unauthorized { reason: format!("account {user:?} is disabled") });
        }
        if account.get("Locked").and_then(Value::as_bool) == Some(true) && !self.lock_expired(&path, &id).await? {
            return Err(Error::Unauthorized { reason: format!("account {user:?} is locked") });
        }
        if !cached {
            let stored = self.storage.kv_get(NS_CREDENTIALS, &id).await?;
            let phc = stored.as_ref().and_then(|v| v.get("hash")).and_then(Value::as_str).unwrap_or_default();
            if !verify_password(password, phc).await {
                self.record_failure(&path, &id, user).await?;
                return Err(Error::Unauthorized { reason: format!("wrong password for {user:?}") });
            }
            self.basic_cache.lock().insert(key, Instant::now());
        }
        self.failures.lock().remove(&id);
        Ok(self.principal_from(&path, &account))
    }

    /// Whether a lock has run its `AccountLockoutDuration`; if so, unlocks the account.
    async fn lock_expired(&self, path: &ResourcePath, id: &str) -> Result<bool> {
        let duration = self.settings.read().lockout_duration;
        if duration == 0 {
            return Ok(false);
        }
        let since = self.storage.kv_get(NS_LOCKS, id).await?.and_then(|v| v.as_u64()).unwrap_or(0);
        if now_secs() < since + duration {
            return Ok(false);
        }
        self.storage.patch(path, json!({"Locked": false}), None).await?;
        self.storage.kv_delete(NS_LOCKS, id).await?;
        Ok(true)
    }

    async fn record_failure(&self, path: &ResourcePath, id: &str, user: &str) -> Result<()> {
        let s = *self.settings.read();
        if s.lockout_threshold == 0 {
            return Ok(());
        }
        let count = {
            let mut f = self.failures.lock();
            let entry = f.entry(id.to_string()).or_insert(Failures { count: 0, first: Instant::now() });
            if s.counter_reset_after > 0 && entry.first.elapsed() > Duration::from_secs(s.counter_reset_after) {
                *entry = Failures { count: 0, first: Instant::now() };
            }
            entry.count += 1;
            entry.count
        };
        if count >= s.lockout_threshold {
            warn!(user, failures = count, "account locked after failed logins");
            self.failures.lock().remove(id);
            self.storage.kv_put(NS_LOCKS, id, json!(now_secs())).await?;
            self.storage.patch(path, json!({"Locked": true}), None).await?;
        }
        Ok(())
    }

    /// Creates a session for `user`/`password`: returns the session resource path and body to
    /// store, and the token to hand to the client once.
    ///
    /// # Errors
    /// `PropertyMissing` for absent credentials, `Unauthorized` for bad ones.
    pub async fn login(&self, core: &Core, body: &Value) -> Result<(crate::Resource, String)> {
        let user = body
            .get("UserName")
            .and_then(Value::as_str)
            .ok_or(Error::PropertyMissing { property: "UserName".into() })?;
        let password = body
            .get("Password")
            .and_then(Value::as_str)
            .ok_or(Error::PropertyMissing { property: "Password".into() })?;
        let mut principal = self.authenticate_password(user, password).await?;
        let token: [u8; 32] = random()?;
        let token = hex(&token);
        let id = uuid::Uuid::new_v4().to_string();
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace('Z', "+00:00");
        let session = json!({
            "@odata.type": "#Session.v1_8_0.Session",
            "Id": id,
            "Name": "User Session",
            "UserName": principal.user,
            "SessionType": "Redfish",
            "CreatedTime": created,
        });
        let hash = sha256(token.as_bytes());
        self.storage
            .kv_put(
                NS_SESSIONS,
                &id,
                json!({"token_sha256": hex(&hash), "account": principal.account.as_str(), "last_used": now_secs()}),
            )
            .await?;
        principal.session = Some(id.clone());
        self.sessions.write().insert(
            hash,
            Arc::new(SessionState {
                id: id.clone(),
                principal: RwLock::new(principal),
                last_used: AtomicU64::new(now_secs()),
            }),
        );
        let stored = match core.create(&ResourcePath::parse(SESSIONS)?, session).await {
            Ok(r) => r,
            Err(e) => {
                self.forget_session(&id).await;
                return Err(e);
            }
        };
        info!(user, session = %id, "session created");
        Ok((stored, token))
    }

    /// The principal of a session token; refreshes its idle timer.
    ///
    /// # Errors
    /// `Unauthorized` for unknown or expired tokens.
    pub async fn authenticate_token(&self, core: &Core, token: &str) -> Result<Principal> {
        let hash = sha256(token.as_bytes());
        let shared = self.storage.shared();
        let mut session = self.sessions.read().get(&hash).cloned();
        if session.is_none() && shared {
            session = self.session_from_store(&hash).await?;
        }
        let Some(session) = session else {
            return Err(Error::Unauthorized { reason: "unknown session token".into() });
        };
        let stored = if shared {
            match self.check_shared_session(&session).await? {
                Some(t) => t,
                None => return Err(Error::Unauthorized { reason: "session ended".into() }),
            }
        } else {
            0
        };
        let timeout = self.settings.read().session_timeout;
        let now = now_secs();
        if timeout > 0 && now.saturating_sub(session.last_used.load(Ordering::Relaxed)) > timeout {
            info!(session = %session.id, "session expired");
            self.forget_session(&session.id).await;
            if let Ok(p) = ResourcePath::parse(SESSIONS).and_then(|s| s.child(&session.id)) {
                let _ = core.delete(&p, None).await;
            }
            return Err(Error::Unauthorized { reason: "session expired".into() });
        }
        // On a shared store the other instances learn of the use (their sweepers would expire
        // it otherwise), at most every tenth of the timeout.
        if shared && now.saturating_sub(stored) >= (timeout / 10).max(1) {
            let account = session.principal.read().account.clone();
            let record = json!({"token_sha256": hex(&hash), "account": account.as_str(), "last_used": now});
            self.storage.kv_put(NS_SESSIONS, &session.id, record).await?;
        }
        session.last_used.store(now, Ordering::Relaxed);
        let p = session.principal.read().clone();
        Ok(p)
    }

    /// Re-reads roles and settings when another instance sharing the store announces a change
    /// to them (they are cached here for every request's authorization).
    pub fn follow_changes(self: &Arc<Self>) {
        let Some(mut rx) = self.storage.notifications() else { return };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let n = rx.recv().await;
                let Some(auth) = me.upgrade() else { return };
                match n {
                    Ok(n) if n.topic == TOPIC_AUTH && n.payload == "roles" => {
                        if let Err(e) = auth.reload_roles().await {
                            tracing::warn!(error = %e, "roles changed elsewhere not reloaded");
                        }
                    }
                    Ok(n) if n.topic == TOPIC_AUTH => auth.reload_settings().await,
                    Ok(n) if n.topic != "*" => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {
                        // Missed notifications: re-read both.
                        auth.reload_settings().await;
                        let _ = auth.reload_roles().await;
                    }
                }
            }
        });
    }

    /// Tells the other instances sharing the store that roles (`what` = `roles`) or the
    /// account and session settings (`settings`) changed, so they re-read them.
    pub async fn announce(&self, what: &str) {
        if self.storage.shared() {
            if let Err(e) = self.storage.notify(TOPIC_AUTH, what).await {
                tracing::warn!(error = %e, "auth change notification not sent");
            }
        }
    }

    /// Ends idle sessions once a second (deleting their resources), so expiry does not wait for
    /// the token's next use and the Sessions collection shows only live sessions.
    pub fn start_sweeper(self: &Arc<Self>, core: &Core) {
        let me = Arc::downgrade(self);
        let core = core.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(auth) = me.upgrade() else { return };
                let timeout = auth.settings.read().session_timeout;
                if timeout == 0 {
                    continue;
                }
                let now = now_secs();
                let expired: Vec<String> = auth
                    .sessions
                    .read()
                    .values()
                    .filter(|s| now.saturating_sub(s.last_used.load(Ordering::Relaxed)) > timeout)
                    .map(|s| s.id.clone())
                    .collect();
                for id in expired {
                    if auth.storage.shared() {
                        // Used (or ended) through another instance since?
                        let state = auth.sessions.read().values().find(|s| s.id == id).cloned();
                        if let Some(state) = state {
                            match auth.check_shared_session(&state).await {
                                Ok(Some(_))
                                    if now.saturating_sub(state.last_used.load(Ordering::Relaxed)) <= timeout =>
                                {
                                    continue
                                }
                                Ok(None) => continue,
                                _ => {}
                            }
                        }
                    }
                    info!(session = %id, "session expired");
                    auth.forget_session(&id).await;
                    if let Ok(p) = ResourcePath::parse(SESSIONS).and_then(|s| s.child(&id)) {
                        let _ = core.delete(&p, None).await;
                    }
                }
            }
        });
    }

    /// Ends a session (after its resource was deleted, or on expiry).
    pub async fn forget_session(&self, id: &str) {
        self.sessions.write().retain(|_, s| s.id != id);
        let _ = self.storage.kv_delete(NS_SESSIONS, id).await;
    }

    /// The account that owns session `id`.
    pub fn session_owner(&self, id: &str) -> Option<ResourcePath> {
        self.sessions.read().values().find(|s| s.id == id).map(|s| s.principal.read().account.clone())
    }

    /// Refreshes or ends the sessions of an account after it changed or was deleted; returns the
    /// Ids of sessions that must end.
    pub async fn account_changed(&self, account: &ResourcePath) -> Vec<String> {
        self.basic_cache.lock().clear();
        let current = self.storage.get(account).await.ok().map(|r| r.value().into_owned());
        let sessions: Vec<Arc<SessionState>> =
            self.sessions.read().values().filter(|s| &s.principal.read().account == account).cloned().collect();
        let mut ended = Vec::new();
        for s in sessions {
            match &current {
                Some(v) if v.get("Enabled").and_then(Value::as_bool) != Some(false) => {
                    let mut p = self.principal_from(account, v);
                    p.session = Some(s.id.clone());
                    *s.principal.write() = p;
                }
                _ => ended.push(s.id.clone()),
            }
        }
        for id in &ended {
            self.forget_session(id).await;
        }
        ended
    }

    /// Makes sure an Administrator can log in: creates `user` with `password` when no account
    /// of that name exists. With no password configured and no Administrator account at all, a
    /// random password is generated and logged once, so a new service is never locked out.
    ///
    /// # Errors
    /// `Internal` when no administrator can exist (no user name configured and none stored).
    pub async fn bootstrap(&self, core: &Core, user: &str, password: Option<&str>) -> Result<()> {
        if !user.is_empty() && self.find_account(user).await?.is_some() {
            return Ok(());
        }
        let has_admin = {
            let mut found = false;
            for p in self.storage.children(&ResourcePath::parse(ACCOUNTS)?).await? {
                if let Ok(r) = self.storage.get(&p).await {
                    found |= r.value().get("RoleId").and_then(Value::as_str) == Some("Administrator");
                }
            }
            found
        };
        if user.is_empty() {
            return if has_admin {
                Ok(())
            } else {
                Err(Error::Internal {
                    message: "auth is on, no auth.admin_user is set and no Administrator account exists".into(),
                })
            };
        }
        let password = match password {
            Some(p) => p.to_string(),
            None if has_admin => return Ok(()),
            None => {
                let generated = hex(&random::<12>()?);
                warn!(user, password = %generated, "created the bootstrap Administrator with a generated password; change it");
                generated
            }
        };
        let body = json!({"@odata.type": "#ManagerAccount.v1_14_1.ManagerAccount", "Id": user, "UserName": user,
            "Password": password, "RoleId": "Administrator", "Enabled": true});
        core.create(&ResourcePath::parse(ACCOUNTS)?, body).await?;
        info!(user, "bootstrap Administrator account created");
        Ok(())
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_names_round_trip_in_schema_order() {
        let set = Privileges::from_names(["ConfigureSelf", "Login", "NoSuchPrivilege"]);
        assert_eq!(set.names(), ["Login", "ConfigureSelf"]);
        assert!(Privileges::default().names().is_empty());
    }

    /// The privilege map: public reads, sessions, accounts, services, components.
    #[test]
    fn privileges() {
        use Privilege::*;
        assert_eq!(privilege_for(Operation::Get, "/redfish/v1"), Requirement::Public);
        assert_eq!(privilege_for(Operation::Get, "/redfish/v1/$metadata"), Requirement::Public);
        assert_eq!(privilege_for(Operation::Get, "/redfish/v1/Systems"), Requirement::Privilege(Login));
        assert_eq!(privilege_for(Operation::Create, SESSIONS), Requirement::Public);
        assert_eq!(
            privilege_for(Operation::Delete, "/redfish/v1/SessionService/Sessions/x"),
            Requirement::PrivilegeOrSelf(ConfigureManager)
        );
        assert_eq!(privilege_for(Operation::Create, ACCOUNTS), Requirement::Privilege(ConfigureUsers));
        assert_eq!(
            privilege_for(Operation::Patch, "/redfish/v1/AccountService/Accounts/a"),
            Requirement::PrivilegeOrSelf(ConfigureUsers)
        );
        assert_eq!(
            privilege_for(Operation::Patch, "/redfish/v1/EventService"),
            Requirement::Privilege(ConfigureManager)
        );
        assert_eq!(
            privilege_for(Operation::Create, "/redfish/v1/EventService/Subscriptions"),
            Requirement::Privilege(ConfigureComponents)
        );
        assert_eq!(
            privilege_for(Operation::Patch, "/redfish/v1/Systems/1"),
            Requirement::Privilege(ConfigureComponents)
        );
        let p = Privileges::from_names(["Login", "ConfigureSelf", "Bogus"]);
        assert!(p.has(Login) && p.has(ConfigureSelf) && !p.has(ConfigureUsers));
    }

    /// Password hashes verify the right password only.
    #[tokio::test]
    async fn hashes() {
        let h = hash_password("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("correct horse", &h).await);
        assert!(!verify_password("wrong", &h).await);
        assert!(!verify_password("x", "not a hash").await);
        assert_eq!(parse_hex32(&hex(&[7u8; 32])), Some([7u8; 32]));
    }
}
