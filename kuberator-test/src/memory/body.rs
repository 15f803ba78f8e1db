//! Response bodies: whole JSON documents, and watch streams (one JSON event per line).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::StreamBody;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::UnboundedSender;

use super::Inner;
use super::handler;
use super::resources::ResourceType;

/// The body of every response.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: Vec<u8>) -> ResponseBody {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// What a watch needs to send its own bookmarks: the server, its resource, and its sender.
type Ticks = (Arc<Inner>, ResourceType, UnboundedSender<Value>);

enum Next {
    Event(Option<Value>),
    Stop,
    Tick,
}

struct Watching {
    receiver: UnboundedReceiver<Value>,
    deadline: Option<tokio::time::Instant>,
    ticks: Option<(Ticks, tokio::time::Interval)>,
    drops: tokio::sync::watch::Receiver<u64>,
    drops_seen: u64,
}

/// A watch response: the events `receiver` gets, until `timeout`, the server drops watches,
/// or the sender goes; with a bookmark every `every` when `ticks` is given.
pub(crate) fn watch_stream(
    inner: &Arc<Inner>,
    receiver: UnboundedReceiver<Value>,
    timeout: Option<Duration>,
    bookmarks: Option<(ResourceType, UnboundedSender<Value>)>,
) -> Response<ResponseBody> {
    let drops = inner.drops.subscribe();
    let drops_seen = *drops.borrow();
    let interval = inner.bookmark_every;
    let ticks = bookmarks.map(|(resource, sender)| (Arc::clone(inner), resource, sender));
    let watching = Watching {
        receiver,
        deadline: timeout.map(|timeout| tokio::time::Instant::now() + timeout),
        ticks: ticks.map(|ticks| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (ticks, interval)
        }),
        drops,
        drops_seen,
    };
    let stream = futures::stream::unfold(watching, |mut watching| async move {
        loop {
            let next = {
                let Watching { receiver, deadline, ticks, drops, drops_seen } = &mut watching;
                let tick = async {
                    match ticks {
                        Some((_, interval)) => {
                            interval.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let deadline = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(*deadline).await,
                        None => std::future::pending().await,
                    }
                };
                let dropped = async {
                    loop {
                        if drops.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                        if *drops.borrow() != *drops_seen {
                            return;
                        }
                    }
                };
                tokio::select! {
                    biased;
                    event = receiver.recv() => Next::Event(event),
                    () = dropped => Next::Stop,
                    () = deadline => Next::Stop,
                    () = tick => Next::Tick,
                }
            };
            match next {
                Next::Event(Some(event)) => {
                    let line = event_line(&event);
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), watching));
                }
                Next::Event(None) | Next::Stop => return None,
                Next::Tick => {
                    if let Some(((inner, resource, sender), _)) = &watching.ticks {
                        // Sent under the state lock, behind every event already sent.
                        let state = inner.state.lock().expect("state lock");
                        let _ = sender.send(handler::bookmark(resource, state.resource_version));
                    }
                }
            }
        }
    });
    let body = BodyExt::boxed_unsync(StreamBody::new(futures::StreamExt::boxed(stream)));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(body)
        .expect("a valid response")
}

/// One watch event as the real server writes it: `type` before `object`. Clients that decode
/// the object straight from the text (serde's adjacently tagged enums, `RawValue`) need
/// that order.
fn event_line(event: &Value) -> Vec<u8> {
    let kind = serde_json::to_string(&event["type"]).expect("JSON values serialize");
    let object = serde_json::to_string(&event["object"]).expect("JSON values serialize");
    format!("{{\"type\":{kind},\"object\":{object}}}\n").into_bytes()
}
