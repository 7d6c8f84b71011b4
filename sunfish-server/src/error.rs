//! The one place that turns errors into HTTP responses: Redfish error bodies (`error.code`,
//! `error.message`, `@Message.ExtendedInfo` with Base registry messages) and the status each
//! [`sunfish_core::Error`] variant documents. Internal details go to the log, never to a 5xx body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sunfish_core::{Error, Operation};

/// Base message registry version our MessageIds refer to.
pub const BASE_REGISTRY: &str = "Base.1.22";

/// A request failure on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A core error (most failures).
    Core(Error),
    /// The body exceeded `server.body_limit`.
    PayloadTooLarge,
    /// No route matched the path.
    NoRoute(String),
    /// The HTTP method is not one the service implements for this path.
    MethodNotAllowed(Vec<Operation>),
    /// 503 `OperationTimeout`: the response was not ready within `server.request_timeout_ms`.
    RequestTimeout {
        /// The configured limit.
        limit_ms: u64,
    },
    /// 431: the request headers exceed `server.max_header_bytes`.
    HeadersTooLarge {
        /// Their size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Core(e)
    }
}

/// One `@Message.ExtendedInfo` entry from the Base registry.
fn message(id: &str, text: String, args: &[&str], severity: &str, resolution: &str) -> Value {
    json!({
        "@odata.type": "#Message.v1_2_0.Message",
        "MessageId": format!("{BASE_REGISTRY}.{id}"),
        "Message": text,
        "MessageArgs": args,
        "MessageSeverity": severity,
        "Severity": severity,
        "Resolution": resolution,
    })
}

/// The `Allow` header value for a set of operations (HEAD goes with GET).
pub fn allow_header(ops: &[Operation]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for op in ops {
        match op {
            Operation::Get => out.extend(["GET", "HEAD"]),
            Operation::Create => out.push("POST"),
            Operation::Replace => out.push("PUT"),
            Operation::Patch => out.push("PATCH"),
            Operation::Delete => out.push("DELETE"),
        }
    }
    out.join(", ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut allow = None;
        let (status, info) = match self {
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                message(
                    "PayloadTooLarge",
                    "The supplied payload exceeds the maximum size supported by the service.".into(),
                    &[],
                    "Critical",
                    "Send a smaller payload.",
                ),
            ),
            ApiError::NoRoute(path) => (
                StatusCode::NOT_FOUND,
                message(
                    "ResourceMissingAtURI",
                    format!("The resource at the URI '{path}' was not found."),
                    &[&path],
                    "Critical",
                    "Place a valid resource at the URI or correct the URI and resubmit the request.",
                ),
            ),
            ApiError::MethodNotAllowed(ops) => {
                allow = Some(allow_header(&ops));
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    message(
                        "OperationNotAllowed",
                        "The HTTP method is not allowed on this resource.".into(),
                        &[],
                        "Critical",
                        "None.",
                    ),
                )
            }
            ApiError::RequestTimeout { limit_ms } => {
                tracing::warn!(limit_ms, "request timed out");
                (StatusCode::SERVICE_UNAVAILABLE, message("OperationTimeout", "A timeout internal to the service occurred as part of the request.  Partial results may have been returned.".into(), &[], "Critical", "Retry the request; a write may still complete: read the resource before repeating it."))
            }
            ApiError::HeadersTooLarge { size, limit } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                message(
                    "HeaderInvalid",
                    format!("The request headers total {size} bytes, more than the {limit} the service accepts."),
                    &["headers"],
                    "Critical",
                    "Send fewer or smaller headers.",
                ),
            ),
            ApiError::Core(e) => core_error(e, &mut allow),
        };
        let code = info["MessageId"].clone();
        let text = info["Message"].clone();
        let body = json!({"error": {"code": code, "message": text, "@Message.ExtendedInfo": [info]}});
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Redfish\""));
        }
        h.insert("OData-Version", HeaderValue::from_static("4.0"));
        if let Some(a) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            h.insert(header::ALLOW, a);
        }
        resp
    }
}

fn core_error(e: Error, allow: &mut Option<String>) -> (StatusCode, Value) {
    match e {
        Error::NotFound { path } => (
            StatusCode::NOT_FOUND,
            message("ResourceNotFound", format!("The requested resource of type Resource named '{path}' was not found."), &["Resource", &path], "Critical", "Provide a valid resource identifier and resubmit the request."),
        ),
        Error::AlreadyExists { path } => (
            StatusCode::CONFLICT,
            message("ResourceAlreadyExists", format!("The requested resource of type Resource with the property @odata.id with the value '{path}' already exists."), &["Resource", "@odata.id", &path], "Critical", "Do not repeat the create operation as the resource was already created."),
        ),
        Error::NotAllowed { allowed, .. } => {
            *allow = Some(allow_header(&allowed));
            (StatusCode::METHOD_NOT_ALLOWED, message("OperationNotAllowed", "The HTTP method is not allowed on this resource.".into(), &[], "Critical", "None."))
        }
        Error::InvalidPath { path, reason } => (
            StatusCode::BAD_REQUEST,
            message("InvalidURI", format!("The URI {path} was not found ({reason})."), &[&path], "Critical", "Provide a valid URI and resubmit the request."),
        ),
        Error::MalformedJson { reason } => {
            tracing::debug!(%reason, "malformed JSON");
            (StatusCode::BAD_REQUEST, message("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.".into(), &[], "Critical", "Ensure that the request body is valid JSON and resubmit the request."))
        }
        Error::UnsupportedMediaType { media_type } => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message("HeaderInvalid", format!("Header 'Content-Type: {media_type}' is invalid."), &["Content-Type"], "Critical", "Send the body as application/json."),
        ),
        Error::PropertyMissing { property } => (
            StatusCode::BAD_REQUEST,
            message("PropertyMissing", format!("The property {property} is a required property and must be included in the request."), &[&property], "Warning", "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed."),
        ),
        Error::PropertyNotWritable { property } => (
            StatusCode::BAD_REQUEST,
            message("PropertyNotWritable", format!("The property {property} is a read-only property and cannot be assigned a value."), &[&property], "Warning", "Remove the property from the request body and resubmit the request if the operation failed."),
        ),
        Error::PropertyValue { property, reason } => (
            StatusCode::BAD_REQUEST,
            message("PropertyValueError", format!("The value provided for the property {property} is not valid: {reason}."), &[&property], "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed."),
        ),
        Error::PreconditionFailed { .. } => (
            StatusCode::PRECONDITION_FAILED,
            message("PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.".into(), &[], "Critical", "Try the operation again using the appropriate ETag."),
        ),
        Error::Agent { agent, status, timed_out, message: msg } => {
            let status = match (status, timed_out) {
                (Some(s), _) => StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
                (None, true) => StatusCode::GATEWAY_TIMEOUT,
                (None, false) => StatusCode::BAD_GATEWAY,
            };
            let id = if timed_out { "OperationTimeout" } else { "GeneralError" };
            (status, message(id, format!("The agent {agent} did not apply the change: {msg}"), &[], "Critical", "Check the agent and resubmit the request."))
        }
        Error::PropertyUnknown { property } => (
            StatusCode::BAD_REQUEST,
            message("PropertyUnknown", format!("The property {property} is not in the list of valid properties for the resource."), &[&property], "Warning", "Remove the unknown property from the request body and resubmit the request if the operation failed."),
        ),
        Error::PropertyValueType { property, value } => (
            StatusCode::BAD_REQUEST,
            message("PropertyValueTypeError", format!("The value '{value}' for the property {property} is not a type that the property can accept."), &[&value, &property], "Warning", "Correct the value for the property in the request body and resubmit the request if the operation failed."),
        ),
        Error::Unauthorized { reason } => {
            tracing::info!(%reason, "request not authenticated");
            (StatusCode::UNAUTHORIZED, message("NoValidSession", "There is no valid session established with the implementation.".into(), &[], "Critical", "Establish a session before attempting any operations."))
        }
        Error::InsufficientPrivilege { .. } => (
            StatusCode::FORBIDDEN,
            message("InsufficientPrivilege", "There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.".into(), &[], "Critical", "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed."),
        ),
        Error::NoOperation => (
            StatusCode::BAD_REQUEST,
            message("NoOperation", "The request body submitted contain no data to act upon and no changes to the resource took place.".into(), &[], "Warning", "Add properties in the JSON object and resubmit the request."),
        ),
        Error::QueryNotSupported { parameter } => (
            StatusCode::NOT_IMPLEMENTED,
            message("QueryParameterUnsupported", format!("Query parameter '{parameter}' is not supported."), &[&parameter], "Warning", "Correct or remove the query parameter and resubmit the request."),
        ),
        Error::QueryParameterValue { parameter, reason } => (
            StatusCode::BAD_REQUEST,
            message("QueryParameterValueFormatError", format!("The value '{reason}' for the parameter {parameter} is not a format that the parameter can accept."), &[&reason, &parameter], "Warning", "Correct the value for the query parameter in the request and resubmit the request if the operation failed."),
        ),
        Error::BudgetExceeded { what, limit } => (
            StatusCode::BAD_REQUEST,
            message("QueryCombinationInvalid", format!("The request exceeds the {what} limit of {limit}; narrow the query."), &[], "Warning", "Use fewer $expand levels, $top, or $select, and resubmit the request."),
        ),
        Error::NotPermitted { property, reason } => (
            StatusCode::BAD_REQUEST,
            message("PropertyValueError", format!("The value provided for the property {property} is not valid: {reason}."), &[&property], "Warning", "Use a value the service policy allows."),
        ),
        other => {
            tracing::error!(error = %other, "request failed inside the service");
            (StatusCode::INTERNAL_SERVER_ERROR, message("InternalError", "The request failed due to an internal service error.  The service is still operational.".into(), &[], "Critical", "Resubmit the request.  If the problem persists, consider resetting the service."))
        }
    }
}
