//! The two error types of the core: [`Error`] for a request that failed, [`StartupError`] for a
//! service that cannot be built. The server maps [`Error`] to Redfish error bodies in one place
//! (`sunfish-server/src/error.rs`); nothing else in the workspace picks HTTP statuses.

use crate::Operation;

/// Result of a request-level operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request failed. Each variant is a failure a caller can act on; its doc names the HTTP status
/// and the Base registry MessageId it becomes.
#[derive(Debug, thiserror::Error, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// 404 `ResourceNotFound`: nothing is stored at `path`.
    #[error("resource {path} not found")]
    NotFound {
        /// The path that was looked up.
        path: String,
    },
    /// 409 `ResourceAlreadyExists`: a create named a member that exists.
    #[error("resource {path} already exists")]
    AlreadyExists {
        /// The `@odata.id` that is taken.
        path: String,
    },
    /// 405 `OperationNotAllowed` with an `Allow` header listing `allowed`: the operation cannot
    /// apply to this resource (a collection, the service root, a non-collection POST target).
    #[error("{operation} is not allowed on {path}")]
    NotAllowed {
        /// The resource the request addressed.
        path: String,
        /// What was attempted.
        operation: Operation,
        /// What the resource does allow.
        allowed: Vec<Operation>,
    },
    /// 400 `ResourceNotFound`-free path rejection: the request path is not a valid resource
    /// path (escape attempts, NUL, encoded slashes, segments starting with a dot).
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The path as received (lossy).
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// 400 `MalformedJSON`: the body is not JSON, or not a JSON object where one is needed.
    #[error("malformed JSON: {reason}")]
    MalformedJson {
        /// What the parser said.
        reason: String,
    },
    /// 415 `UnsupportedMediaType`: the body is declared as something other than JSON.
    #[error("unsupported media type {media_type}")]
    UnsupportedMediaType {
        /// The Content-Type received.
        media_type: String,
    },
    /// 400 `PropertyMissing`: a required property is absent.
    #[error("required property {property} is missing")]
    PropertyMissing {
        /// JSON pointer-ish name of the property (`@odata.type`, `Events`).
        property: String,
    },
    /// 400 `PropertyNotWritable`: the request tried to change a read-only property.
    #[error("property {property} is read-only")]
    PropertyNotWritable {
        /// The property.
        property: String,
    },
    /// 400 `PropertyValueError`: a property has a value the service cannot accept.
    #[error("property {property} has an unacceptable value: {reason}")]
    PropertyValue {
        /// The property.
        property: String,
        /// Why the value is refused.
        reason: String,
    },
    /// 400 `PropertyUnknown`: the body names a property the resource's schema does not have.
    #[error("property {property} is not in the schema")]
    PropertyUnknown {
        /// Path of the property (`Status/Foo`).
        property: String,
    },
    /// 400 `PropertyValueTypeError`: a property value has the wrong JSON type for the schema.
    #[error("property {property} has a value of the wrong type: {value}")]
    PropertyValueType {
        /// Path of the property.
        property: String,
        /// The value received, as JSON text (shortened).
        value: String,
    },
    /// 401 `ResourceAtUriUnauthorized` with `WWW-Authenticate`: no valid credentials.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why (for the log; the client sees a generic message).
        reason: String,
    },
    /// 403 `InsufficientPrivilege`: authenticated, but the role lacks the privilege.
    #[error("insufficient privilege for {operation} on {path}")]
    InsufficientPrivilege {
        /// The resource.
        path: String,
        /// What was attempted.
        operation: Operation,
    },
    /// 400 `NoOperation`: the request would change nothing (a PATCH of annotations only).
    #[error("the request changes nothing")]
    NoOperation,
    /// 412 `PreconditionFailed`: `If-Match` named a revision that is no longer current.
    #[error("precondition failed on {path}")]
    PreconditionFailed {
        /// The resource whose revision moved on.
        path: String,
    },
    /// The agent owning the resource refused or failed. With `status` set (an agent 4xx/5xx) the
    /// server passes that status and message on; without it the agent could not be reached
    /// (502), or did not answer in time when `timed_out` (504).
    #[error("agent {agent} failed: {message}")]
    Agent {
        /// The AggregationSource (or URL) of the agent.
        agent: String,
        /// HTTP status the agent answered, if it answered.
        status: Option<u16>,
        /// Whether the agent did not answer in time.
        timed_out: bool,
        /// What went wrong, safe to show to the client.
        message: String,
    },
    /// 501 `QueryNotSupported`: a query parameter the service does not implement.
    #[error("query parameter {parameter} is not supported")]
    QueryNotSupported {
        /// The parameter as received.
        parameter: String,
    },
    /// 400 `QueryParameterValueFormatError` / `QueryParameterValueError`: a supported query
    /// parameter with a value that cannot be used (bad `$filter` syntax, negative `$top`).
    #[error("query parameter {parameter} has an unusable value: {reason}")]
    QueryParameterValue {
        /// The parameter (`$filter`).
        parameter: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// 400 `QueryCombinationInvalid`-style refusal with a clear message: the request would need
    /// more work than the configured budget (`$expand` levels or resources).
    #[error("the request exceeds the {what} limit of {limit}")]
    BudgetExceeded {
        /// Which budget (`$expand levels`, `$expand resources`).
        what: String,
        /// The configured limit.
        limit: usize,
    },
    /// A write was refused by policy (an outbound URL outside `outbound.allow`): 400
    /// `PropertyValueNotInList`-style with the property named.
    #[error("{property}: {reason}")]
    NotPermitted {
        /// The property carrying the refused value (`Destination`).
        property: String,
        /// Why.
        reason: String,
    },
    /// 500 `InternalError`: the storage backend failed (I/O, corruption). The message goes to
    /// the log, never into the response body.
    #[error("storage failure: {message}")]
    Storage {
        /// What failed, for the log.
        message: String,
    },
    /// 500 `InternalError`: a bug or an invariant that did not hold. Logged, not shown.
    #[error("internal error: {message}")]
    Internal {
        /// What failed, for the log.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(path: impl std::fmt::Display) -> Self {
        Error::NotFound { path: path.to_string() }
    }

    /// Shorthand for [`Error::Storage`], keeping the source's text for the log.
    pub fn storage(message: impl std::fmt::Display) -> Self {
        Error::Storage { message: message.to_string() }
    }

    /// Shorthand for [`Error::PropertyValue`].
    pub fn property_value(property: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::PropertyValue { property: property.into(), reason: reason.into() }
    }
}

/// The service cannot be built: bad configuration, unknown or duplicate plugins, a backend that
/// cannot open its store. Reported once at start, never per request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// A configuration value names a plugin no linked crate registered.
    #[error("unknown {kind} \"{name}\" (registered: {registered})")]
    UnknownPlugin {
        /// Plugin kind (`storage`, `event-handler`, ...).
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// Comma-separated sorted list of registered names.
        registered: String,
    },
    /// Two linked crates registered the same name for one kind.
    #[error("{kind} \"{name}\" is registered twice")]
    DuplicatePlugin {
        /// Plugin kind.
        kind: &'static str,
        /// The duplicated name.
        name: String,
    },
    /// A plugin's options table does not fit its options type.
    #[error("options of {kind} \"{name}\": {reason}")]
    Options {
        /// Plugin kind.
        kind: &'static str,
        /// Plugin name.
        name: String,
        /// What is wrong (serde's message names the key).
        reason: String,
    },
    /// Configuration outside plugin options is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A plugin or the service could not open what it needs.
    #[error("{what}: {reason}")]
    Io {
        /// What was being opened.
        what: String,
        /// The failure.
        reason: String,
    },
}
