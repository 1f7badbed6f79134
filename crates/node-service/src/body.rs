//! The response body: a complete buffer (every route but one), or a stream of
//! chunks fed by a task (`GET /api/events`).
//!
//! A stream carries a cancellation token, its *close* token. The server (`http.rs`)
//! closes the connection when it fires, and the body fires it when it is dropped.
//! So the producer can drop a client that does not read (its socket buffer full, the
//! body never polled) by cancelling the token, and a stream that ends for any reason
//! takes its connection with it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// The whole body (`None` once sent).
    Full(Option<Bytes>),
    /// Chunks as a producer sends them; ends when the producer drops its sender.
    Stream(StreamBody),
}

/// See [`Body::Stream`].
#[derive(Debug)]
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    close: CancellationToken,
    _guard: DropGuard,
}

impl Body {
    /// A complete body.
    pub fn full(b: Bytes) -> Body {
        Body::Full(Some(b))
    }

    /// A streamed body reading `rx`, closing its connection when `close` fires (and
    /// firing it when dropped).
    pub fn stream(rx: mpsc::Receiver<Bytes>, close: CancellationToken) -> Body {
        Body::Stream(StreamBody {
            rx,
            _guard: close.clone().drop_guard(),
            close,
        })
    }

    /// The close token of a streamed body.
    pub fn close_token(&self) -> Option<CancellationToken> {
        match self {
            Body::Full(_) => None,
            Body::Stream(s) => Some(s.close.clone()),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Body::Stream(s) => {
                if s.close.is_cancelled() {
                    return Poll::Ready(None);
                }
                s.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    #[tokio::test]
    async fn full_and_stream_bodies_yield_their_bytes() {
        let b = Body::full(Bytes::from_static(b"hello"));
        assert_eq!(b.size_hint().exact(), Some(5));
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"hello");
        let (tx, rx) = mpsc::channel(4);
        let close = CancellationToken::new();
        let s = Body::stream(rx, close.clone());
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        drop(tx);
        assert_eq!(&s.collect().await.unwrap().to_bytes()[..], b"ab");
        assert!(
            close.is_cancelled(),
            "dropping a stream fires its close token"
        );
    }
}
