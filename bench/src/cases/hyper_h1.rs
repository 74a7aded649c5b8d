//! Case 1: hyper HTTP/1.1 client and server, plaintext, one connection per lane.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};

use super::lanes::{AbortOnDrop, H1Lane, serve_h1};
use super::{Case, CaseId};
use crate::Error;
use crate::loadgen::Lane;

/// Case 1.
#[derive(Debug)]
pub struct HyperH1 {
    addr: SocketAddr,
    _server: AbortOnDrop,
}

impl HyperH1 {
    /// Starts the server on a loopback port.
    pub async fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            addr,
            _server: serve_h1(listener),
        })
    }
}

impl Case for HyperH1 {
    fn id(&self) -> CaseId {
        CaseId::HyperH1
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let lane = H1Lane::new(tcp, &self.addr.to_string()).await?;
            Ok(Box::new(lane) as Box<dyn Lane>)
        })
    }

    fn describe(&self) -> String {
        "hyper 1 `client::conn::http1` -> hyper `server::conn::http1`, plaintext, one TCP \
         connection per lane"
            .into()
    }
}
