//! Who may read `/metrics`: the API server says (TokenReview, then SubjectAccessReview), and
//! what it said is remembered, within bounds a caller cannot push.
//!
//! # What a caller can make the operator hold or send
//!
//! - A token is never kept: answers are remembered by the token's SHA-256.
//! - An `Authorization` header longer than [`TOKEN_BYTES`] is refused (401) before anything is
//!   asked; the port's header limit (16 KiB) bounds the rest of a request.
//! - Tokens the API server authenticated are remembered apart from those it did not, each in
//!   a cache of bounded size with a time to live: strangers' tokens cannot push out the
//!   answer about a scraper's.
//! - Concurrent requests with one token share one review.
//! - A token not seen authenticated in the last [`KNOWN_FOR`] is reviewed only within a rate
//!   ([`STRANGER_REVIEWS_PER_SECOND`], bursts of [`STRANGER_BURST`]); past it the caller gets
//!   429 with `Retry-After`. A scraper's token, once authenticated, is reviewed again each
//!   [`REMEMBER_FOR`] without that limit, so a flood of strangers never locks it out.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use governor::Quota;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authentication::v1::TokenReviewSpec;
use k8s_openapi::api::authorization::v1::NonResourceAttributes;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use kube::Api;
use kube::Client;
use kube::api::PostParams;
use moka::future::Cache;

/// How long an answer about a token is remembered: a scrape every few seconds costs the API
/// server two calls a minute.
pub(super) const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// How long a token the API server authenticated stays known (its re-reviews skip the
/// strangers' rate), counted from its last use.
pub(super) const KNOWN_FOR: Duration = Duration::from_secs(15 * 60);
/// How many authenticated tokens are remembered (each entry is a hash and a verdict).
const AUTHENTICATED_AT_MOST: u64 = 1024;
/// How many tokens the API server refused are remembered.
const REFUSED_AT_MOST: u64 = 4096;
/// The longest `Authorization` header read. A ServiceAccount token is 1 to 2 KiB.
pub(super) const TOKEN_BYTES: usize = 8 * 1024;
/// Reviews a second of tokens not known.
pub(super) const STRANGER_REVIEWS_PER_SECOND: u32 = 5;
/// Reviews of tokens not known that may come at once.
pub(super) const STRANGER_BURST: u32 = 20;

/// What the API server said about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Allowed,
    /// No token, one too long to read, or one the API server does not accept (for the
    /// audience asked, if any).
    Unauthenticated,
    /// Authenticated as `user`, and not allowed to get `/metrics`.
    Forbidden {
        user: String,
    },
    /// A token not known, past the rate at which such tokens are reviewed: try again later.
    Busy,
}

/// Why a review gave no verdict to remember.
#[derive(Debug)]
enum Unremembered {
    /// Refused by the API server: remembered apart.
    Refused,
    /// Over the strangers' rate.
    Busy,
    /// The API server could not be asked.
    Api(kube::Error),
}

type TokenHash = [u8; 32];

/// Asks the API server who a bearer token belongs to and whether they may get `/metrics`,
/// and remembers the answer for a while.
pub(super) struct Reviewer {
    client: Client,
    /// Audiences the token must be meant for (TokenReview `spec.audiences`); empty: the API
    /// server's own.
    audiences: Vec<String>,
    /// Verdicts about tokens the API server authenticated (allowed or forbidden).
    authenticated: Cache<TokenHash, Verdict>,
    /// Tokens authenticated within [`KNOWN_FOR`]: their reviews skip the strangers' rate.
    known: Cache<TokenHash, ()>,
    /// Tokens the API server did not authenticate.
    refused: Cache<TokenHash, ()>,
    strangers: DefaultDirectRateLimiter,
}

impl Reviewer {
    pub(super) fn new(client: Client, audiences: Vec<String>) -> Self {
        Self::remembering_for(client, audiences, REMEMBER_FOR)
    }

    fn remembering_for(client: Client, audiences: Vec<String>, remember_for: Duration) -> Self {
        let rate = NonZeroU32::new(STRANGER_REVIEWS_PER_SECOND).expect("not zero");
        let burst = NonZeroU32::new(STRANGER_BURST).expect("not zero");
        Self {
            client,
            audiences,
            authenticated: Cache::builder()
                .max_capacity(AUTHENTICATED_AT_MOST)
                .time_to_live(remember_for)
                .build(),
            known: Cache::builder().max_capacity(AUTHENTICATED_AT_MOST).time_to_idle(KNOWN_FOR).build(),
            refused: Cache::builder().max_capacity(REFUSED_AT_MOST).time_to_live(remember_for).build(),
            strangers: governor::RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// The verdict on the `Authorization` header given.
    ///
    /// # Errors
    ///
    /// When the API server could not be asked.
    pub(super) async fn verdict(&self, authorization: Option<&[u8]>) -> Result<Verdict, String> {
        let Some(token) = bearer_token(authorization) else { return Ok(Verdict::Unauthenticated) };
        let hash = token_hash(token);
        if self.refused.contains_key(&hash) {
            return Ok(Verdict::Unauthenticated);
        }
        let reviewed = self
            .authenticated
            .try_get_with(hash, async {
                if !self.known.contains_key(&hash) && self.strangers.check().is_err() {
                    return Err(Unremembered::Busy);
                }
                match self.review(token).await {
                    Ok(Verdict::Unauthenticated) => {
                        self.refused.insert(hash, ()).await;
                        Err(Unremembered::Refused)
                    }
                    Ok(verdict) => {
                        self.known.insert(hash, ()).await;
                        Ok(verdict)
                    }
                    Err(error) => Err(Unremembered::Api(error)),
                }
            })
            .await;
        match reviewed {
            Ok(verdict) => {
                // Keeps it known while it is used.
                let _ = self.known.get(&hash).await;
                Ok(verdict)
            }
            // Shared with every request for the same token that waited on this review.
            Err(error) => match &*error {
                Unremembered::Refused => Ok(Verdict::Unauthenticated),
                Unremembered::Busy => Ok(Verdict::Busy),
                Unremembered::Api(error) => Err(error.to_string()),
            },
        }
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let reviewed =
            Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        // Asked for audiences, the API server answers the ones the token is meant for; none of
        // them is a token for something else.
        let meant_for_us = self.audiences.is_empty()
            || status.audiences.as_ref().is_some_and(|audiences| !audiences.is_empty());
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true) && meant_for_us) else {
            tracing::debug!("a /metrics caller's token was not accepted by the API server");
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let username = user.username.unwrap_or_default();
        if decided.status.is_some_and(|status| status.allowed) {
            tracing::debug!(user = %username, "allowed to get /metrics");
            Ok(Verdict::Allowed)
        } else {
            tracing::debug!(user = %username, "not allowed to get /metrics");
            Ok(Verdict::Forbidden { user: username })
        }
    }

    /// How many tokens are remembered now, authenticated and refused.
    #[cfg(test)]
    async fn remembered(&self) -> (u64, u64) {
        self.authenticated.run_pending_tasks().await;
        self.refused.run_pending_tasks().await;
        (self.authenticated.entry_count(), self.refused.entry_count())
    }
}

/// The bearer token of an `Authorization` header, if it has one no longer than
/// [`TOKEN_BYTES`].
fn bearer_token(authorization: Option<&[u8]>) -> Option<&str> {
    let header = authorization.filter(|header| header.len() <= TOKEN_BYTES)?;
    let (scheme, token) = std::str::from_utf8(header).ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_caller_without_a_usable_bearer_token_is_not_authenticated_and_nothing_is_asked() {
        let reviewer = Reviewer::new(crate::cache::test_support::offline_client(), Vec::new());
        let long = format!("Bearer {}", "x".repeat(TOKEN_BYTES));
        for header in [
            None,
            Some(&b""[..]),
            Some(b"Basic dXNlcjpwYXNz"),
            Some(b"Bearer "),
            Some(b"Bearer"),
            Some(b"Bearer \xff\xfe"),
            Some(long.as_bytes()),
        ] {
            assert_eq!(reviewer.verdict(header).await.unwrap(), Verdict::Unauthenticated, "{header:?}");
        }
        assert_eq!(reviewer.remembered().await, (0, 0));
    }

    /// An API server that authenticates tokens starting with `good-` (as the user named by
    /// the rest) and lets `good-reader` get `/metrics`; each TokenReview takes 20 ms, and the
    /// count of them is kept.
    fn api_server() -> (Client, Arc<AtomicUsize>) {
        let (service, mut handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let reviews = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reviews);
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let mut object: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    if path.ends_with("/tokenreviews") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let token = object["spec"]["token"].as_str().unwrap().to_owned();
                        object["status"] = match token.strip_prefix("good-") {
                            Some(user) => json!({ "authenticated": true, "user": { "username": user } }),
                            None => json!({ "authenticated": false }),
                        };
                    } else {
                        let allowed = object["spec"]["user"] == "reader";
                        object["status"] = json!({ "allowed": allowed });
                    }
                    let body = kube::client::Body::from(serde_json::to_vec(&object).unwrap());
                    respond.send_response(http::Response::builder().status(201).body(body).unwrap());
                });
            }
        });
        (Client::new(service, "default"), reviews)
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_review_per_token_strangers_within_a_rate_and_a_known_scraper_never_locked_out() {
        let (client, reviews) = api_server();
        let reviewer = Arc::new(Reviewer::remembering_for(client, Vec::new(), Duration::from_millis(300)));
        let ask = |token: String| {
            let reviewer = Arc::clone(&reviewer);
            async move { reviewer.verdict(Some(&bearer(&token))).await.unwrap() }
        };

        // A hundred requests with one token at once: one review, one answer for all.
        let verdicts = futures::future::join_all((0..100).map(|_| ask("good-reader".to_owned()))).await;
        assert!(verdicts.iter().all(|verdict| *verdict == Verdict::Allowed), "{verdicts:?}");
        assert_eq!(reviews.load(Ordering::SeqCst), 1);
        assert_eq!(ask("good-other".to_owned()).await, Verdict::Forbidden { user: "other".to_owned() });
        assert_eq!(reviews.load(Ordering::SeqCst), 2);

        // Two thousand strangers, each with a token of its own: reviewed only within the rate,
        // the rest told to come back later.
        let started = std::time::Instant::now();
        let verdicts = futures::future::join_all((0..2000).map(|n| ask(format!("stranger-{n}")))).await;
        let elapsed = started.elapsed().as_secs_f64();
        let reviewed = reviews.load(Ordering::SeqCst) - 2;
        let bound = f64::from(STRANGER_BURST) + f64::from(STRANGER_REVIEWS_PER_SECOND) * (elapsed + 1.0);
        assert!((reviewed as f64) <= bound, "{reviewed} reviews in {elapsed} s (bound {bound})");
        let busy = verdicts.iter().filter(|verdict| **verdict == Verdict::Busy).count();
        assert_eq!(busy + reviewed, 2000, "every other stranger is told to wait: {verdicts:?}");
        let (authenticated, refused) = reviewer.remembered().await;
        assert_eq!((authenticated, refused), (2, reviewed as u64), "only refused tokens reviewed are kept");

        // A token refused once is answered from memory.
        let refused_one = verdicts.iter().position(|verdict| *verdict == Verdict::Unauthenticated).unwrap();
        let before = reviews.load(Ordering::SeqCst);
        assert_eq!(ask(format!("stranger-{refused_one}")).await, Verdict::Unauthenticated);
        assert_eq!(reviews.load(Ordering::SeqCst), before);

        // The scraper's answer has expired and the strangers' rate is spent: the scraper is
        // known, so it is reviewed again all the same.
        tokio::time::sleep(Duration::from_millis(400)).await;
        while reviewer.strangers.check().is_ok() {}
        assert_eq!(ask("good-reader".to_owned()).await, Verdict::Allowed);
        assert_eq!(reviews.load(Ordering::SeqCst), before + 1);
        assert_eq!(ask("good-new".to_owned()).await, Verdict::Busy, "a stranger, over the rate");
    }

    #[test]
    fn tokens_are_remembered_by_their_hash() {
        assert_eq!(bearer_token(Some(b"bearer  abc ")), Some("abc"));
        assert_ne!(token_hash("abc"), token_hash("abd"));
        assert_eq!(token_hash("abc")[..4], [0xba, 0x78, 0x16, 0xbf], "SHA-256");
    }
}
