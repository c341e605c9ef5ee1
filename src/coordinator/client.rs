//! A typed client of the coordinator's HTTP API: what `streamshield status`, the drill, `local` and the tests read.
//! The types are the API's own ([`super::api`], [`super::model::views`]), so a field renamed on one side does not
//! compile on the other.

use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use super::api::Cluster;
use super::model::{Decision, Event, JobView};

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading the API token {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("asking the coordinator at {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the coordinator at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `base` (`http://host:port`) with the bearer token `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("static client settings"),
        }
    }

    /// A client whose token is read from the coordinator's API token file.
    pub fn with_token_file(base: &str, token_file: &Path) -> Result<Self> {
        let token = std::fs::read_to_string(token_file).map_err(|source| Error::Token {
            path: token_file.display().to_string(),
            source,
        })?;
        Ok(Self::new(base, &token))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let http = |source| Error::Http {
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        resp.json().await.map_err(http)
    }

    pub async fn cluster(&self) -> Result<Cluster> {
        self.get("/v1/cluster").await
    }

    pub async fn decisions(&self) -> Result<Vec<Decision>> {
        self.get("/v1/decisions").await
    }

    /// Events with an id above `since` (at most `limit`, the newest of them).
    pub async fn events(&self, since: u64, limit: usize) -> Result<Vec<Event>> {
        self.get(&format!("/v1/events?since={since}&limit={limit}"))
            .await
    }

    pub async fn jobs(&self) -> Result<Vec<JobView>> {
        self.get("/v1/jobs").await
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base);
        let http = |source| Error::Http {
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http)?;
        resp.text().await.map_err(http)
    }
}
