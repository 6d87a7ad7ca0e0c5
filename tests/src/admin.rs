//! The admin trigger served in-process on a free port for a test, with
//! one token holding every scope.

use lambdex::admin::{self, AdminState, hash_token, new_token};
use lambdex::config::{AdminToken, Config, Scope};
use lambdex::lambda::client as lambda_client;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio_util::sync::CancellationToken;

use crate::world::World;

/// A running admin server and a token it takes.
#[derive(Debug)]
pub struct Admin {
    pub url: String,
    /// A token with every scope, named `support`.
    pub token: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Admin {
    /// Serves `world`'s settings, changed by `adjust`, with one token.
    pub async fn start(world: &World, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = world.config.clone();
        let token = new_token().expect("random bytes");
        config.admin.tokens = vec![AdminToken {
            name: "support".to_owned(),
            sha256: hash_token(&token),
            scopes: Some(Scope::ALL.into()),
        }];
        config.admin.rate_per_token = 1000.try_into().expect("not zero");
        config.admin.burst_per_token = 1000.try_into().expect("not zero");
        adjust(&mut config);
        let lambda = lambda_client::local(&world.lambda.endpoint_url());
        let (state, _sink) = AdminState::new(config, lambda)
            .await
            .expect("the admin state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(admin::serve(listener, state, shutdown.clone()));
        Self {
            url,
            token,
            http: reqwest::Client::new(),
            shutdown,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Sends only the head of an image upload of `length` bytes, asking to
    /// hear back before the body goes, and returns the answer's status line.
    pub async fn answer_to_upload_head(&self, length: usize) -> String {
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        let head = format!(
            "POST /v1/predictions HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {}\r\nContent-Type: image/jpeg\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n",
            self.token
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("sends the head");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .expect("an answer");
        line
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
