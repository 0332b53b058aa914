#!/usr/bin/env python3
"""Turn the raw measurements of bench/etcd_v3.sh into tables (markdown on stdout and in
bench/results/*.md) and a JSON record (bench/results/*.json). Standard library only."""
import argparse
import json
import os
import statistics
import sys
from collections import defaultdict


def load_tsv(path, ncols):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= ncols:
                rows.append(parts)
    return rows


def mb(nbytes):
    return nbytes / 1e6


def fmt_mb(nbytes):
    if nbytes is None:
        return "—"
    if abs(nbytes) < 1e6:
        return f"{nbytes / 1e3:,.1f} kB"
    return f"{mb(nbytes):,.2f} MB" if nbytes < 10e6 else f"{mb(nbytes):,.1f} MB"


def fmt_n(x, digits):
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def write_results(outdir, name, record, text):
    """Write NAME.json (the record) and NAME.md (the text) under outdir, and print the text."""
    os.makedirs(outdir, exist_ok=True)
    base = os.path.join(outdir, name)
    with open(base + ".json", "w") as f:
        json.dump(record, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwritten: {base}.md and .json", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", required=True)
    ap.add_argument("--facts", required=True)
    ap.add_argument("--load")
    ap.add_argument("--outdir", required=True)
    a = ap.parse_args()

    facts = {}
    for name, value in load_tsv(a.facts, 2):
        facts[name] = value
    runs = defaultdict(list)  # label -> [dict]
    raw = []
    for label, rep, wall, user, sys_, rss, load1, srv in load_tsv(a.measure, 8):
        r = {"label": label, "rep": int(rep), "wall_s": float(wall), "cpu_s": float(user) + float(sys_),
             "user_s": float(user), "sys_s": float(sys_), "max_rss_kib": int(rss), "load1": float(load1),
             "server_cpu_s": float(srv)}
        runs[label].append(r)
        raw.append(r)

    def walls(label):
        return [r["wall_s"] for r in sorted(runs.get(label, []), key=lambda r: r["rep"])]

    def med(label):
        w = walls(label)
        return statistics.median(w) if w else None

    def summed(*labels):
        """Per-repetition sums of several measurements (e.g. etcdctl save + restic backup)."""
        per = [walls(l) for l in labels]
        if not all(per) or len({len(p) for p in per}) != 1:
            return []
        return [sum(x) for x in zip(*per)]

    summary = {}

    def summarize(key, label=None, values=None, what=""):
        if values is None:
            values = walls(label)
        if not values:
            return
        rs = runs.get(label, []) if label else []
        summary[key] = {
            "what": what,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "n": len(values),
            "cpu_s_median": statistics.median([r["cpu_s"] for r in rs]) if rs else None,
            "server_cpu_s_median": statistics.median([r["server_cpu_s"] for r in rs]) if rs else None,
            "max_rss_mb": max(r["max_rss_kib"] for r in rs) * 1024 / 1e6 if rs else None,
            "load1_median": statistics.median([r["load1"] for r in rs]) if rs else None,
        }

    rows = [
        ("etcdctl_save", "etcdctl snapshot save (local file)"),
        ("vault_first_local", "vaultctl backup etcd, first into an empty local vault"),
        ("vault_repeat_local", "vaultctl backup etcd, repeat (full dedup), local vault"),
        ("vault_first_s3", "vaultctl backup etcd, first into an empty S3 vault (moto)"),
        ("vault_repeat_s3", "vaultctl backup etcd, repeat, S3 vault (moto)"),
        ("restic_backup_first", "restic backup of the saved file, fresh repo"),
        ("restic_backup_repeat", "restic backup of the saved file, repo already holding it"),
        ("vaultfile_first_local", "diagnostic: vault pipeline on the saved file (no etcd), empty vault"),
        ("sha256sum_file", "diagnostic: sha256sum of the saved file"),
        ("vault_restore", "vaultctl restore (cold catalog, fsync) from the local vault"),
        ("restic_restore", "restic restore latest (no fsync)"),
    ]
    for label, what in rows:
        summarize(label, label, what=what)
    summarize("script_first", values=summed("etcdctl_save", "restic_backup_first"),
              what="etcdctl snapshot save + restic backup (fresh repo)")
    summarize("script_repeat", values=summed("etcdctl_save", "restic_backup_repeat"),
              what="etcdctl snapshot save + restic backup (repo holding it)")
    summarize("restic_restore_fsync", values=summed("restic_restore", "restic_restore_fsync"),
              what="restic restore latest + sync of the restored file")

    def rep_values(key):
        if key == "script_first":
            return summed("etcdctl_save", "restic_backup_first")
        if key == "script_repeat":
            return summed("etcdctl_save", "restic_backup_repeat")
        if key == "restic_restore_fsync":
            return summed("restic_restore", "restic_restore_fsync")
        return walls(key)

    def ratio(num, den):
        n, d = summary.get(num), summary.get(den)
        return n["median_s"] / d["median_s"] if n and d and d["median_s"] > 0 else None

    ratios = []

    def add_ratio(name, num, den, target, op="<="):
        v = ratio(num, den)
        if v is None:
            return
        ok = None if target is None else (v <= target)
        # paired ratios: repetition i of both sides ran back to back, under the same background load
        n, d = rep_values(num), rep_values(den)
        paired = [x / y for x, y in zip(n, d)] if len(n) == len(d) and all(y > 0 for y in d) else []
        ratios.append({"ratio": name, "numerator": num, "denominator": den, "value": v, "target": target, "ok": ok,
                       "paired": paired})

    add_ratio("1a vault first backup / etcdctl save", "vault_first_local", "etcdctl_save", 1.15)
    add_ratio("1b vault repeat backup / etcdctl save", "vault_repeat_local", "etcdctl_save", 1.15)
    add_ratio("2a vault first backup to S3 / etcdctl save", "vault_first_s3", "etcdctl_save", 1.15)
    add_ratio("2b vault repeat backup to S3 / etcdctl save", "vault_repeat_s3", "etcdctl_save", 1.15)
    add_ratio("3a vault first / (etcdctl save + restic, fresh repo)", "vault_first_local", "script_first", 0.6)
    add_ratio("3b vault repeat / (etcdctl save + restic, repeat)", "vault_repeat_local", "script_repeat", 0.6)
    add_ratio("6a vault restore / restic restore", "vault_restore", "restic_restore", 1.0)
    add_ratio("6b vault restore / (restic restore + fsync)", "vault_restore", "restic_restore_fsync", 1.0)
    add_ratio("diag: vault pipeline on file / etcdctl save", "vaultfile_first_local", "etcdctl_save", None)

    # 5. peak RSS of vaultctl backup etcd
    rss_runs = [r for r in raw if r["label"].startswith(("vault_first", "vault_repeat", "dedup_vault_etcd", "chunks_first"))]
    peak_rss = None
    if rss_runs:
        top = max(rss_runs, key=lambda r: r["max_rss_kib"])
        peak_rss = {"max_rss_mb": top["max_rss_kib"] * 1024 / 1e6, "label": top["label"], "target_mb": 200,
                    "ok": top["max_rss_kib"] * 1024 / 1e6 <= 200,
                    "by_label": {l: max(r["max_rss_kib"] for r in runs[l]) * 1024 / 1e6
                                 for l in sorted({r["label"] for r in rss_runs})}}

    # 4. dedup
    dedup = []
    tools = [("r-dedup", "restic (files)", "dedup_restic"), ("b-dedup", "borg zstd,3 (files)", "dedup_borg"),
             ("v-dedup-etcd", "vault (captures from etcd)", "dedup_vault_etcd"),
             ("v-dedup-file", "vault (same files, bench ingest)", "dedup_vault_file")]
    for key, name, lab in tools:
        if f"dedup_after_B.{key}" not in facts:
            continue
        e, fa, fb = (int(facts[f"dedup_{s}.{key}"]) for s in ("empty", "after_A", "after_B"))
        fc = int(facts[f"dedup_after_C.{key}"]) if f"dedup_after_C.{key}" in facts else None
        dedup.append({"tool": name, "key": key, "repo_empty": e, "after_A": fa, "after_B": fb, "after_C": fc,
                      "growth_A": fa - e, "growth_B": fb - fa, "growth_C": None if fc is None else fc - fb, "total": fb,
                      "time_A_s": med(lab + "_A"), "time_B_s": med(lab + "_B"), "time_C_s": med(lab + "_C")})
    dedup_checks = []
    if dedup:
        others = [d for d in dedup if not d["key"].startswith("v-")]
        if others:
            min_growth = min(d["growth_B"] for d in others)
            min_total = min(d["total"] for d in others)
            for d in dedup:
                if d["key"].startswith("v-"):
                    dedup_checks.append({"tool": d["tool"], "growth_B": d["growth_B"], "min_other_growth_B": min_growth,
                                         "growth_ok": d["growth_B"] <= min_growth, "total": d["total"],
                                         "min_other_total": min_total, "total_ok": d["total"] <= min_total})

    # 7. chunk sizes
    chunks = []
    cfgs = facts.get("chunk_configs", "").split()
    etcdctl_med = med("chunks_etcdctl_save") or med("etcdctl_save")
    for c in cfgs:
        kib, lvl = c.split(":")
        tag = f"c{kib}k-z{lvl}"

        def per_rep(k):
            vals, rep = [], 1
            while f"chunks.{tag}.{k}.{rep}" in facts:
                vals.append(int(facts[f"chunks.{tag}.{k}.{rep}"]))
                rep += 1
            return vals

        e, fa, fb = per_rep("empty"), per_rep("after_A"), per_rep("after_B")
        if not fb:
            continue
        stored_a = [y - x for x, y in zip(e, fa)]
        growth_b = [y - x for x, y in zip(fa, fb)]
        first = med(f"chunks_first_{tag}")
        m = lambda v: statistics.median(v) if v else None
        chunks.append({"avg_kib": int(kib), "zstd_level": int(lvl),
                       "stored_A": m(stored_a), "stored_A_runs": stored_a,
                       "growth_B": m(growth_b), "growth_B_runs": growth_b,
                       "total": m(fb), "total_runs": fb,
                       "chunks_A": m(per_rep("chunksA")), "new_chunks_B": m(per_rep("new_chunksB")),
                       "new_bytes_B": m(per_rep("new_bytesB")),
                       "ingest_A_s": med(f"chunks_ingestA_{tag}"), "ingest_B_s": med(f"chunks_ingestB_{tag}"),
                       "ingest_A_cpu_s": statistics.median([r["cpu_s"] for r in runs[f"chunks_ingestA_{tag}"]])
                       if runs.get(f"chunks_ingestA_{tag}") else None,
                       "first_from_etcd_median_s": first, "first_from_etcd_runs": walls(f"chunks_first_{tag}"),
                       "first_over_etcdctl": first / etcdctl_med if first and etcdctl_med else None,
                       "restore_s": med(f"chunks_restore_{tag}"),
                       "first_cpu_s": statistics.median([r["cpu_s"] for r in runs[f"chunks_first_{tag}"]])
                       if runs.get(f"chunks_first_{tag}") else None})

    # load
    load = {"start": facts.get("loadavg_start"), "end": facts.get("loadavg_end"),
            "top_start": facts.get("top_start"), "top_end": facts.get("top_end")}
    if a.load and os.path.exists(a.load):
        vals = [float(l.split()[1]) for l in open(a.load) if len(l.split()) == 2]
        if vals:
            load.update({"load1_mean": statistics.mean(vals), "load1_max": max(vals), "samples": len(vals)})

    # ---------------------------------------------------------------- markdown
    md = []
    keys = int(facts.get("keys", 0))
    md.append(f"# etcd v3 backup benchmark — mode `{facts.get('mode')}`, {keys:,} keys, {facts.get('reps')} repetitions")
    md.append("")
    dirty = facts.get("git_dirty", "0") != "0"
    md.append(f"* command: `{facts.get('command')}` (vaultctl built from git {facts.get('git_commit')}"
              + (f" plus uncommitted changes in vault/, vaultctl/ or Cargo.lock, diff sha256 {facts.get('git_diff_sha')})" if dirty
                 else ", clean vault/ and vaultctl/)"))
    md.append(f"* run: {facts.get('started')} → {facts.get('finished')}; machine {facts.get('host_cpus')} CPUs "
              f"({facts.get('cpu_model')}), {facts.get('host_mem_gib')} GiB; work dir on {facts.get('workdir_fs')}")
    md.append(f"* vaultctl binary {facts.get('vaultctl_binary')}")
    md.append(f"* tools: etcd {facts.get('etcd_version')}, vaultctl {facts.get('vaultctl_version')}, "
              f"restic {facts.get('restic_version')}, borg {facts.get('borg_version')}")
    md.append(f"* load average at start {load.get('start')}, at end {load.get('end')}; 1-min load during the run: "
              f"mean {load.get('load1_mean', 0):.2f}, max {load.get('load1_max', 0):.2f} (other work shares these cores; "
              f"top CPU users at start: {load.get('top_start')})")
    if "snapshot_bytes" in facts:
        md.append(f"* snapshot size {fmt_mb(int(facts['snapshot_bytes']))} (etcd db {fmt_mb(int(facts.get('db_size', 0) or 0))}); "
                  f"load of {keys:,} keys took {facts.get('load_seconds')} s")
    md.append("")
    if summary:
        md.append("## Wall times (median of repetitions)")
        md.append("")
        md.append("| measurement | median s | min–max s | n | CPU s (user+sys) | etcd+moto CPU s | peak RSS MB | load1 |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k, s in summary.items():
            md.append(f"| {s['what']} | {s['median_s']:.2f} | {s['min_s']:.2f}–{s['max_s']:.2f} | {s['n']} | "
                      f"{fmt_s(s['cpu_s_median'])} | {fmt_s(s['server_cpu_s_median'])} | {fmt_n(s['max_rss_mb'], 0)} | "
                      f"{fmt_n(s['load1_median'], 2)} |")
        md.append("")
    if ratios or peak_rss:
        md.append("## Ratios against targets")
        md.append("")
        md.append("| ratio | of medians | paired per repetition | target | met (medians) |")
        md.append("|---|---:|---:|---:|---|")
        for r in ratios:
            met = "—" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
            paired = ", ".join(f"{x:.2f}" for x in r["paired"]) or "—"
            md.append(f"| {r['ratio']} | {r['value']:.2f} | {paired} | {'—' if r['target'] is None else '<= ' + str(r['target'])} | {met} |")
        if peak_rss:
            md.append(f"| 5 peak RSS of vaultctl backup etcd (MB, worst run: {peak_rss['label']}) | "
                      f"{peak_rss['max_rss_mb']:.0f} | | <= 200 | {'yes' if peak_rss['ok'] else '**no**'} |")
        md.append("")
    if dedup:
        md.append("## Dedup: backup A (after load), then B (2% of keys modified)")
        md.append("")
        md.append(f"Snapshot A {fmt_mb(int(facts.get('snapshot_bytes', 0)))}, B {fmt_mb(int(facts.get('snapB_bytes', 0)))}; "
                  f"pages differing A→B: {facts.get('pages_changed_A_B')}. Repo size = sum of the sizes of the files "
                  "in the repo directory (`du -sb` less directory entries; caches and catalogs kept outside the repo are not counted).")
        same_a = facts.get("dedup_vault_etcd_A_sha256") == facts.get("snapA_sha256")
        same_b = facts.get("dedup_vault_etcd_B_sha256") == facts.get("snapB_sha256")
        md.append(f"The vault captures from etcd are {'byte-identical' if same_a and same_b else 'NOT byte-identical'} "
                  f"to the etcdctl files (sha256 A {'equal' if same_a else 'differs'}, B {'equal' if same_b else 'differs'}).")
        md.append("")
        md.append("| tool | stored by backup A | growth by backup B | total after A+B | growth by C (no change) | "
                  "time A s | time B s | time C s |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for d in dedup:
            md.append(f"| {d['tool']} | {fmt_mb(d['growth_A'])} | {fmt_mb(d['growth_B'])} | {fmt_mb(d['total'])} | "
                      f"{fmt_mb(d['growth_C'])} | {fmt_s(d['time_A_s'])} | {fmt_s(d['time_B_s'])} | {fmt_s(d['time_C_s'])} |")
        md.append("")
        if "dedup_vault_etcd_snapshots" in facts:
            n = int(facts.get("dedup_vault_etcd_snapshots_count", "0") or 0)
            md.append(f"Vault from etcd after A, B, C: data/ {fmt_mb(int(facts['dedup_vault_etcd_data']))}, index/ "
                      f"{fmt_mb(int(facts['dedup_vault_etcd_index']))}, snapshots/ {fmt_mb(int(facts['dedup_vault_etcd_snapshots']))} "
                      f"({n} manifests, ~{fmt_mb(int(facts['dedup_vault_etcd_snapshots']) / max(n, 1))} each).")
            md.append("")
        for c in dedup_checks:
            md.append(f"* {c['tool']}: growth {fmt_mb(c['growth_B'])} vs min(restic, borg) {fmt_mb(c['min_other_growth_B'])} → "
                      f"{'met' if c['growth_ok'] else '**not met**'}; total {fmt_mb(c['total'])} vs {fmt_mb(c['min_other_total'])} → "
                      f"{'met' if c['total_ok'] else '**not met**'}")
        md.append("")
    if chunks:
        md.append("## Chunk size and compression level (vault ingest of the same files A then B)")
        md.append("")
        md.append(f"etcdctl snapshot save median for reference: {fmt_s(etcdctl_med)} s. "
                  "`first from etcd` = `vaultctl backup etcd` into an empty vault (state B), median of repetitions.")
        md.append("")
        md.append("Sizes are medians over the repetitions (each a fresh vault, so a fresh secret gear table); "
                  "growth runs are listed in the JSON.")
        md.append("")
        md.append("| avg chunk KiB | zstd | chunks in A | stored by A | growth by B | new chunks B | total A+B | ingest A s "
                  "(CPU s) | first from etcd s | ÷ etcdctl | vaultctl CPU s | restore s |")
        md.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in chunks:
            md.append(f"| {c['avg_kib']} | {c['zstd_level']} | {c['chunks_A']:.0f} | {fmt_mb(c['stored_A'])} | {fmt_mb(c['growth_B'])} | "
                      f"{c['new_chunks_B']:.0f} | {fmt_mb(c['total'])} | {fmt_s(c['ingest_A_s'])} ({fmt_s(c['ingest_A_cpu_s'])}) | "
                      f"{fmt_s(c['first_from_etcd_median_s'])} | {fmt_n(c['first_over_etcdctl'], 2)} | {fmt_s(c['first_cpu_s'])} | "
                      f"{fmt_s(c['restore_s'])} |")
        md.append("")
    text = "\n".join(md)

    record = {"facts": facts, "summary": summary, "ratios": ratios, "peak_rss": peak_rss, "dedup": dedup,
              "dedup_checks": dedup_checks, "chunks": chunks, "load": load, "measurements": raw}
    stamp = facts.get("started", "run").replace(":", "").replace("-", "")
    write_results(a.outdir, f"etcd_v3-{facts.get('mode')}-{keys}keys-{stamp}", record, text)


if __name__ == "__main__":
    main()
