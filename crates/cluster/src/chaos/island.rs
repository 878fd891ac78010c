//! A network namespace holding one node, linked to this machine's namespace by a veth pair:
//! taking the link down cuts the node off (its packets go nowhere, its connections stall as
//! they would behind a broken switch), taking it up heals it. Needs root and `ip`
//! (iproute2).

use anyhow::{Context, bail};

/// One namespace and its link.
pub(super) struct Island {
    ns: String,
    host_if: String,
    /// This namespace's address on the link.
    pub(super) host_ip: String,
    /// The island's address on the link.
    pub(super) node_ip: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Island {
    /// Creates the namespace and its link, named after this process.
    pub(super) fn create() -> anyhow::Result<Island> {
        let pid = std::process::id();
        let tag = pid % 100_000;
        let island = Island {
            ns: format!("zerostate-chaos-{pid}"),
            host_if: format!("zsc{tag}h"),
            host_ip: format!("10.213.{}.1", pid % 250),
            node_ip: format!("10.213.{}.2", pid % 250),
        };
        let node_if = format!("zsc{tag}n");
        // Whatever fails, Drop removes what was made.
        ip(&["netns", "add", &island.ns])?;
        ip(&[
            "link",
            "add",
            &island.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &node_if,
        ])?;
        ip(&["link", "set", &node_if, "netns", &island.ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", island.host_ip),
            "dev",
            &island.host_if,
        ])?;
        ip(&["link", "set", &island.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", &island.ns];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&[
            "addr",
            "add",
            &format!("{}/30", island.node_ip),
            "dev",
            &node_if,
        ])?;
        inside(&["link", "set", &node_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(island)
    }

    /// The command that runs `program` inside the namespace.
    pub(super) fn command(&self, program: &std::path::Path) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Cuts the link (`true`) or heals it (`false`).
    pub(super) fn cut(&self, cut: bool) -> anyhow::Result<()> {
        ip(&[
            "link",
            "set",
            &self.host_if,
            if cut { "down" } else { "up" },
        ])
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
