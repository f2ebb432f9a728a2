//! Request bodies, bounded on every route: a `Content-Length` over the cap answers 413
//! problem+json before any handler runs, and a body must have arrived within the deadline
//! (else 408), so a client trickling a byte a second cannot hold a connection and a worker.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::HttpMessage as _;
use futures_util::Stream;

use crate::error::ApiError;

/// The body limits every route shares (the size cap and the arrival deadline).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub deadline: Duration,
}

/// The middleware: refuses declared oversized bodies, and puts the deadline on the rest.
pub async fn limit_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(limits) = req.app_data::<BodyLimits>().copied() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        let error = ApiError::PayloadTooLarge {
            limit: limits.max_bytes,
        };
        let (request, _) = req.into_parts();
        let mut response = actix_web::ResponseError::error_response(&error);
        // The unread body would otherwise be parsed as the next request.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return Ok(ServiceResponse::new(request, response).map_into_right_body());
    }
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.is_some_and(|len| len > 0) || chunked {
        let payload = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(DeadlinePayload {
                inner: payload,
                deadline: Box::pin(tokio::time::sleep(limits.deadline)),
                limit: limits.deadline,
                looked_again: false,
                expired: false,
            }),
        });
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// The body stream, cut off with a `TimedOut` error once the deadline passes.
struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    looked_again: bool,
    expired: bool,
}

/// Marks the error the deadline raises, so extractors can quote the limit in their 408.
#[derive(Debug)]
struct DeadlinePassed(Duration);

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for DeadlinePassed {}

/// The deadline (whole seconds) behind a timed-out body read.
pub fn deadline_secs(error: &std::io::Error) -> u64 {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DeadlinePassed>())
        .map_or(crate::config::DEFAULT_BODY_TIMEOUT_S, |d| d.0.as_secs())
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            // The bytes may be waiting in the socket, unread only because this worker was busy
            // (the connection reads them when this returns): look once more before giving up.
            if !self.looked_again {
                self.looked_again = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.expired = true;
            metrics::counter!("hilot_request_bodies_timed_out_total").increment(1);
            let error =
                std::io::Error::new(std::io::ErrorKind::TimedOut, DeadlinePassed(self.limit));
            return Poll::Ready(Some(Err(PayloadError::Io(error))));
        }
        Poll::Pending
    }
}
