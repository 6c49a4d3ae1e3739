//! Running a tonic server on a bound loopback or network address, with graceful stop.

use std::net::SocketAddr;

use futures::TryStreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;

/// A server accepting calls on [`RunningServer::addr`].
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// Binds `listen` (port 0 picks a free port) and serves `routes` there.
    pub async fn start(listen: SocketAddr, routes: Routes) -> std::io::Result<Self> {
        Self::start_tls(listen, routes, None).await
    }

    /// Like [`RunningServer::start`], over TLS when `tls` is given.
    pub async fn start_tls(
        listen: SocketAddr,
        routes: Routes,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> std::io::Result<Self> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        // Small answers must not wait for delayed ACKs.
        let incoming = TcpListenerStream::new(listener).map_ok(|stream| {
            let _ = stream.set_nodelay(true);
            stream
        });
        let task = tokio::spawn(async move {
            builder
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls, lets calls in flight finish and waits for the server.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(result) => result.map_err(std::io::Error::other),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
