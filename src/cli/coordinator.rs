//! `atheria coordinator`: the meeting point of a training run over several machines.

use std::net::SocketAddr;

use clap::Args;

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Listen on HOST:PORT. Loopback by default: to reach nodes on other machines, bind an
    /// address they can reach (the coordinator has no authentication: use a trusted network).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub bind: SocketAddr,
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    eprintln!(
        "coordinator listening on {}; start each node with: atheria train ... --nodes N --node-rank R --coordinator {} (Ctrl-C stops it)",
        args.bind, args.bind
    );
    atheria::app::train::parallel::coordinator(args.bind)?;
    Ok(())
}
