//! Problem+json for errors of the HTTP/1 layer itself (issue 24): a request line or header
//! section too large, too many header fields, a bad method or version. actix-http answers those
//! from its codec, before any route or middleware runs, with a bare status and an empty body
//! (`HTTP/1.1 431 …`, `content-length: 0`, or `400 Bad Request`). [`ProblemIo`] wraps an
//! HTTP/1 connection's stream, recognises such a codec answer when it is written and writes a
//! problem+json answer with the right status instead.
//!
//! How a codec answer is told from the application's own: not by the shape of the answer
//! (status, length, content type), but by [`APP_MARK`], a header the application's header
//! middleware (`http::create_app`) sets on **every** response it produces, errors included. The
//! codec never sets it, so an answer head without it is the codec's; of those, 400 and 431 (the
//! statuses of a refused request head) are replaced:
//!
//! | what was received | status | code |
//! |---|---|---|
//! | a request line of [`MAX_TARGET_BYTES`] or more without its end, in a head over actix' 128 KiB | 414 | `uri_too_long` |
//! | a header section over actix' 128 KiB head limit, or more than 96 header fields | 431 | `header_fields_too_large` |
//! | an HTTP version other than 1.0/1.1 in the request line | 505 | `http_version_not_supported` |
//! | anything else the parser refuses (bad method token, bad header syntax) | 400 | `malformed_request` |
//!
//! Below actix' limits, [`check_limits`] (run by the middleware before residency and routing)
//! answers a request target over [`MAX_TARGET_BYTES`] with 414 and a header section over
//! [`MAX_HEADER_BYTES`] or more than [`MAX_HEADER_FIELDS`] fields with 431, the same codes.
//!
//! Over HTTP/2 the codec refuses nothing of these below its own limits, so [`check_limits`]
//! is what enforces them there (the answer goes on the stream, problem+json). The h2 codec's
//! own refusals come before the application and have no body: a `:path` over 65,534 bytes
//! (the `http` crate's URI limit) resets the stream; a header list over h2's default
//! `SETTINGS_MAX_HEADER_LIST_SIZE` (16 MiB; actix-http builds its h2 server with the defaults and
//! offers no setting) gets a bare 431 and `RST_STREAM(REFUSED_STREAM)`.
//!
//! To tell these apart the wrapper keeps the first [`KEEP`] bytes received since the last answer
//! head it saw written (the start of the request being parsed). On HTTP/2 connections the
//! wrapper is a plain pass-through ([`ProblemIo::passthrough`]): h2 reports protocol errors as
//! frames, not as HTTP answers, and its bytes are never inspected.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use actix_web::http::header::{self, HeaderName};

use crate::error::{ApiError, ErrorCode};

/// The header the application sets on every response it produces (`nosniff`), and which an
/// answer written by actix-http's codec never carries: how [`ProblemIo`] tells them apart.
pub const APP_MARK: HeaderName = header::X_CONTENT_TYPE_OPTIONS;

/// Bytes of the current request's start kept for classification.
pub const KEEP: usize = 40 * 1024;

/// Longest request target (path and query) served, bytes; longer → 414 `uri_too_long`.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Largest header section served (names + values + 4 bytes per field), bytes; larger → 431
/// `header_fields_too_large`.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most header fields a request may carry; more → 431 `header_fields_too_large`. The same
/// number actix-http's HTTP/1 parser allows (its `MAX_HEADERS`), so both protocols refuse at
/// the same count: over HTTP/1.1 the codec refuses a 97th field, over HTTP/2 (whose codec has
/// no count limit) [`check_limits`] does. Pseudo-header fields (`:method`, `:path`, …) are not
/// counted; every `cookie` field (h2 may split one cookie header into several) is.
pub const MAX_HEADER_FIELDS: usize = 96;

/// A request line reaching this without its end is "too long" (the URI's fault).
const LONG_LINE: usize = MAX_TARGET_BYTES;

/// The application's own request-head limits (see the module docs).
pub fn check_limits(req: &actix_web::HttpRequest) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target is longer than {MAX_TARGET_BYTES} bytes"),
        ));
    }
    let fields = req.headers().len();
    if fields > MAX_HEADER_FIELDS {
        return Err(ApiError::new(
            ErrorCode::HeaderFieldsTooLarge,
            format!(
                "the request has {fields} header fields; at most {MAX_HEADER_FIELDS} are accepted"
            ),
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            ErrorCode::HeaderFieldsTooLarge,
            format!("the header section is larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The stream wrapper (see the module docs).
pub struct ProblemIo<T> {
    inner: T,
    /// An HTTP/1 stream, inspected; `false`: HTTP/2, passed through untouched.
    http1: bool,
    /// Start of the request being received.
    head: Vec<u8>,
    /// The replacement answer still to be written.
    pending: Vec<u8>,
}

impl<T> ProblemIo<T> {
    /// Wrap the stream of an HTTP/1 connection: codec answers become problem+json.
    pub fn http1(inner: T) -> Self {
        Self {
            inner,
            http1: true,
            head: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Wrap the stream of an HTTP/2 connection: nothing is kept or inspected.
    pub fn passthrough(inner: T) -> Self {
        Self {
            http1: false,
            ..Self::http1(inner)
        }
    }
}

/// Classify the refused request from its start.
pub fn classify(head: &[u8], status: u16) -> ApiError {
    let line_end = head.windows(2).position(|w| w == b"\r\n");
    let line = &head[..line_end.unwrap_or(head.len()).min(head.len())];
    let long_line = line_end.map_or(head.len() >= LONG_LINE, |e| e >= LONG_LINE);
    if long_line {
        return ApiError::new(ErrorCode::UriTooLong, "the request line is too long");
    }
    if status == 431 {
        return ApiError::new(
            ErrorCode::HeaderFieldsTooLarge,
            "the request header section is too large or has too many fields (at most 96)",
        );
    }
    if line_end.is_some() {
        let version = line.rsplit(|b| *b == b' ').next().unwrap_or(b"");
        if version.starts_with(b"HTTP/") && version != b"HTTP/1.1" && version != b"HTTP/1.0" {
            return ApiError::new(
                ErrorCode::HttpVersionNotSupported,
                "only HTTP/1.0, HTTP/1.1 and HTTP/2 (over TLS, by ALPN) are served",
            );
        }
    }
    ApiError::new(
        ErrorCode::MalformedRequest,
        "the request line or a header field is malformed",
    )
}

/// If `buf` starts with an answer head written by actix-http's codec for a refused request head
/// (status 400 or 431, no [`APP_MARK`] header): its status.
fn codec_error_status(buf: &[u8]) -> Option<u16> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let status: u16 = status.parse().ok()?;
    let app_made = lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(APP_MARK.as_str()))
    });
    (!app_made && matches!(status, 400 | 431)).then_some(status)
}

/// The problem+json answer for `e` (connection closed after it).
pub fn answer(e: &ApiError) -> Vec<u8> {
    let st = super::problem::status_of(e);
    let body = serde_json::to_vec(&super::problem::problem(e)).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        st.as_u16(),
        st.canonical_reason().unwrap_or(""),
        super::problem::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.http1 {
            return r;
        }
        if let Poll::Ready(Ok(())) = r {
            let room = KEEP.saturating_sub(self.head.len());
            let new = &buf.filled()[before..];
            let take = new.len().min(room);
            let bytes = new[..take].to_vec();
            self.head.extend_from_slice(&bytes);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    fn flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.http1 {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        match this.flush_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(status) = codec_error_status(buf) {
            let e = classify(&this.head, status);
            this.pending = answer(&e);
            this.head.clear();
            // The bare answer counts as written; ours goes out in its place.
            let _ = this.flush_pending(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        if buf.starts_with(b"HTTP/1.") {
            // An answer head: the next request starts after it.
            this.head.clear();
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.flush_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.flush_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_answers_the_application_did_not_make() {
        let bare431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: x\r\n\r\n";
        assert_eq!(codec_error_status(bare431), Some(431));
        let bare400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert_eq!(codec_error_status(bare400), Some(400));
        // The application's answers carry the mark, whatever their shape — even an empty 400.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 120\r\ncontent-type: application/problem+json\r\nx-content-type-options: nosniff\r\n\r\n{}";
        assert_eq!(codec_error_status(ours), None);
        let ours_empty = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nX-Content-Type-Options: nosniff\r\n\r\n";
        assert_eq!(codec_error_status(ours_empty), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(codec_error_status(ok), None);
        // Not an answer head at the start of the write (an h2 frame, a body chunk).
        assert_eq!(
            codec_error_status(b"\x00\x00\x12\x01\x04\x00\x00\x00\x01\r\n\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn http2_streams_pass_through_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(4096);
        let mut io = ProblemIo::passthrough(a);
        let bare400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        io.write_all(bare400).await.unwrap();
        let mut got = vec![0; bare400.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bare400, "written as is");
        assert!(io.head.is_empty());
        let (a, mut b) = tokio::io::duplex(4096);
        let mut io = ProblemIo::http1(a);
        b.write_all(b"GET / HTTP/3.0\r\n\r\n").await.unwrap();
        let mut sink = [0u8; 64];
        let _ = io.read(&mut sink).await.unwrap();
        io.write_all(bare400).await.unwrap();
        io.flush().await.unwrap();
        let mut got = vec![0; 12];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(
            &got, b"HTTP/1.1 505",
            "an HTTP/1 stream gets the problem answer"
        );
    }

    #[test]
    fn classifies_the_refused_request() {
        let long = format!("GET /{} HTTP/1.1", "a".repeat(140_000));
        assert_eq!(classify(long.as_bytes(), 431).code, ErrorCode::UriTooLong);
        let headers = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(140_000));
        assert_eq!(
            classify(headers.as_bytes(), 431).code,
            ErrorCode::HeaderFieldsTooLarge
        );
        assert_eq!(
            classify(b"GET / HTTP/3.0\r\nhost: x\r\n\r\n", 400).code,
            ErrorCode::HttpVersionNotSupported
        );
        assert_eq!(
            classify(b"G@T / HTTP/1.1\r\nhost: x\r\n\r\n", 400).code,
            ErrorCode::MalformedRequest
        );
        let a = answer(&classify(b"GET / HTTP/3.0\r\n\r\n", 400));
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with("HTTP/1.1 505 "), "{text}");
        assert!(text.contains("application/problem+json"));
        assert!(text.contains("\"code\":\"http_version_not_supported\""));
    }
}
