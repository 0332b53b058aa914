//! `vaultctl etcd member remove NAME|ID` (flow 3) and `vaultctl etcd member add NAME --peer-url U`
//! (flow 4): plan, pre-flight, and with `--execute` (or `--resume`) the steps through the journal,
//! as `etcd recover` and `etcd join` do.

use std::path::PathBuf;

use vault::Result;
use vault::ops::recovery::FlowContext;
use vault::ops::recovery::member::{MemberFlow, NewMember, plan_member_add, plan_member_remove};

use super::etcd_flow::{FlowArgs, resume, show_or_execute};
use crate::context::Common;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Remove a failed member, then rewrite ETCD_INITIAL_CLUSTER (etcd.conf), etcdClientInfo.urls
    /// (master-config.yaml) and FLANNEL_ETCD_ENDPOINTS (sysconfig/flanneld) on this host (flow 3).
    Remove(Box<RemoveArgs>),
    /// Add a new member: its etcd.conf (and with --issue-certs its certificates) in
    /// /etc/etcd/generated_certs/etcd-NAME/, and the same three rewrites on this host (flow 4).
    Add(Box<AddArgs>),
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The member's name, or its ID in hex as `etcdctl member list` prints it.
    #[arg(required_unless_present = "resume")]
    member: Option<String>,
    /// Run the service restarts the runbook asks for (master API, flanneld) as plan steps.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    flow: FlowArgs,
}

#[derive(clap::Args)]
#[command(mut_arg("peer_urls", |a| a.help("The new member's peer URL (https://HOST:2380)")))]
pub struct AddArgs {
    /// The new member's name (normally its host name).
    #[arg(required_unless_present = "resume")]
    member: Option<String>,
    /// The new member's client URL (default: the peer URL's host on port 2379).
    #[arg(long = "client-url", value_delimiter = ',')]
    client_urls: Vec<String>,
    /// Issue the new member's server and peer certificates from the etcd CA.
    #[arg(long)]
    issue_certs: bool,
    /// The etcd CA directory (ca.crt, ca.key) for --issue-certs.
    #[arg(long, default_value = vault::ops::recovery::certs::ETCD_CA_DIR)]
    ca_dir: PathBuf,
    /// Run the service restarts the runbook asks for (master API, flanneld) as plan steps.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    flow: FlowArgs,
}

pub async fn run_member(c: &Common, cmd: Command) -> Result<i32> {
    match cmd {
        Command::Remove(a) => {
            const FLOW: &str = "etcd member remove";
            if a.flow.resume {
                return resume(c, &a.flow, FLOW).await;
            }
            let target = a.member.clone().unwrap_or_default();
            let flow = MemberFlow {
                restart: a.restart,
                issue_certs: None,
            };
            let (plan, checks) = plan_member_remove(&a.flow.options(), &target, &flow).await?;
            show_or_execute(c, &a.flow, plan, checks, &FlowContext::default()).await
        }
        Command::Add(a) => {
            const FLOW: &str = "etcd member add";
            if a.flow.resume {
                return resume(c, &a.flow, FLOW).await;
            }
            let name = a.member.clone().unwrap_or_default();
            if a.flow.peer_urls.is_empty() {
                return Err(vault::Error::usage(format!("etcd member add {name} needs --peer-url"))
                    .hint("give the new member's peer URL: --peer-url https://HOST:2380"));
            }
            let new = NewMember::new(&name, a.flow.peer_urls.clone(), a.client_urls.clone())?;
            let flow = MemberFlow {
                restart: a.restart,
                issue_certs: a.issue_certs.then(|| a.ca_dir.clone()),
            };
            // --peer-url names the new member here, not this host's
            let mut opts = a.flow.options();
            opts.peer_urls.clear();
            let (plan, checks) = plan_member_add(&opts, &new, &flow).await?;
            show_or_execute(c, &a.flow, plan, checks, &FlowContext::default()).await
        }
    }
}
