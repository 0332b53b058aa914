//! `vaultctl etcd recover ID` (flow 1) and `vaultctl etcd join --cluster URL` (flow 2).

use vault::Result;
use vault::ops::deltas::restore::PointInTime;
use vault::ops::deltas::target::Target;
use vault::ops::recovery::FlowContext;
use vault::ops::recovery::join::plan_join;
use vault::ops::recovery::recover::{plan_recover, replay_to_point};

use super::etcd_flow::{FlowArgs, resume, resume_journal, run, show, show_or_execute};
use crate::context::Common;

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// Snapshot ID (etcd-v3 or etcd-datadir), unique prefix, or `latest` (the newest etcd-v3 one).
    #[arg(required_unless_present_any = ["resume", "revision", "at"], conflicts_with_all = ["revision", "at"])]
    id: Option<String>,
    /// Recover the cluster as it was at this revision (delta segments replayed on the newest
    /// etcd-v3 snapshot before it).
    #[arg(long, conflicts_with = "at")]
    revision: Option<i64>,
    /// Recover the cluster as it was at this time (RFC 3339): the last change received by then.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// With --revision/--at: when a segment needed is missing or damaged, stop at the last whole point.
    #[arg(long)]
    up_to_last_whole: bool,
    /// With --revision/--at: only chains of this job.
    #[arg(long)]
    job: Option<String>,
    /// With --revision/--at: only chains of this etcd cluster.
    #[arg(long)]
    cluster_id: Option<String>,

    #[command(flatten)]
    flow: FlowArgs,
    /// etcdutl or etcdctl to restore a v3 snapshot with (default: etcdutl, else etcdctl, from PATH).
    #[arg(long)]
    etcd_tool: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub struct JoinArgs {
    /// Client URL(s) of the running cluster's members.
    #[arg(long, value_delimiter = ',', required_unless_present = "resume")]
    cluster: Vec<String>,
    #[command(flatten)]
    flow: FlowArgs,
}

pub async fn recover(c: &Common, a: RecoverArgs) -> Result<i32> {
    const FLOW: &str = "etcd recover";
    if a.flow.resume {
        let mut journal = resume_journal(&a.flow, FLOW)?;
        show(c.json, &journal.record.plan, &[], a.flow.force, Some(&journal));
        let id = journal.record.plan.snapshot.clone().unwrap_or_default();
        let staged_left = journal.next_step().is_some_and(|n| {
            journal.record.plan.steps[n..].iter().any(|s| {
                matches!(
                    s,
                    vault::ops::recovery::Step::StageV3 { .. } | vault::ops::recovery::Step::StageDatadir { .. }
                )
            })
        });
        if staged_left {
            let (vault, catalog) = c.restorer(FLOW).await?;
            let snap = catalog.resolve(&id)?;
            let cx = context(&vault, &catalog, &snap, &a);
            run(c.json, &mut journal, &cx).await?;
        } else {
            run(c.json, &mut journal, &FlowContext::default()).await?;
        }
        return Ok(0);
    }
    let (vault, catalog) = c.restorer(FLOW).await?;
    let point = point_in_time(&a)?;
    let snap = match &point {
        Some(p) => {
            let target = vault::ops::deltas::restore::plan(&vault, &catalog, p.target, &p.query()).await?;
            if !c.json {
                super::etcd_point_in_time::print_plan(&target);
                println!();
            }
            catalog.resolve(&target.base.id.hex())?
        }
        None => catalog.resolve_kind(a.id.as_deref().unwrap_or_default(), &vault::format::PayloadKind::EtcdV3)?,
    };
    let (mut plan, checks) = plan_recover(&a.flow.options(), &snap).await?;
    if let Some(p) = point {
        replay_to_point(&mut plan, p)?;
    }
    let cx = context(&vault, &catalog, &snap, &a);
    show_or_execute(c, &a.flow, plan, checks, &cx).await
}

fn point_in_time(a: &RecoverArgs) -> Result<Option<PointInTime>> {
    let target = match (a.revision, &a.at) {
        (Some(r), _) => Target::Revision(r),
        (None, Some(t)) => Target::Time(super::etcd_point_in_time::parse_time("--at", t)?),
        (None, None) => return Ok(None),
    };
    Ok(Some(PointInTime {
        target,
        job: a.job.clone(),
        cluster_id: a.cluster_id.clone(),
        up_to_last_whole: a.up_to_last_whole,
        // --etcd-binary (the flows' own flag) replays too; default: etcd on PATH, /usr/bin/etcd
        etcd_binary: a.flow.etcd_binary.clone(),
    }))
}

fn context<'a>(
    vault: &'a vault::repo::Vault,
    catalog: &'a vault::catalog::Catalog,
    snap: &'a vault::catalog::SnapshotEntry,
    a: &RecoverArgs,
) -> FlowContext<'a> {
    FlowContext {
        vault: Some((vault, catalog, snap)),
        tool: a.etcd_tool.clone(),
        progress: None,
    }
}

pub async fn join(c: &Common, a: JoinArgs) -> Result<i32> {
    if a.flow.resume {
        return resume(c, &a.flow, "etcd join").await;
    }
    let (plan, checks) = plan_join(&a.flow.options(), &a.cluster).await?;
    show_or_execute(c, &a.flow, plan, checks, &FlowContext::default()).await
}
