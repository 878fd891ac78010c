//! One convention for every address a user gives, in a flag, the environment, a node's file
//! or `devnet.json`: `host:port`, or the same with `http://` or `https://` in front, with or
//! without a trailing `/`. A command that connects turns it into a base URL; a listener
//! takes an IP and a port (plain HTTP, so `http://` at most).

use std::net::SocketAddr;

use serde::Deserialize;

/// The address a command connects to, as a base URL without a trailing `/`:
/// `127.0.0.1:8700` and `http://127.0.0.1:8700/` both give `http://127.0.0.1:8700`.
pub fn base_url(given: &str) -> Result<String, String> {
    let trimmed = given.trim().trim_end_matches('/');
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "{given:?} is not an address: {scheme}:// is not http:// or https:// \
                 (give host:port or http(s)://host:port)"
            ));
        }
        None => ("http", trimmed),
    };
    let valid = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
    });
    if !valid {
        return Err(format!(
            "{given:?} is not an address: give host:port or http(s)://host:port, \
             such as 127.0.0.1:8700"
        ));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The address a listener binds: an IP and a port, `http://` and a trailing `/` allowed
/// (`127.0.0.1:8700`, `http://127.0.0.1:8700/`).
pub fn listen_addr(given: &str) -> Result<SocketAddr, String> {
    let trimmed = given.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    if rest.starts_with("https://") {
        return Err(format!(
            "{given:?}: this listener speaks plain HTTP; give IP:port or http://IP:port"
        ));
    }
    rest.parse().map_err(|_| {
        format!(
            "{given:?} is not an address to listen on: give IP:port or http://IP:port, \
             such as 127.0.0.1:8700"
        )
    })
}

/// A listen address in a configuration file, read by [`listen_addr`].
pub fn deserialize_listen_addr<'de, D>(deserializer: D) -> Result<SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    listen_addr(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// An optional listen address in a configuration file, read by [`listen_addr`].
pub fn deserialize_listen<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer)?
        .map(|s| listen_addr(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_read_the_same_with_or_without_a_scheme() {
        for given in [
            "127.0.0.1:8700",
            "http://127.0.0.1:8700",
            "http://127.0.0.1:8700/",
            " 127.0.0.1:8700/ ",
        ] {
            assert_eq!(base_url(given).unwrap(), "http://127.0.0.1:8700", "{given}");
            assert_eq!(
                listen_addr(given).unwrap(),
                "127.0.0.1:8700".parse::<SocketAddr>().unwrap(),
                "{given}"
            );
        }
        assert_eq!(
            base_url("https://node.example:443").unwrap(),
            "https://node.example:443"
        );
        assert_eq!(base_url("localhost:8700").unwrap(), "http://localhost:8700");
        assert_eq!(base_url("[::1]:8700").unwrap(), "http://[::1]:8700");
    }

    #[test]
    fn what_is_not_an_address_says_what_is() {
        for bad in [
            "",
            "127.0.0.1",
            "http://127.0.0.1",
            "127.0.0.1:port",
            "127.0.0.1:70000",
            "http://127.0.0.1:8700/v1/tasks",
            "ftp://127.0.0.1:21",
            ":8700",
        ] {
            let e = base_url(bad).unwrap_err();
            assert!(e.contains("host:port"), "{bad}: {e}");
        }
        assert!(
            listen_addr("localhost:8700")
                .unwrap_err()
                .contains("IP:port")
        );
        assert!(
            listen_addr("https://127.0.0.1:8700")
                .unwrap_err()
                .contains("plain HTTP")
        );
    }
}
