//! Flow 2, `vaultctl etcd join --cluster URL`: this host's member joins the (recovered) cluster.
//! As the runbook does it: stop etcd here, `member add` through the API, move the old data dir
//! aside, rewrite etcd.conf with the `ETCD_INITIAL_CLUSTER` the add returns and
//! `ETCD_INITIAL_CLUSTER_STATE=existing`, start, and wait until the member is healthy and caught up.

use crate::error::{Error, Result};
use crate::host::etcd_conf::{InitialMember, join_edit};
use crate::host::{HostAction, ServiceOp};

use super::cluster::{self, same_urls};
use super::options::FlowOptions;
use super::plan::{Plan, Step, as_initial_cluster};
use super::preflight::{self, Check};

/// The plan for `etcd join` and its pre-flight checks (nothing is changed by either).
pub async fn plan_join(opts: &FlowOptions, cluster_urls: &[String]) -> Result<(Plan, Vec<Check>)> {
    let me = opts.local_member()?;
    if cluster_urls.is_empty() {
        return Err(Error::usage("etcd join needs --cluster URL (a client URL of a healthy member)"));
    }
    let etcd = me.etcd(cluster_urls);
    let mut client = cluster::connect(&etcd).await?;
    let members = cluster::members(&mut client).await?;
    let mut checks = Vec::new();

    if let Some(m) = members.iter().find(|m| m.name == me.name && !m.is_unstarted()) {
        return Err(Error::usage(format!(
            "member {} ({}) is already in the cluster at {}",
            me.name,
            m.id_hex(),
            cluster_urls.join(",")
        ))
        .hint(format!(
            "if it failed and this host replaces it, remove it first: vaultctl etcd member remove {}",
            me.name
        )));
    }
    let mine_added = members.iter().any(|m| m.is_unstarted() && same_urls(&m.peer_urls, &me.peer_urls));
    let mut expect = as_initial_cluster(&members, &me.name, &me.peer_urls);
    if !mine_added {
        expect.push(InitialMember {
            name: me.name.clone(),
            peer_urls: me.peer_urls.clone(),
        });
    }
    match members.iter().find(|m| m.is_unstarted() && !same_urls(&m.peer_urls, &me.peer_urls)) {
        Some(m) => checks.push(Check::fail(
            "one member at a time",
            format!("member {} ({}) was added but has not started", m.id_hex(), m.peer_urls.join(",")),
            "finish joining that member first, or remove it (`vaultctl etcd member remove ID`)",
        )),
        None => checks.push(Check::pass("one member at a time", "no other added member is waiting to start")),
    }
    let mut db_size = 0u64;
    match cluster::healthy(&cluster_urls[0], &etcd).await {
        Ok(st) => {
            checks.push(Check::pass(
                "cluster healthy",
                format!(
                    "{} answers: etcd {}, {} member(s), revision {}",
                    cluster_urls[0],
                    st.version,
                    members.len(),
                    st.revision
                ),
            ));
            db_size = st.db_size;
        }
        Err(why) => checks.push(Check::fail(
            "cluster healthy",
            format!("{} is not healthy: {why}", cluster_urls[0]),
            "recover the first member first (`vaultctl etcd recover`), then join",
        )),
    }
    let n = expect.len();
    if n.is_multiple_of(2) {
        checks.push(Check::warn(
            "member count",
            format!(
                "the cluster will have {n} members: a quorum is {}, so it still tolerates only {} failure(s); add one more",
                cluster::quorum(n),
                n - cluster::quorum(n)
            ),
        ));
    }
    let state = me.service.status(&me.host).unwrap_or(crate::host::ServiceState::Unknown);
    checks.push(preflight::etcd_binary(&me.host, &me.service, opts.etcd_binary.as_deref(), None));
    checks.push(preflight::ports_free(&me.conf, &state));
    let data_parent = me.data_dir.parent().unwrap_or(std::path::Path::new("/"));
    checks.push(preflight::disk_space(
        &me.host.path(data_parent),
        data_parent,
        db_size.saturating_mul(2),
    ));

    let edit = join_edit(&me.host.root, &me.conf.host_path, &expect, &[])?;
    let endpoint = me.client_urls[0].clone();
    let steps = vec![
        Step::Host {
            action: HostAction::Service(me.service.clone(), ServiceOp::Stop),
        },
        Step::WaitStopped {
            addrs: me.listen_addrs(),
            timeout_secs: me.timeout_secs,
        },
        Step::MemberAdd {
            name: me.name.clone(),
            peer_urls: me.peer_urls.clone(),
            expect: expect.clone(),
        },
        Step::MoveAside { path: me.replaced_dir() },
        Step::Host {
            action: HostAction::Edit(edit),
        },
        Step::Host {
            action: HostAction::Service(me.service.clone(), ServiceOp::Start),
        },
        Step::WaitCaughtUp {
            name: me.name.clone(),
            endpoint: endpoint.clone(),
            timeout_secs: me.timeout_secs,
        },
    ];
    let summary = vec![
        format!(
            "member {} ({}) on this host, data dir {}, run as {}",
            me.name,
            me.peer_urls.join(","),
            me.data_dir.display(),
            me.service.name()
        ),
        format!(
            "joins the cluster at {} (members now: {})",
            cluster_urls.join(","),
            members
                .iter()
                .map(|m| if m.is_unstarted() {
                    format!("{} (unstarted)", m.id_hex())
                } else {
                    m.name.clone()
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let plan = Plan::new("etcd join", me.host.clone(), etcd, summary, steps, Vec::new());
    Ok((plan, checks))
}
