//! The simulated process's connection to the in-memory server: every request waits until the
//! simulator answers it, and every watch event until the simulator delivers it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::task::Context;
use std::task::Poll;

use bytes::Bytes;
use http::Request;
use http::Response;
use http_body_util::BodyExt as _;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::memory::MemoryServer;
use crate::memory::ResponseBody;

/// A request the process sent and the simulator has not answered yet.
pub(crate) struct Pending {
    /// What orders it among the others: method, URI and body, not when it was sent (which a
    /// process's tasks decide in an order of their own).
    pub(crate) key: (String, String, Bytes),
    pub(crate) request: Request<Bytes>,
    reply: oneshot::Sender<Response<ResponseBody>>,
}

impl Pending {
    pub(crate) fn is_write(&self) -> bool {
        !matches!(self.key.0.as_str(), "GET" | "HEAD")
    }

    /// `PATCH /apis/.../widgets/a`: what the trace says of it.
    pub(crate) fn describe(&self) -> String {
        let uri = &self.key.1;
        let path = uri.split('?').next().unwrap_or(uri);
        format!("{} {path}", self.key.0)
    }

    pub(crate) fn answer(self, response: Response<ResponseBody>) {
        let _ = self.reply.send(response);
    }
}

/// A watch the process opened: the events the server sent it, and those the simulator let
/// through.
pub(crate) struct Pipe {
    /// Its URI (with the resourceVersion it started from), and its place among watches of the
    /// same URI.
    pub(crate) key: (String, u64),
    pub(crate) arrived: VecDeque<Bytes>,
    deliver: Option<UnboundedSender<Bytes>>,
    pump: tokio::task::AbortHandle,
    /// The server ended it (its stream closed).
    pub(crate) ended: bool,
}

impl Pipe {
    /// Sends the first arrived event to the process: what it said, and the event.
    pub(crate) fn deliver_one(&mut self) -> Option<(String, serde_json::Value)> {
        let event = self.arrived.pop_front()?;
        let summary = (summarize(&event), serde_json::from_slice(&event).unwrap_or_default());
        if let Some(deliver) = &self.deliver {
            let _ = deliver.send(event);
        }
        self.release_bookmarks();
        Some(summary)
    }

    /// Bookmarks at the head go through on their own: they carry no change.
    fn release_bookmarks(&mut self) {
        while self.arrived.front().is_some_and(is_bookmark) {
            let event = self.arrived.pop_front().unwrap_or_default();
            if let Some(deliver) = &self.deliver {
                let _ = deliver.send(event);
            }
        }
        if self.ended && self.arrived.is_empty() {
            self.deliver = None;
        }
    }

    /// Keeps only the newest undelivered event of each object, as a process that fell behind
    /// sees them (its queue merges what it has not handled yet; a relist shows only the last
    /// state): how many were dropped.
    pub(crate) fn coalesce(&mut self) -> usize {
        let before = self.arrived.len();
        let mut newer = std::collections::BTreeSet::new();
        let mut kept: VecDeque<Bytes> = VecDeque::with_capacity(before);
        for event in self.arrived.drain(..).rev() {
            let older = object_of(&event).is_some_and(|object| !newer.insert(object));
            if !older {
                kept.push_front(event);
            }
        }
        self.arrived = kept;
        before - self.arrived.len()
    }

    /// Whether two undelivered events are of one object.
    pub(crate) fn can_coalesce(&self) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        self.arrived.iter().filter_map(object_of).any(|object| !seen.insert(object))
    }

    /// Whether an undelivered event of `kind` (`DELETED`, ...) is of the object with `uid`.
    pub(crate) fn holds(&self, kind: &str, uid: &str) -> bool {
        self.arrived.iter().any(|event| {
            serde_json::from_slice::<serde_json::Value>(event)
                .is_ok_and(|event| event["type"] == kind && event["object"]["metadata"]["uid"] == uid)
        })
    }

    /// Whether it is open and watches objects of `plural`.
    pub(crate) fn watches(&self, plural: &str) -> bool {
        !self.closed()
            && self.key.0.split('?').next().is_some_and(|path| path.ends_with(&format!("/{plural}")))
    }

    /// Ends the watch as a cut connection would: what had not been delivered is lost.
    pub(crate) fn cut(&mut self) {
        self.pump.abort();
        self.arrived.clear();
        self.deliver = None;
        self.ended = true;
    }

    pub(crate) fn closed(&self) -> bool {
        self.deliver.is_none()
    }
}

/// The uid of an event's object (none for a bookmark or an error).
fn object_of(event: &Bytes) -> Option<String> {
    let event = serde_json::from_slice::<serde_json::Value>(event).ok()?;
    if event["type"] == "BOOKMARK" || event["type"] == "ERROR" {
        return None;
    }
    event["object"]["metadata"]["uid"].as_str().map(str::to_owned)
}

fn is_bookmark(event: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(event).is_ok_and(|event| event["type"] == "BOOKMARK")
}

/// `MODIFIED Widget ns/a`, from one watch event's JSON.
fn summarize(event: &Bytes) -> String {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(event) else {
        return "an undecodable event".to_owned();
    };
    let object = &event["object"];
    let metadata = &object["metadata"];
    let place = match metadata["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{}", metadata["name"].as_str().unwrap_or_default()),
        None => metadata["name"].as_str().unwrap_or_default().to_owned(),
    };
    format!(
        "{} {} {place}",
        event["type"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default()
    )
}

/// What the simulator and the process share: the requests waiting and the open watches.
#[derive(Default)]
pub(crate) struct Wire {
    pub(crate) pending: Vec<Pending>,
    pub(crate) pipes: Vec<Pipe>,
    /// Watches opened so far per URI, to tell apart two of the same.
    opened: std::collections::BTreeMap<String, u64>,
}

impl Wire {
    /// The requests in their fixed order.
    pub(crate) fn sort(&mut self) {
        self.pending.sort_by(|a, b| a.key.cmp(&b.key));
        self.pipes.retain(|pipe| !(pipe.closed() && pipe.arrived.is_empty()));
        self.pipes.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Forgets everything of a process that crashed.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        for pipe in &mut self.pipes {
            pipe.cut();
        }
        self.pipes.clear();
        self.opened.clear();
    }
}

/// The `tower::Service` a simulated process's `kube::Client` sends through.
#[derive(Clone)]
pub(crate) struct Transport {
    pub(crate) wire: Arc<Mutex<Wire>>,
    pub(crate) server: MemoryServer,
}

impl tower::Service<Request<kube::client::Body>> for Transport {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
            let request = Request::from_parts(parts, bytes);
            Ok(this.send(request).await)
        })
    }
}

impl Transport {
    async fn send(&self, request: Request<Bytes>) -> Response<ResponseBody> {
        let uri = request.uri().to_string();
        let watch = request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
        if watch {
            return self.open_watch(uri, request).await;
        }
        // Events are the process's report, not its state: they go through at once.
        if request.uri().path().contains("/events") {
            return self.server.answer(request).await;
        }
        let (reply, answered) = oneshot::channel();
        let key = (request.method().to_string(), uri, request.body().clone());
        self.wire.lock().unwrap_or_else(PoisonError::into_inner).pending.push(Pending {
            key,
            request,
            reply,
        });
        match answered.await {
            Ok(response) => response,
            // The simulator is gone: the process is ending anyway.
            Err(_) => std::future::pending().await,
        }
    }

    /// Opens the watch on the server at once, and holds its events for the simulator.
    async fn open_watch(&self, uri: String, request: Request<Bytes>) -> Response<ResponseBody> {
        let response = self.server.answer(request).await;
        if !response.status().is_success() {
            return response;
        }
        let (parts, mut body) = response.into_parts();
        let (deliver, delivered) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let wire = Arc::clone(&self.wire);
        let mut guard = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = guard.opened.entry(uri.clone()).or_default();
        *seen += 1;
        let key = (uri, *seen);
        let pump_key = key.clone();
        let pump = tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                let mut wire = wire.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(pipe) = wire.pipes.iter_mut().find(|pipe| pipe.key == pump_key) else { return };
                for line in data.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()) {
                    pipe.arrived.push_back(Bytes::copy_from_slice(line));
                }
                pipe.release_bookmarks();
            }
            let mut wire = wire.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pipe) = wire.pipes.iter_mut().find(|pipe| pipe.key == pump_key) {
                pipe.ended = true;
                pipe.release_bookmarks();
            }
        })
        .abort_handle();
        guard.pipes.push(Pipe { key, arrived: VecDeque::new(), deliver: Some(deliver), pump, ended: false });
        drop(guard);
        let stream = futures::stream::unfold(delivered, |mut delivered| async move {
            let mut event = delivered.recv().await?.to_vec();
            event.push(b'\n');
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), delivered))
        });
        Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
    }
}
