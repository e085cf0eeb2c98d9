//! The one error type of the HTTP edge: a status, a stable code and a sentence for people,
//! sent as `{"code", "message"}`. Internal details are logged where they are turned into an
//! `ApiError` and never sent. Domain errors convert with `From`, so handlers use `?`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use teleconsult_documents::DocumentError;

/// A refused or failed request, as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Extra response headers (`WWW-Authenticate`, `Content-Range`): rarely any.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`, asking for a bearer token.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 `internal`: `detail` is logged, the client reads only "internal error".
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The same error with one more response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code in the body.
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "code": self.code, "message": self.message }));
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> ApiError {
        let status = match &e {
            DocumentError::Forbidden | DocumentError::NotYours => StatusCode::FORBIDDEN,
            DocumentError::UnknownConsultation | DocumentError::NotFound => StatusCode::NOT_FOUND,
            DocumentError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DocumentError::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DocumentError::BadUpload(_) => StatusCode::BAD_REQUEST,
            DocumentError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            DocumentError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            DocumentError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            DocumentError::TooManyUploads(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        let api = ApiError::new(status, e.code(), e.to_string());
        match e {
            DocumentError::RangeNotSatisfiable(size) => {
                match HeaderValue::try_from(format!("bytes */{size}")) {
                    Ok(v) => api.with_header(header::CONTENT_RANGE, v),
                    Err(_) => api,
                }
            }
            _ => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    async fn body(e: ApiError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = e.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        let json = serde_json::from_slice(&bytes).expect("JSON body");
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn body_is_code_and_message_only() {
        let (status, headers, json) = body(ApiError::unauthorized("a token is required")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            json,
            serde_json::json!({"code": "unauthorized", "message": "a token is required"})
        );
        let (status, _, json) = body(ApiError::internal("disk /var/x is full")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["message"], "internal error");
        assert!(!json.to_string().contains("/var/x"));
    }

    #[tokio::test]
    async fn document_errors_map_to_status_and_headers() {
        let (status, headers, json) = body(DocumentError::RangeNotSatisfiable(100).into()).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(headers[header::CONTENT_RANGE], "bytes */100");
        assert_eq!(json["code"], "range_not_satisfiable");
        for (e, status, code) in [
            (DocumentError::Forbidden, 403, "forbidden"),
            (DocumentError::NotYours, 403, "not_uploader"),
            (DocumentError::UnknownConsultation, 404, "not_found"),
            (DocumentError::NotFound, 404, "document_not_found"),
            (DocumentError::TooLarge(5), 413, "too_large"),
            (
                DocumentError::UnsupportedType("x".into()),
                415,
                "unsupported_type",
            ),
            (DocumentError::BadUpload("x".into()), 400, "bad_request"),
            (DocumentError::Unavailable, 503, "storage_unavailable"),
            (DocumentError::Internal, 500, "internal"),
            (DocumentError::TooManyUploads(3), 429, "too_many_uploads"),
        ] {
            let api = ApiError::from(e);
            assert_eq!((api.status().as_u16(), api.code()), (status, code));
        }
    }
}
