//! What the coordinator and the webhook share about talking to the API server: a client for $KUBECONFIG or the
//! pod's service account, checked before anything starts, and the permission check (SelfSubjectAccessReview) each
//! runs at start-up to say which of its features a missing RBAC rule turns off.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("kubernetes: no API server to talk to ({problem}); set KUBECONFIG, or run in a pod with a service account, or {off}")]
    NoClient { problem: String, off: &'static str },
    #[error("kubernetes: the API server at {url} does not answer: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: kube::Error,
    },
}

/// A client for the API server of $KUBECONFIG or the pod's service account; checked with a version request. `off`
/// says how to run without the API server (named in the error).
pub async fn client(off: &'static str) -> Result<Client, Error> {
    let no_client = |e: String| Error::NoClient { problem: e, off };
    let config = kube::Config::infer()
        .await
        .map_err(|e| no_client(e.to_string()))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| no_client(e.to_string()))?;
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::Unreachable { url, source })?;
    Ok(client)
}

/// Whether this process may `verb` `group/resource` (in `namespace`, or cluster-wide; the object `name` only, when
/// given: RBAC may grant one name), by a SelfSubjectAccessReview; a review that fails counts as not allowed.
pub async fn allowed(
    client: &Client,
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.to_string()),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => r.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot ask the API server about a permission; taking it as missing");
            false
        }
    }
}

/// Which of `verbs` on `group/resource` (in `namespace`, or cluster-wide) this process may not do, each named as
/// [`permission_text`] names it.
pub async fn missing(
    client: &Client,
    group: &str,
    resource: &str,
    verbs: &[&str],
    namespace: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for verb in verbs {
        if !allowed(client, group, resource, verb, namespace, None).await {
            out.push(permission_text(verb, group, resource, namespace));
        }
    }
    out
}

/// `verb group/resource in namespace ns` (or `(cluster-wide)`), as a missing permission is named.
pub fn permission_text(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> String {
    let group = if group.is_empty() { "core" } else { group };
    match namespace {
        Some(ns) => format!("{verb} {group}/{resource} in namespace {ns}"),
        None => format!("{verb} {group}/{resource} (cluster-wide)"),
    }
}
