//! [`Master`]: where a job runs, a connection or a URL.

use crate::client::Client;

/// Where a [`Job`](super::Job) runs: a connected [`Client`] or a master URL.
#[derive(Clone, Debug)]
pub enum Master {
    /// An existing connection.
    Client(Client),
    /// A URL to connect to (`http://127.0.0.1:5050`).
    Url(String),
}

impl From<Client> for Master {
    fn from(client: Client) -> Master {
        Master::Client(client)
    }
}
impl From<&Client> for Master {
    fn from(client: &Client) -> Master {
        Master::Client(client.clone())
    }
}
impl From<&str> for Master {
    fn from(url: &str) -> Master {
        Master::Url(url.to_string())
    }
}
impl From<String> for Master {
    fn from(url: String) -> Master {
        Master::Url(url)
    }
}
impl From<&String> for Master {
    fn from(url: &String) -> Master {
        Master::Url(url.clone())
    }
}
