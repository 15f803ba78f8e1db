//! [`CachingStrategy`]: what a provider does with a namespace it was not given.

/// What a [`StaticApiProvider`](super::StaticApiProvider) does when asked for a namespace it
/// was not built with.
///
/// Measured costs of one lookup are in the [guide](crate::guide::trait_level#caching-strategies)
/// (`cargo bench -p kuberator --bench api_provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CachingStrategy {
    /// Only the namespaces given at start; any other is an error that names it.
    ///
    /// The fastest lookup, and the safest when an operator must stay inside known namespaces.
    #[default]
    Strict,
    /// The namespaces given at start are cached; any other gets a fresh `Api` on every call,
    /// which is not kept.
    Adhoc,
    /// The namespaces given at start are cached; any other is built on first use and cached
    /// from then on.
    Extendable,
}

impl CachingStrategy {
    /// The strategy when none is chosen: `Strict` for a fixed list of namespaces, `Extendable`
    /// when every namespace is watched (an empty list).
    pub fn for_namespaces<S>(namespaces: &[S]) -> Self {
        if namespaces.is_empty() { CachingStrategy::Extendable } else { CachingStrategy::Strict }
    }
}

impl std::fmt::Display for CachingStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CachingStrategy::Strict => "Strict",
            CachingStrategy::Adhoc => "Adhoc",
            CachingStrategy::Extendable => "Extendable",
        })
    }
}
