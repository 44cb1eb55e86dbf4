//! Early answers to HTTP/2 requests whose body was not read (issue 24).
//!
//! Many answers come before the request body is read: 401/403 from a guard, 421 from the
//! residency check, 413 for a declared length over the limit, 415 for a wrong media type, 414/431
//! from the head limits. On HTTP/1 actix-http discards the rest of such a body itself. On HTTP/2
//! the body is an h2 stream, and a client sending more than the initial 64 KiB flow-control
//! window is still sending when the answer is ready. If the body is dropped **before** the
//! answer is sent — which is what happens when a route or middleware answers early and drops
//! the request — the h2 crate resets the stream with `CANCEL`, and the client gets a stream
//! error instead of the problem+json answer (curl: `(92) Stream error in the HTTP/2 framing
//! layer`).
//!
//! RFC 9113 §8.1 lets a server answer early and then stop the upload with
//! `RST_STREAM(NO_ERROR)`, which the h2 crate sends when the body is dropped **after** the
//! complete answer — but clients do not all take that well: curl (7.88, and later versions in
//! other sequences) still reports the stream error when its upload is cut short after a
//! complete answer.
//!
//! So, for every route at once, in the outermost middleware: on an HTTP/2 request [`hold`]
//! moves the body into a shared holder and the route reads it through a [`Reader`] (the same
//! bytes, the same limits). The answer's body ([`Held`]) owns the holder: once the answer's
//! bytes are out it reads and discards what is left of the request body — at most
//! [`DRAIN_MAX_BYTES`] and for at most [`DRAIN_MAX`] — and only then ends the answer, so the
//! exchange completes as an ordinary one. A body declared (or found) larger than that bound, or
//! slower, is not waited for: the answer ends, the body is dropped, and h2 stops the upload with
//! `RST_STREAM(NO_ERROR)` after the complete answer. HTTP/1 requests are left untouched
//! (actix-http discards an unread HTTP/1 body itself).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::Version;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::Stream;

/// Most of an unread request body read and discarded after an early answer, bytes.
pub const DRAIN_MAX_BYTES: usize = 8 << 20;
/// Longest wait for the rest of an unread request body after an early answer.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);

/// The request body of an HTTP/2 request, shared by the route's [`Reader`] and the answer.
#[derive(Clone)]
pub struct Holder(Rc<RefCell<Payload>>);

/// The route's view of a held body: the same stream, read through the holder.
pub struct Reader(Holder);

impl Stream for Reader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut payload = self.0 .0.borrow_mut();
        Pin::new(&mut *payload).poll_next(cx)
    }
}

/// A held request body and whether it may be drained after the answer.
pub struct Hold {
    holder: Holder,
    drain: bool,
}

/// On HTTP/2, move the request body into a [`Holder`] (the request reads it through a
/// [`Reader`]) and return it for [`answer`]; on HTTP/1 nothing changes (`None`).
pub fn hold(req: &mut ServiceRequest) -> Option<Hold> {
    if req.version() != Version::HTTP_2 {
        return None;
    }
    // A body declared larger than the drain bound is never waited for.
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let drain = declared.is_none_or(|n| n <= DRAIN_MAX_BYTES as u64);
    let holder = Holder(Rc::new(RefCell::new(req.take_payload())));
    let reader: actix_http::BoxedPayloadStream = Box::pin(Reader(holder.clone()));
    req.set_payload(Payload::from(reader));
    Some(Hold { holder, drain })
}

/// The answer, with its body owning the held request body (if any) until it has been sent.
pub fn answer<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    hold: Option<Hold>,
) -> ServiceResponse<EitherBody<Held, B>> {
    match hold {
        Some(Hold { holder, drain }) => res.map_body(|_, body| {
            EitherBody::left(Held {
                body: body.boxed(),
                request_body: holder,
                state: if drain { State::Answer } else { State::NoDrain },
            })
        }),
        None => res.map_into_right_body(),
    }
}

enum State {
    /// Sending the answer's bytes; drain the request body after them.
    Answer,
    /// Sending the answer's bytes; end right after them.
    NoDrain,
    /// Answer sent; discarding the rest of the request body.
    Draining {
        left: usize,
        until: Pin<Box<actix_rt::time::Sleep>>,
    },
    Done,
}

/// An answer body that keeps the request's body until the answer is complete (see the module
/// docs).
pub struct Held {
    body: BoxBody,
    request_body: Holder,
    state: State,
}

impl MessageBody for Held {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Answer | State::NoDrain => match Pin::new(&mut this.body).poll_next(cx) {
                    Poll::Ready(None) => {
                        this.state = match this.state {
                            State::Answer => State::Draining {
                                left: DRAIN_MAX_BYTES,
                                until: Box::pin(actix_rt::time::sleep(DRAIN_MAX)),
                            },
                            _ => State::Done,
                        };
                    }
                    other => return other,
                },
                State::Draining { left, until } => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    let mut payload = this.request_body.0.borrow_mut();
                    match Pin::new(&mut *payload).poll_next(cx) {
                        Poll::Ready(Some(Ok(chunk))) if chunk.len() <= *left => {
                            *left -= chunk.len();
                        }
                        Poll::Ready(_) => {
                            drop(payload);
                            this.state = State::Done;
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}
