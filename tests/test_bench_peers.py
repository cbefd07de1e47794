"""tools/bench_peers.py's bookkeeping (no mount, nothing timed): the sides alternate between
rounds, each row keeps the ratio of every round's pair and the table shows the spread,
as issue 17 asks of the rows whose peer spreads (its cold read depends on the host)."""

from __future__ import annotations

from tools import bench_peers as bp


def test_the_sides_take_turns_between_rounds():
    kinds = ["repo", "image", "peer"]
    assert bp.sides(kinds, 0) == kinds
    assert bp.sides(kinds, 1) == ["peer", "image", "repo"]
    assert bp.sides(kinds, 2) == kinds
    assert bp.sides(bp.MOUNTS, 1)[0] is bp.PeerMount


def test_rows_keep_each_rounds_ratio_and_the_table_shows_the_spread():
    res = bp.Results()
    for repo, peer in ((0.40, 1.20), (0.30, 0.36), (0.50, 1.50)):
        res.add("vhdx", "cat log.txt", "cold", "repo", repo)
        res.add("vhdx", "cat log.txt", "cold", "peer", peer)
    res.add("vhdx", "cat log.txt: serving daemons' CPU", "cold", "repo", 0.35)
    res.add("vhdx", "cat log.txt: serving daemons' CPU", "cold", "peer", 0.80)
    rows = bp.rows(res)
    row = next(r for r in rows if r["workload"] == "cat log.txt")
    assert row["repo_ratio"] == 3.0                    # medians: 1.20 / 0.40
    assert row["repo_ratio_range"] == [1.2, 3.0]       # 0.36 / 0.30 in the second round
    assert row["met"] is True and row["target"] == ">= 2x"
    assert row["met_every_round"] is False             # 1.20x in the second round
    text = bp.table(rows)
    assert "0.40 s (0.30 s-0.50 s)" in text and "3.00x (1.20-3.00x)" in text
    assert ">= 2x ok (median; not every round)" in text
    cpu = next(r for r in rows if r["workload"].endswith("CPU"))
    assert "target" not in cpu and "repo_ratio_range" not in cpu   # one sample: no range


def test_a_failed_sample_breaks_no_round_ratio():
    assert bp.round_ratios([0.5, None, 0.4], [1.0, 2.0, None]) == [2.0]


def test_a_commands_cpu_is_counted():
    """The export rows keep each command's own CPU (user+sys of the finished child)."""
    import subprocess
    import sys
    before = bp.children_cpu()
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    assert bp.children_cpu() > before
