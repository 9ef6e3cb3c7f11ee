//! `clawdspace port` (a URL for a port of a space) and `clawdspace
//! forward` (a local listener whose connections are tunnelled to the
//! space's port over the API's WebSocket, `GET /api/spaces/{name}/tunnel/{port}`).

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

use crate::api::encode_segment;
use crate::commands::{space_path, CmdResult, Ctx};
use crate::Fail;

impl Ctx<'_> {
    /// `clawdspace port NAME PORT [--public] [--ttl S] [--open]`.
    pub(crate) async fn port(
        &self,
        server: Option<String>,
        name: String,
        port: u16,
        public: bool,
        ttl: Option<u64>,
        open: bool,
    ) -> CmdResult {
        let target = self.find_space(&name, server.as_deref(), false).await?;
        let mut body = json!({"port": port, "public": public});
        if let Some(t) = ttl {
            body["ttlSeconds"] = json!(t);
        }
        let v = self
            .send(
                &target,
                Method::POST,
                &space_path(&name, "/ports"),
                Some(&body),
                None,
            )
            .await?;
        let url = v.get("url").and_then(Value::as_str).unwrap_or_default();
        // The server names itself by the Host it was asked at: ours.
        println!("{url}");
        if let Some(exp) = v.get("expiresAt").and_then(Value::as_str) {
            eprintln!("Anyone with this link can open port {port} of {name} until {exp}.");
        } else if !public {
            eprintln!("Opening it needs the API key (Authorization header or ?key=).");
        }
        if open {
            let opener = if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            };
            if std::process::Command::new(opener).arg(url).spawn().is_err() {
                eprintln!("Could not run {opener}: open the URL yourself.");
            }
        }
        Ok(0)
    }

    /// `clawdspace forward NAME PORT [LOCAL]`: serves until interrupted.
    pub(crate) async fn forward(
        &self,
        server: Option<String>,
        name: String,
        port: u16,
        local: Option<u16>,
    ) -> CmdResult {
        let target = self.find_space(&name, server.as_deref(), false).await?;
        let ws_base = match target.url.split_once("://") {
            Some(("http", rest)) => format!("ws://{rest}"),
            Some(("https", rest)) => format!("wss://{rest}"),
            _ => {
                return Err(Fail::error(format!(
                    "Unsupported server URL {}",
                    target.url
                )))
            }
        };
        let url = format!(
            "{ws_base}/api/spaces/{}/tunnel/{port}",
            encode_segment(&name)
        );
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.api.key()))
            .map_err(|_| Fail::error("The API key contains characters not allowed in a header"))?;
        let local = local.unwrap_or(port);
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .map_err(|e| Fail::error(format!("Cannot listen on 127.0.0.1:{local}: {e}")))?;
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(local);
        println!(
            "Forwarding 127.0.0.1:{bound} -> {name}:{port} on {} (Ctrl-C to stop)",
            target.name
        );
        loop {
            let (conn, _) = listener
                .accept()
                .await
                .map_err(|e| Fail::error(format!("accept: {e}")))?;
            let (url, bearer) = (url.clone(), bearer.clone());
            tokio::spawn(async move {
                if let Err(e) = tunnel(conn, &url, bearer).await {
                    eprintln!("forward: {e}");
                }
            });
        }
    }
}

/// Carries one local connection over a tunnel WebSocket.
async fn tunnel(conn: TcpStream, url: &str, bearer: HeaderValue) -> Result<(), String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(header::AUTHORIZATION, bearer);
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(String::from));
                body.unwrap_or_else(|| format!("HTTP {}", resp.status()))
            }
            e => e.to_string(),
        })?;
    let (mut wtx, mut wrx) = ws.split();
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wtx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // End of our side: the tunnel's half-close (the WebSocket stays
        // open for the answer).
        let _ = wtx.send(Message::Text("eof".into())).await;
    };
    let down = async {
        while let Some(Ok(m)) = wrx.next().await {
            let more = match m {
                Message::Binary(b) => wr.write_all(&b).await.is_ok(),
                Message::Close(_) => false,
                _ => true,
            };
            if !more {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    // The space's side ending ends the connection; ours ending (a
    // half-close) leaves its answer to come.
    tokio::select! {
        _ = down => {}
        _ = async { up.await; std::future::pending::<()>().await } => {}
    }
    Ok(())
}
