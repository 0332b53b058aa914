#!/usr/bin/env python3
"""Turn the raw measurements of bench/files.sh into tables (markdown on stdout and in
bench/results/files-<UTC>.md) and a JSON record (bench/results/files-<UTC>.json). Standard library only."""
import argparse
import json
import os
import statistics
from collections import defaultdict

from report import fmt_mb, fmt_n, fmt_s, load_tsv, write_results

ROWS = [
    ("vault_first", "vaultctl backup files, first capture into an empty local vault"),
    ("restic_first", "restic backup, first backup into a fresh local repo"),
    ("vault_second", "vaultctl backup files, unchanged second capture (same vault)"),
    ("restic_second", "restic backup, unchanged second backup (same repo, parent snapshot)"),
    ("vault_second_coldcat", "reference: vaultctl unchanged capture with no catalog (rebuilt; no file cache)"),
    ("warm_read", "warm-up before each measurement: cat of every file to /dev/null"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", required=True)
    ap.add_argument("--facts", required=True)
    ap.add_argument("--load")
    ap.add_argument("--diag")
    ap.add_argument("--outdir", required=True)
    a = ap.parse_args()

    facts = {name: value for name, value in load_tsv(a.facts, 2)}
    runs = defaultdict(list)
    raw = []
    for label, rep, wall, user, sys_, rss, load1, _ in load_tsv(a.measure, 8):
        r = {"label": label, "rep": int(rep), "wall_s": float(wall), "cpu_s": float(user) + float(sys_),
             "user_s": float(user), "sys_s": float(sys_), "max_rss_kib": int(rss), "load1": float(load1)}
        runs[label].append(r)
        raw.append(r)

    def walls(label):
        return [r["wall_s"] for r in sorted(runs.get(label, []), key=lambda r: r["rep"])]

    def per_rep(name, conv=float):
        vals, rep = [], 1
        while f"{name}.{rep}" in facts:
            vals.append(conv(facts[f"{name}.{rep}"]))
            rep += 1
        return vals

    summary = {}
    for label, what in ROWS:
        rs = runs.get(label, [])
        if not rs:
            continue
        w = walls(label)
        summary[label] = {
            "what": what, "median_s": statistics.median(w), "min_s": min(w), "max_s": max(w), "n": len(w),
            "runs_s": w, "cpu_s_median": statistics.median([r["cpu_s"] for r in rs]),
            "user_s_median": statistics.median([r["user_s"] for r in rs]),
            "sys_s_median": statistics.median([r["sys_s"] for r in rs]),
            "max_rss_mb": max(r["max_rss_kib"] for r in rs) * 1024 / 1e6,
            "rss_mb_median": statistics.median([r["max_rss_kib"] for r in rs]) * 1024 / 1e6,
            "load1_median": statistics.median([r["load1"] for r in rs]),
            "load1_runs": [r["load1"] for r in sorted(rs, key=lambda r: r["rep"])],
        }
    # the tool's own timer (excludes process start, vault/catalog open) for comparison with wall time
    for label, name in (("vault_first", "vault_first_seconds"), ("vault_second", "vault_second_seconds"),
                        ("vault_second_coldcat", "vault_second_coldcat_seconds"),
                        ("restic_first", "restic_first_total_duration"), ("restic_second", "restic_second_total_duration")):
        v = per_rep(name)
        if label in summary and v:
            summary[label]["internal_s_median"] = statistics.median(v)

    ratios = []

    def add_ratio(name, num, den, target):
        n, d = summary.get(num), summary.get(den)
        if not n or not d or d["median_s"] <= 0:
            return
        v = n["median_s"] / d["median_s"]
        wn, wd = walls(num), walls(den)
        paired = [x / y for x, y in zip(wn, wd)] if len(wn) == len(wd) and all(y > 0 for y in wd) else []
        ratios.append({"ratio": name, "numerator": num, "denominator": den, "value": v, "target": target,
                       "ok": None if target is None else v <= target, "paired": paired})

    add_ratio("1 vault first capture / restic first backup", "vault_first", "restic_first", 1.0)
    add_ratio("2 vault unchanged second capture / vault first capture", "vault_second", "vault_first", 0.15)
    add_ratio("2r (reference) restic unchanged second / restic first", "restic_second", "restic_first", None)
    add_ratio("(reference) vault unchanged second / restic unchanged second", "vault_second", "restic_second", None)
    add_ratio("(reference) vault unchanged capture without catalog / vault first", "vault_second_coldcat", "vault_first", None)
    # CPU time is less sensitive than wall time to other work on the machine
    for name, num, den in (("(reference) CPU s: vault first / restic first", "vault_first", "restic_first"),
                           ("(reference) CPU s: vault unchanged / vault first", "vault_second", "vault_first")):
        rn = sorted(runs.get(num, []), key=lambda r: r["rep"])
        rd = sorted(runs.get(den, []), key=lambda r: r["rep"])
        if rn and rd and len(rn) == len(rd):
            v = statistics.median([r["cpu_s"] for r in rn]) / statistics.median([r["cpu_s"] for r in rd])
            ratios.append({"ratio": name, "numerator": num, "denominator": den, "value": v, "target": None, "ok": None,
                           "paired": [x["cpu_s"] / y["cpu_s"] for x, y in zip(rn, rd) if y["cpu_s"] > 0]})

    second_packs = per_rep("vault_second_packs", int)
    checks = {
        "second_packs": second_packs,
        "second_packs_ok": bool(second_packs) and all(p == 0 for p in second_packs),
        "second_new_bytes": per_rep("vault_second_new_bytes", int),
        "second_stored_bytes": per_rep("vault_second_stored_bytes", int),
        "first_files": per_rep("vault_first_files", int),
        "first_bytes": per_rep("vault_first_bytes", int),
        "first_incomplete": per_rep("vault_first_incomplete", str),
        "coldcat_packs": per_rep("vault_second_coldcat_packs", int),
        "coldcat_new_bytes": per_rep("vault_second_coldcat_new_bytes", int),
        "restic_second_files_unmodified": per_rep("restic_second_files_unmodified", int),
        "restic_second_data_added": per_rep("restic_second_data_added", int),
    }
    med = lambda v: statistics.median(v) if v else None
    storage = {}
    for tool in ("vault", "restic"):
        e, f, s = per_rep(f"{tool}_empty_repo_bytes", int), per_rep(f"{tool}_first_repo_bytes", int), \
            per_rep(f"{tool}_second_repo_bytes", int)
        if f:
            storage[tool] = {"empty": med(e), "after_first": med(f), "after_second": med(s),
                             "stored_by_first": med([y - x for x, y in zip(e, f)]),
                             "growth_by_second": med([y - x for x, y in zip(f, s)])}
    if per_rep("vault_first_new_bytes", int):
        storage.setdefault("vault", {})["report_new_bytes_first"] = med(per_rep("vault_first_new_bytes", int))
        storage["vault"]["report_stored_bytes_first"] = med(per_rep("vault_first_stored_bytes", int))
        storage["vault"]["report_packs_first"] = med(per_rep("vault_first_packs", int))
    if per_rep("restic_first_data_added", int):
        storage.setdefault("restic", {})["report_data_added_first"] = med(per_rep("restic_first_data_added", int))

    load = {"start": facts.get("loadavg_start"), "end": facts.get("loadavg_end"),
            "top_start": facts.get("top_start"), "top_end": facts.get("top_end")}
    if a.load and os.path.exists(a.load):
        vals = [float(l.split()[1]) for l in open(a.load) if len(l.split()) == 2]
        if vals:
            load.update({"load1_mean": statistics.mean(vals), "load1_max": max(vals), "load1_min": min(vals),
                         "samples": len(vals)})

    diag = {}
    if a.diag and os.path.isdir(a.diag):
        for name in sorted(os.listdir(a.diag)):
            if name.endswith(".txt"):
                with open(os.path.join(a.diag, name)) as f:
                    diag[name[:-4]] = f.read()

    try:
        tree = json.loads(facts.get("tree_summary", "{}"))
    except ValueError:
        tree = {}

    # ---------------------------------------------------------------- markdown
    md = []
    md.append(f"# Host-file capture benchmark — {tree.get('files', facts.get('files_target'))} files, "
              f"{fmt_mb(tree.get('bytes', int(facts.get('bytes_target', 0))))}, {facts.get('reps')} repetitions")
    md.append("")
    dirty = facts.get("git_dirty", "0") != "0"
    md.append(f"* command: `{facts.get('command')}` (vaultctl built from git {facts.get('git_commit')}"
              + (f" plus uncommitted changes in vault/, vaultctl/ or Cargo.lock, diff sha256 {facts.get('git_diff_sha')})"
                 if dirty else ", clean vault/ and vaultctl/)"))
    md.append(f"* run: {facts.get('started')} → {facts.get('finished')}; machine {facts.get('host_cpus')} CPUs "
              f"({facts.get('cpu_model')}), {facts.get('host_mem_gib')} GiB; work dir on {facts.get('workdir_fs')}")
    md.append(f"* vaultctl {facts.get('vaultctl_version')} binary {facts.get('vaultctl_binary')}; restic {facts.get('restic_version')}")
    md.append(f"* load average at start {load.get('start')}, at end {load.get('end')}; 1-min load during the run: "
              f"mean {load.get('load1_mean', 0):.2f}, min {load.get('load1_min', 0):.2f}, max {load.get('load1_max', 0):.2f} "
              f"(other work shares these cores; top CPU users at start: {load.get('top_start')}; at end: {load.get('top_end')})")
    if tree:
        b = tree.get("size_buckets", {})
        mix = ", ".join(f"{k}: {v['files']:,} files / {fmt_mb(v['bytes'])}" for k, v in b.items() if v["files"])
        md.append(f"* tree (seed {tree.get('seed')}, tree listing {facts.get('tree_listing_sha')}; "
                  f"{facts.get('tree_generated')}): {tree.get('files'):,} files, {tree.get('dirs'):,} directories, "
                  f"{tree.get('symlinks')} symlinks, {fmt_mb(tree.get('bytes'))} ({mix}; "
                  f"large files {fmt_mb(tree.get('large_min'))}–{fmt_mb(tree.get('large_max'))})")
    md.append("* vault: `vaultctl init` defaults (256 KiB average chunks, zstd 5 adaptive down to 3, 16 MiB packs); "
              "restic: `init --repository-version 2` (compression auto). Fresh vault and repo for each repetition; "
              "each measurement follows a `sync` and a warm-up `cat` of the whole tree (page cache warm for both).")
    md.append("")
    if summary:
        md.append("## Wall times (median of repetitions)")
        md.append("")
        md.append("| measurement | median s | runs s | tool's own timer s | CPU s (user+sys) | user / sys s | "
                  "peak RSS MB (max) | load1 at start of each run |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k, s in summary.items():
            md.append(f"| {s['what']} | {s['median_s']:.2f} | {', '.join(f'{x:.2f}' for x in s['runs_s'])} | "
                      f"{fmt_s(s.get('internal_s_median'))} | {fmt_s(s['cpu_s_median'])} | "
                      f"{fmt_s(s['user_s_median'])} / {fmt_s(s['sys_s_median'])} | {s['max_rss_mb']:.0f} | "
                      f"{', '.join(f'{x:.2f}' for x in s['load1_runs'])} |")
        md.append("")
    md.append("## Ratios against targets")
    md.append("")
    md.append("| ratio | of medians | paired per repetition | target | met (medians) |")
    md.append("|---|---:|---:|---:|---|")
    for r in ratios:
        met = "—" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        paired = ", ".join(f"{x:.2f}" for x in r["paired"]) or "—"
        md.append(f"| {r['ratio']} | {r['value']:.2f} | {paired} | "
                  f"{'—' if r['target'] is None else '<= ' + str(r['target'])} | {met} |")
    md.append(f"| 2b new packs written by the unchanged vault capture | {', '.join(map(str, second_packs)) or '—'} | | "
              f"0 | {'yes' if checks['second_packs_ok'] else '**no**'} |")
    for label in ("vault_first", "vault_second", "vault_second_coldcat", "restic_first", "restic_second"):
        if label in summary:
            md.append(f"| 3 peak RSS, {label.replace('_', ' ')} (MB, max / median) | "
                      f"{summary[label]['max_rss_mb']:.0f} / {summary[label]['rss_mb_median']:.0f} | | — | — |")
    md.append("")
    md.append(f"Unchanged vault capture: new bytes {checks['second_new_bytes']}, stored bytes "
              f"{checks['second_stored_bytes']}; restic's unchanged backup: files unmodified "
              f"{checks['restic_second_files_unmodified']}, data added {checks['restic_second_data_added']} bytes. "
              f"Vault first captures: files {checks['first_files']}, bytes {checks['first_bytes']}, "
              f"incomplete: {'none' if all(x == 'False' for x in checks['first_incomplete']) else checks['first_incomplete']}. "
              f"Unchanged capture without catalog: packs "
              f"{checks['coldcat_packs']}, new bytes {checks['coldcat_new_bytes']}.")
    md.append("")
    if storage:
        md.append("## Repository sizes (median; sum of file sizes in the repo directory)")
        md.append("")
        md.append("| tool | stored by the first backup | growth by the unchanged second | total |")
        md.append("|---|---:|---:|---:|")
        for tool, s in storage.items():
            if "after_first" in s:
                md.append(f"| {tool} | {fmt_mb(s['stored_by_first'])} | {fmt_mb(s['growth_by_second'])} | "
                          f"{fmt_mb(s['after_second'])} |")
        md.append("")
    if diag:
        md.append("## Diagnostics (BENCH_DIAG=1; untimed runs after the measurements)")
        md.append("")
        md.append("perf: self time by thread and symbol (`vaultctl` = main and packer threads, `tokio-rt-worker` = "
                  "walker and uploader); `perf_second_by_function`: share of all samples in each step including its "
                  "callees. strace -c: futex/epoll time is threads waiting, not work.")
        md.append("")
        for name, text in diag.items():
            md.append(f"### {name}")
            md.append("")
            md.append("```")
            md.append(text.rstrip())
            md.append("```")
            md.append("")
    text = "\n".join(md)

    record = {"facts": facts, "tree": tree, "summary": summary, "ratios": ratios, "checks": checks,
              "storage": storage, "load": load, "diag": diag, "measurements": raw}
    stamp = facts.get("started", "run").replace(":", "").replace("-", "")
    write_results(a.outdir, f"files-{stamp}", record, text)


if __name__ == "__main__":
    main()
