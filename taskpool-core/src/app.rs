//! Wiring of `serve`: load the stored view, follow the bus, serve the API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use service_kit::connect::CONNECT_DEADLINE;
use service_kit::{connect_with_retry, serve_until_stopped};
use taskpool_api::{BusClient, ClientConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::api::{self, ApiState};
use crate::config::ServeConfig;
use crate::identity::{AuthConfig, Authenticator};
use crate::metrics::Metrics;
use crate::projection::{self, Projector};
use crate::store::Store;

pub struct App {
    listener: TcpListener,
    state: Arc<ApiState>,
    projector: Projector,
    stop: watch::Sender<bool>,
}

impl App {
    /// Checks the configuration, connects, loads the stored view and binds the listener.
    pub async fn build(config: ServeConfig) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        let pem = match &config.jwt_public_key {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --jwt-public-key {}: {e}", path.display())
            })?),
            None => None,
        };
        let auth = Authenticator::new(AuthConfig {
            hs256_secret: config.jwt_secret.as_deref(),
            rs256_public_key_pem: pem.as_deref(),
            issuer: config.jwt_issuer.as_deref(),
            audience: config.jwt_audience.as_deref(),
            trust_headers: config.trust_identity_headers,
        })
        .map_err(anyhow::Error::msg)?;
        let bus = BusClient::new(ClientConfig::new(
            config.view.bus.clone(),
            config.view.bus_token.clone(),
        ))?;
        let metrics = Metrics::new();
        let store = connect_store(&config.view.mongo_url, &config.view.database).await?;
        let realms = config.realms().map_err(anyhow::Error::msg)?;
        let (projector, projection) =
            Projector::load(store.clone(), bus.clone(), metrics.clone(), realms)
                .await
                .map_err(|e| anyhow::anyhow!("cannot load the view: {e}"))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(ApiState {
            projection,
            auth,
            bus,
            store,
            metrics,
            streams: Arc::new(Semaphore::new(config.max_streams)),
            stop: stop_rx,
            config,
        });
        Ok(App {
            listener,
            state,
            projector,
            stop,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops taking requests, ends streams and lets
    /// the projection finish its current write.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            projector,
            stop,
        } = self;
        tracing::info!(listen = %listener.local_addr()?, database = %state.config.view.database, "taskpool-core listening");
        let projecting = tokio::spawn(projector.run(stop.subscribe()));
        let lag = tokio::spawn(projection::watch_lag(
            state.projection.clone(),
            state.bus.clone(),
            state.metrics.clone(),
            Duration::from_secs(2),
            stop.subscribe(),
        ));
        let served = serve_until_stopped(listener, api::router(state), shutdown, &stop).await;
        let _ = projecting.await;
        let _ = lag.await;
        served
    }
}

/// Waits for MongoDB (it may start after this service) and creates the collections and indexes.
async fn connect_store(url: &str, database: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url, database).await?;
    connect_with_retry("the view store (--mongo-url)", CONNECT_DEADLINE, || {
        store.prepare()
    })
    .await?;
    Ok(store)
}
